"""An OpenAI-compatible chat-completions endpoint (vLLM, TGI, llama.cpp server, a hosted API)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
import warnings
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import httpx
import langcodes

from curate.config import OpenAITranslatorConfig
from curate.translators.base import translate_each
from schemas import ConfigError

_SYSTEM_PROMPT = (
    "You are a professional translator. Translate the user's message from {src} to {tgt}. "
    "Tokens of the form ⟦0⟧, ⟦1⟧, ... stand for code, formulas or links: copy each one unchanged, "
    "exactly once, where it belongs in the translation. Keep line breaks and formatting. "
    "Write the translation between <translation> and </translation> and nothing else: no greeting, "
    "note, quotes or explanation."
)
# Chat models wrap answers ("Sure! Here is the translation: … Let me know if …") whatever the prompt says:
# the answer is read between these tags when it has them, and checked either way (see `unwrap`).
_TAGGED = re.compile(r"<translation>(.*?)</translation>", re.DOTALL)
_QUOTES = (('"', '"'), ("“", "”"), ("«", "»"), ("„", "“"), ("「", "」"), ("'", "'"))


class CleartextKeyWarning(UserWarning):
    """An API key about to be sent over plain http to a host that is not this machine."""


def _is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (also written as an IPv4-mapped ::ffff:127.x.y.z)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _language_name(code: str) -> str:
    """English name of a language (``zh_Hans`` → "Chinese (Simplified)"); needs ``langcodes[data]``."""
    return langcodes.Language.get(code.replace("_", "-")).display_name("en")


def unwrap(answer: str, text: str) -> str:
    """The translation in a chat model's ``answer`` to ``text``, or a ``ValueError`` saying why there is
    none to trust.

    The prompt asks for the translation between ``<translation>`` tags, and what is outside them (a
    greeting, a note) is dropped. An answer without the tags is taken whole, without the quotes a model
    may put around it, unless it has more colons than ``text`` (an inline "Here is the translation: …").
    Either way the translation may not have more lines than ``text``: the prompt asks to keep line
    breaks, so extra lines are a preamble or a note ("Let me know if …") that would otherwise be trained
    on as part of the text.
    """
    tagged = _TAGGED.findall(answer)
    if len(tagged) > 1:
        msg = f"the answer holds {len(tagged)} <translation> blocks, expected one"
        raise ValueError(msg)
    if tagged:
        out = tagged[0]
    elif "<translation>" in answer:
        msg = "the answer opens <translation> but never closes it (cut short?)"
        raise ValueError(msg)
    else:
        out = answer.strip()
        for first, last in _QUOTES:
            quoted = len(out) >= 2 and out.startswith(first) and out.endswith(last)
            if quoted and not (text.strip().startswith(first) and text.strip().endswith(last)):
                out = out[len(first) : -len(last)]
                break
        if _colons(out) > _colons(text):
            msg = (
                f"the answer has more colons than the source: a preamble such as 'Here is the translation:'? "
                f"(answer: {_clip(answer)!r})"
            )
            raise ValueError(msg)
    lines, expected = _lines(out), _lines(text)
    if lines > expected:
        msg = (
            f"the answer has {lines} lines of text where the source has {expected}: a preamble or a note "
            f"around the translation? (answer: {_clip(answer)!r})"
        )
        raise ValueError(msg)
    return out


def _colons(text: str) -> int:
    return text.count(":") + text.count("：")


def _lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class OpenAITranslator:
    """An OpenAI-compatible ``POST {base_url}/chat/completions`` endpoint, one request per text.

    ``concurrency`` requests run at once from a thread pool over one HTTP client. 429, 5xx, timeouts and
    connection errors are retried ``max_retries`` times with exponential backoff (``backoff_s``, doubled
    each time); any other HTTP error fails the text at once. An answer over ``max_response_bytes`` is not
    read further and fails its text. The translation is read out of the answer by :func:`unwrap`. The
    key in ``$api_key_env`` goes with every request; :meth:`setup` warns (:class:`CleartextKeyWarning`)
    when that would be plain http to a host other than this machine.
    """

    translates = True

    def __init__(self, config: OpenAITranslatorConfig) -> None:
        if not config.model:
            msg = (
                "translate.openai.model is required: the model name the server serves "
                "(vLLM --served-model-name)"
            )
            raise ConfigError(msg)
        self.config = config
        self.name = f"openai:{config.model}"

    @cached_property
    def _client(self) -> httpx.Client:
        key = self._api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(
            base_url=self.config.base_url.rstrip("/"),
            headers=headers,
            timeout=self.config.timeout_s,
            limits=httpx.Limits(max_connections=self.config.concurrency),
        )

    @property
    def _api_key(self) -> str | None:
        """The key in ``$api_key_env``; None when that is unset or empty."""
        if not self.config.api_key_env:
            return None
        return os.environ.get(self.config.api_key_env) or None

    def setup(self) -> None:
        self._warn_if_key_in_clear()
        self._client  # noqa: B018 - open the client once, before the worker threads share it

    def _warn_if_key_in_clear(self) -> None:
        """Warn when the key would go as ``Authorization: Bearer`` over plain http to another machine."""
        if not self._api_key:
            return
        url = urlsplit(self.config.base_url)
        host = url.hostname or ""
        if url.scheme != "http" or _is_loopback(host):
            return
        msg = (
            f"translate.openai.base_url {self.config.base_url!r} is plain http to {host}, so the API key "
            f"from ${self.config.api_key_env} would travel unencrypted: use an https:// URL or a loopback "
            "address (localhost, 127.0.0.1, ::1)"
        )
        warnings.warn(msg, CleartextKeyWarning, stacklevel=2)

    def check_pair(self, src: str, tgt: str) -> None:
        """Any pair can be asked for (the later stages judge the output); the prompt needs both names."""
        self._system_prompt(src, tgt)

    def cache_identity(self, src: str, tgt: str) -> dict[str, Any]:
        """Where the requests go, what they ask for and how: endpoint, model, temperature and the exact
        system prompt (the key, concurrency, retries and timeouts change nothing in a completion)."""
        return {
            "backend": "openai",
            "base_url": self.config.base_url.rstrip("/"),
            "model": self.config.model,
            "temperature": self.config.temperature,
            "system_prompt": self._system_prompt(src, tgt),
        }

    def _system_prompt(self, src: str, tgt: str) -> str:
        return _SYSTEM_PROMPT.format(src=_language_name(src), tgt=_language_name(tgt))

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        system = self._system_prompt(src, tgt)
        return translate_each(
            lambda text: self._complete(system, text), texts, workers=self.config.concurrency
        )

    def _complete(self, system: str, text: str) -> str:
        body = {
            "model": self.config.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
            "temperature": self.config.temperature,
        }
        failure = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                status, data = self._post(body)
            except httpx.TransportError as e:
                failure = f"{type(e).__name__}: {e}"
                continue
            if status == 429 or status >= 500:
                failure = f"HTTP {status}: {_head(data)}"
                continue
            if status != 200:
                msg = f"HTTP {status} (not retried): {_head(data)}"
                raise RuntimeError(msg)
            try:
                return unwrap(_completion_text(data), text)
            except ValueError as e:
                raise RuntimeError(str(e)) from None
        msg = f"gave up after {self.config.max_retries + 1} attempts, last: {failure}"
        raise RuntimeError(msg)

    def _post(self, body: dict[str, Any]) -> tuple[int, bytes]:
        """The status and body of one request, the body read only up to ``max_response_bytes``: a server
        that answers with megabytes fails the text instead of filling the memory."""
        limit = self.config.max_response_bytes
        with self._client.stream("POST", "/chat/completions", json=body) as response:
            size = response.headers.get("Content-Length", "")
            if size.isdigit() and int(size) > limit:
                msg = f"the answer is {int(size):,} bytes, over translate.openai.max_response_bytes={limit:,}"
                raise RuntimeError(msg)
            data = bytearray()
            for block in response.iter_bytes():
                data += block
                if len(data) > limit:
                    msg = f"the answer is over translate.openai.max_response_bytes={limit:,} bytes (not read further)"
                    raise RuntimeError(msg)
            return response.status_code, bytes(data)


def _head(data: bytes) -> str:
    return data[:200].decode("utf-8", errors="replace")


def _completion_text(data: bytes) -> str:
    try:
        content = json.loads(data)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        msg = f"not a chat completion ({type(e).__name__}): {_head(data)}"
        raise RuntimeError(msg) from e
    if not isinstance(content, str):
        msg = f"chat completion content is {type(content).__name__}, expected text"
        raise RuntimeError(msg)
    return content

"""An OpenAI-compatible chat-completions endpoint (vLLM, TGI, llama.cpp server, a hosted API)."""

from __future__ import annotations

import ipaddress
import os
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
    "Output only the translation, without notes, quotes or explanations."
)


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


class OpenAITranslator:
    """An OpenAI-compatible ``POST {base_url}/chat/completions`` endpoint, one request per text.

    ``concurrency`` requests run at once from a thread pool over one HTTP client. 429, 5xx, timeouts and
    connection errors are retried ``max_retries`` times with exponential backoff (``backoff_s``, doubled
    each time); any other HTTP error fails the text at once. The key in ``$api_key_env`` goes with every
    request; :meth:`setup` warns (:class:`CleartextKeyWarning`) when that would be plain http to a host
    other than this machine.
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
                response = self._client.post("/chat/completions", json=body)
            except httpx.TransportError as e:
                failure = f"{type(e).__name__}: {e}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                failure = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code != 200:
                msg = f"HTTP {response.status_code} (not retried): {response.text[:200]}"
                raise RuntimeError(msg)
            return _completion_text(response)
        msg = f"gave up after {self.config.max_retries + 1} attempts, last: {failure}"
        raise RuntimeError(msg)


def _completion_text(response: httpx.Response) -> str:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        msg = f"not a chat completion ({type(e).__name__}): {response.text[:200]}"
        raise RuntimeError(msg) from e
    if not isinstance(content, str):
        msg = f"chat completion content is {type(content).__name__}, expected text"
        raise RuntimeError(msg)
    return content

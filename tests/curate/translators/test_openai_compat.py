"""The OpenAI-compatible backend against a local chat-completions server that fails on purpose: retries,
rejects per row, the cache's identity, and warnings about a key sent in clear."""

import contextlib
import json
import socket
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from curate.config import OpenAITranslatorConfig
from curate.stages import translate as translate_stage
from curate.stages.translate import Translate
from curate.translators import CleartextKeyWarning, OpenAITranslator, TranslationCache, openai_compat
from tests.curate.rows import row, table, tool_row
from tests.curate.translation import assert_accounted, contents, rejects


class FakeLLMHandler(BaseHTTPRequestHandler):
    """A deterministic chat-completions server: the "translation" is the text in capitals.

    Every text fails its first attempt with 500 and its second with 429. Texts holding FAIL always get
    503, BAD gets 400, SLOW answers its first attempt too late, DROP loses its mask tokens and EMPTY
    comes back empty.
    """

    server: "FakeLLM"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][1]["content"]
        with self.server.lock:
            self.server.requests.append(
                {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
            )
            self.server.attempts[text] += 1
            attempt = self.server.attempts[text]
        if "SLOW" in text and attempt == 1:
            time.sleep(0.6)
        if "FAIL" in text:
            self._reply(503, {"error": "overloaded"})
        elif "BAD" in text:
            self._reply(400, {"error": "bad request"})
        elif attempt == 1 and "SLOW" not in text:
            self._reply(500, {"error": "boom"})
        elif attempt == 2 and "SLOW" not in text:
            self._reply(429, {"error": "slow down"})
        else:
            out = "" if "EMPTY" in text else text.upper()
            if "DROP" in text:
                out = out.replace("⟦0⟧", "")
            self._reply(200, {"choices": [{"message": {"role": "assistant", "content": out}}]})

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class FakeLLM(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), FakeLLMHandler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.attempts: Counter[str] = Counter()

    @property
    def base_url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}/v1"


@contextlib.contextmanager
def serving(host: str = "127.0.0.1") -> Iterator[FakeLLM]:
    server = FakeLLM(host)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with serving() as server:
        yield server


def openai_stage(base_url: str, *, cache: TranslationCache | None = None, **overrides: Any) -> Translate:
    settings = {
        "base_url": base_url,
        "model": "tiny-llm",
        "api_key_env": "POLYALIGN_TEST_KEY",
        "concurrency": 4,
        "max_retries": 3,
        "backoff_s": 0.01,
        "timeout_s": 0.3,
        "temperature": 0.2,
    } | overrides
    translator = OpenAITranslator(OpenAITranslatorConfig(**settings))
    stage = Translate(translator, anchor_lang="en", langs=["es"], cache=cache)
    stage.setup()
    return stage


def test_openai_retries_429_5xx_and_timeouts_then_translates(
    llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYALIGN_TEST_KEY", "sk-test")
    batch = table(
        row("g1", "en", "Run `ls -la` now.", "It lists files."),
        row("g2", "en", "Run `ls -la` now.", "SLOW answer, see {name}."),
        tool_row("g3"),
    )
    result = openai_stage(llm.base_url).process(batch)
    assert_accounted(batch, result)
    assert result.rejected.num_rows == 0
    assert contents(result, "g1", "es") == ["RUN `ls -la` NOW.", "IT LISTS FILES."]
    assert contents(result, "g2", "es")[1] == "SLOW ANSWER, SEE {name}."
    assert contents(result, "g3", "es")[3] == '{"temp_c": 21, "sky": "clear"}'
    assert (
        result.kept.filter(pa.compute.field("lang") == "es")["translator"].to_pylist()
        == ["openai:tiny-llm"] * 3
    )

    assert llm.attempts["Run ⟦0⟧ now."] == 3  # 500, 429, 200; asked once for both groups
    assert llm.attempts["SLOW answer, see ⟦0⟧."] == 2  # timed out, then answered
    assert not any("temp_c" in text for text in llm.attempts)
    first = llm.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    assert first["body"]["model"] == "tiny-llm" and first["body"]["temperature"] == 0.2
    system = first["body"]["messages"][0]["content"]
    assert "from English to Spanish" in system and "⟦0⟧" in system


def test_openai_failures_reject_only_their_rows(llm: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLYALIGN_TEST_KEY", raising=False)
    batch = table(
        row("g1", "en", "Hello there.", "Fine."),
        row("g2", "en", "Hello there.", "This will FAIL."),
        row("g3", "en", "A BAD request."),
        row("g4", "en", "DROP the code `x = 1` please."),
        row("g5", "en", "EMPTY answer."),
    )
    result = openai_stage(llm.base_url, max_retries=2).process(batch)
    assert_accounted(batch, result)
    assert contents(result, "g1", "es") == ["HELLO THERE.", "FINE."]
    bad = rejects(result)
    assert set(bad) == {("g2", "es"), ("g3", "es"), ("g4", "es"), ("g5", "es")}
    assert bad["g2", "es"]["reason"] == "translator_error"
    assert "messages[1] (assistant)" in bad["g2", "es"]["detail"]
    assert "gave up after 3 attempts, last: HTTP 503" in bad["g2", "es"]["detail"]
    assert llm.attempts["This will FAIL."] == 3
    assert (
        bad["g3", "es"]["reason"] == "translator_error"
        and "HTTP 400 (not retried)" in bad["g3", "es"]["detail"]
    )
    assert llm.attempts["A BAD request."] == 1
    assert bad["g4", "es"]["reason"] == "mask_lost" and bad["g4", "es"]["raw"] == "DROP THE CODE  PLEASE."
    assert bad["g5", "es"]["reason"] == "empty_output"
    assert all(r["auth"] is None for r in llm.requests)


def test_openai_unreachable_server_rejects_rows_and_the_run_goes_on() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    batch = table(row("g1", "en", "Hello there."), row("g2", "en", "Good night."))
    result = openai_stage(f"http://127.0.0.1:{port}/v1", max_retries=1).process(batch)
    assert_accounted(batch, result)
    assert result.kept.num_rows == 2 and result.rejected.num_rows == 2
    assert all("ConnectError" in d for d in result.rejected["detail"].to_pylist())


def test_openai_cache_keys_on_endpoint_model_temperature_prompt_and_masking(
    llm: FakeLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = table(row("g1", "en", "Hello there.", "Run `ls` now."))

    def sent(base_url: str = llm.base_url, **overrides: Any) -> int:
        """Texts that reached the server (each text's first two attempts fail, so count texts)."""
        before = len(llm.requests)
        stage = openai_stage(base_url, cache=TranslationCache(tmp_path / "t.sqlite"), **overrides)
        result = stage.process(batch)
        assert result.rejected.num_rows == 0
        assert contents(result, "g1", "es") == ["HELLO THERE.", "RUN `ls` NOW."]
        return len({r["body"]["messages"][1]["content"] for r in llm.requests[before:]})

    assert sent() == 2
    assert sent() == 0
    assert sent(f"{llm.base_url}/") == 0  # the same endpoint
    # What changes nothing in a completion keeps the cache.
    monkeypatch.setenv("POLYALIGN_TEST_KEY", "sk-other")
    assert sent(concurrency=1, max_retries=5, timeout_s=1.0, backoff_s=0.0) == 0
    assert sent(llm.base_url.replace("/v1", "/v2")) == 2
    assert sent(model="other-llm") == 2
    assert sent(temperature=0.7) == 2
    monkeypatch.setattr(openai_compat, "_SYSTEM_PROMPT", openai_compat._SYSTEM_PROMPT + " Be formal.")
    assert sent() == 2
    assert sent() == 0
    monkeypatch.setattr(translate_stage, "MASKING_VERSION", "another masking")
    assert sent() == 2
    assert sent() == 0


def cleartext_warnings(base_url: str, *, api_key_env: str = "POLYALIGN_TEST_KEY") -> list[str]:
    """The CleartextKeyWarning messages of an OpenAI translator's setup."""
    translator = OpenAITranslator(
        OpenAITranslatorConfig(base_url=base_url, model="tiny-llm", api_key_env=api_key_env)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        translator.setup()
    return [str(w.message) for w in caught if issubclass(w.category, CleartextKeyWarning)]


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.example.com/v1",
        "https://192.0.2.1:8443/v1",
        "http://localhost:8000/v1",
        "http://LOCALHOST/v1",
        "http://127.0.0.1:8000/v1",
        "http://127.4.5.6/v1",
        "http://[::1]:8000/v1",
        "http://[::ffff:127.0.0.1]:8000/v1",
    ],
)
def test_openai_key_over_https_or_loopback_is_not_warned_about(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYALIGN_TEST_KEY", "sk-secret")
    assert cleartext_warnings(base_url) == []


@pytest.mark.parametrize(
    ("base_url", "host"),
    [
        ("http://192.0.2.1:8000/v1", "192.0.2.1"),
        ("http://llm.internal:8000/v1", "llm.internal"),
        ("http://localhost.example.com/v1", "localhost.example.com"),
        ("http://128.0.0.1/v1", "128.0.0.1"),
        ("http://[fd00::2]:8000/v1", "fd00::2"),
        ("HTTP://api.example.com/v1", "api.example.com"),
    ],
)
def test_openai_key_over_plain_http_to_another_host_is_warned_about_once(
    base_url: str, host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYALIGN_TEST_KEY", "sk-secret")
    (message,) = cleartext_warnings(base_url)
    assert f"plain http to {host}," in message
    assert "$POLYALIGN_TEST_KEY would travel unencrypted" in message
    assert "use an https:// URL or a loopback address" in message
    assert "\n" not in message and "sk-secret" not in message


@pytest.mark.parametrize("key", [None, ""])
def test_openai_without_a_key_is_not_warned_about(key: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if key is None:
        monkeypatch.delenv("POLYALIGN_TEST_KEY", raising=False)
    else:
        monkeypatch.setenv("POLYALIGN_TEST_KEY", key)
    assert cleartext_warnings("http://192.0.2.1:8000/v1") == []
    assert cleartext_warnings("http://192.0.2.1:8000/v1", api_key_env="") == []


def _own_address() -> str | None:
    """This machine's address on its default route, if it has one that is not loopback (no packet sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.mark.parametrize("where", ["loopback", "own address"])
def test_openai_warns_at_setup_only_when_the_key_really_leaves_in_clear(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = "127.0.0.1" if where == "loopback" else _own_address()
    if host is None:
        pytest.skip("this machine has no address besides loopback")
    monkeypatch.setenv("POLYALIGN_TEST_KEY", "sk-secret")
    batch = table(row("g1", "en", "Hello there.", "Good night."), row("g2", "en", "See you."))
    with serving(host) as server, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = openai_stage(server.base_url).process(batch)
    assert result.rejected.num_rows == 0
    assert {r["auth"] for r in server.requests} == {"Bearer sk-secret"}
    found = [w for w in caught if issubclass(w.category, CleartextKeyWarning)]
    assert len(found) == (0 if where == "loopback" else 1)

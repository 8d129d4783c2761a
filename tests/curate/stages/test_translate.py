import contextlib
import json
import shutil
import socket
import sqlite3
import threading
import time
import tracemalloc
import warnings
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from curate.config import (
    ApertiumTranslatorConfig,
    HFTranslatorConfig,
    OpenAITranslatorConfig,
    TranslateConfig,
)
from curate.stages import translate as translate_stage
from curate.stages.base import StageResult
from curate.stages.translate import Translate
from curate.translators import (
    ApertiumTranslator,
    CleartextKeyWarning,
    HFSeq2SeqTranslator,
    OpenAITranslator,
    PretranslatedTranslator,
    TranslationCache,
    TranslatorConfigError,
    make_translator,
    openai_compat,
)
from curate.translators.hf_seq2seq import model_fingerprint
from schemas import content_hash, validate
from tests.curate.rows import message, parallel_row, row, table

REASONS = {"translator_error", "mask_lost", "empty_output"}


def assert_accounted(batch: pa.Table, result: StageResult, *, reasons: set[str] = REASONS) -> None:
    """Conservation, the contract's schemas, and kept rows sorted by (group_id, lang)."""
    assert batch.num_rows + sum(result.created.values()) == result.kept.num_rows + result.rejected.num_rows
    validate(result.kept, "parallel")
    validate(result.rejected, "reject")
    keys = list(
        zip(result.kept.column("group_id").to_pylist(), result.kept.column("lang").to_pylist(), strict=True)
    )
    assert keys == sorted(keys)
    assert set(result.rejected.column("reason").to_pylist()) <= reasons
    assert set(result.rejected.column("stage").to_pylist()) <= {"translate"}


def contents(result: StageResult, group: str, lang: str, field: str = "messages") -> list[str]:
    rows = [r for r in result.kept.to_pylist() if (r["group_id"], r["lang"]) == (group, lang)]
    assert len(rows) == 1, f"no kept row ({group}, {lang})"
    return [m["content"] for m in rows[0][field]]


def rejects(result: StageResult) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["group_id"], r["lang"]): r for r in result.rejected.to_pylist()}


def tool_row(group_id: str) -> dict[str, Any]:
    calls = json.dumps(
        [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ]
    )
    messages = [
        message("system", "You are a helpful assistant."),
        message("user", "What is the weather in Paris?"),
        message("assistant", "", tool_calls=calls),
        {
            "role": "tool",
            "content": '{"temp_c": 21, "sky": "clear"}',
            "tool_calls": None,
            "tool_call_id": "call_1",
            "name": "get_weather",
        },
        message("assistant", "It is 21 degrees and the sky is clear."),
    ]
    return parallel_row(group_id, "en", messages, task="tool_calling")


def preference_row(group_id: str) -> dict[str, Any]:
    prompt = [message("user", "Which animal says woof?")]
    chosen = [message("assistant", "The dog says woof.")]
    rejected = [message("assistant", "The cat says woof.")]
    return parallel_row(group_id, "en", prompt, chosen=chosen, rejected=rejected)


# --- the translation cache ------------------------------------------------------------------------


def test_cache_round_trips_and_keys_on_identity_and_languages(tmp_path: Path) -> None:
    path = tmp_path / "state" / "translations.sqlite"
    cache = TranslationCache(path)
    cache.put_many({"Hello ⟦0⟧": "Hola ⟦0⟧", "Bye": "Adiós"}, identity="apertium", src="en", tgt="es")
    assert cache.get_many(["Hello ⟦0⟧", "Bye", "New"], identity="apertium", src="en", tgt="es") == {
        "Hello ⟦0⟧": "Hola ⟦0⟧",
        "Bye": "Adiós",
    }
    assert cache.get_many(["Bye"], identity="apertium", src="en", tgt="ca") == {}
    assert cache.get_many(["Bye"], identity="hf:/m", src="en", tgt="es") == {}
    cache.close()
    reopened = TranslationCache(path)
    assert len(reopened) == 2
    assert reopened.get_many(["Bye"], identity="apertium", src="en", tgt="es") == {"Bye": "Adiós"}
    reopened.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cache_looks_up_more_keys_than_one_query_holds(tmp_path: Path) -> None:
    cache = TranslationCache(tmp_path / "c.sqlite")
    texts = [f"text {i}" for i in range(1200)]
    cache.put_many({t: t.upper() for t in texts[::2]}, identity="b", src="en", tgt="es")
    found = cache.get_many(texts, identity="b", src="en", tgt="es")
    assert found == {t: t.upper() for t in texts[::2]}


# --- factory and configuration errors -------------------------------------------------------------


def test_make_translator_builds_each_backend(tmp_path: Path) -> None:
    assert isinstance(make_translator(TranslateConfig(backend="pretranslated")), PretranslatedTranslator)
    assert make_translator(TranslateConfig(backend="apertium")).name == "apertium"
    hf = make_translator(
        TranslateConfig(backend="hf", hf=HFTranslatorConfig(model_path=f"{tmp_path}/{{src}}-{{tgt}}"))
    )
    assert isinstance(hf, HFSeq2SeqTranslator)
    assert hf.path("en", "de") == f"{tmp_path}/en-de"
    openai = make_translator(TranslateConfig(backend="openai", openai=OpenAITranslatorConfig(model="qwen")))
    assert isinstance(openai, OpenAITranslator)
    assert openai.name == "openai:qwen"


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (TranslateConfig(backend="hf"), "translate.hf.model_path is required"),
        (TranslateConfig(backend="hf", hf=HFTranslatorConfig(model_path="/m/{lang}")), r"uses \['lang'\]"),
        (TranslateConfig(backend="openai"), "translate.openai.model is required"),
    ],
)
def test_make_translator_refuses_incomplete_settings(config: TranslateConfig, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        make_translator(config)


def test_pretranslated_creates_no_rows_and_sorts() -> None:
    batch = table(row("g2", "en", "Hi"), row("g1", "es", "Hola", anchor=False), row("g1", "en", "Hello"))
    stage = Translate(PretranslatedTranslator(), anchor_lang="en", langs=["es", "de"])
    stage.setup()
    result = stage.process(batch)
    assert result.created == Counter()
    assert result.rejected.num_rows == 0
    assert list(zip(result.kept["group_id"].to_pylist(), result.kept["lang"].to_pylist(), strict=True)) == [
        ("g1", "en"),
        ("g1", "es"),
        ("g2", "en"),
    ]


def test_stage_refuses_an_anchor_in_another_language() -> None:
    stage = Translate(PretranslatedTranslator(), anchor_lang="en", langs=["es"])
    with pytest.raises(ValueError, match="expected anchor_lang 'en'"):
        stage.process(table(row("g1", "de", "Hallo", anchor=True)))


# --- Apertium ----------------------------------------------------------------------------------------


def _apertium_modes() -> frozenset[str]:
    if shutil.which("apertium") is None:
        return frozenset()
    return ApertiumTranslator(ApertiumTranslatorConfig()).installed_modes


needs_apertium = pytest.mark.skipif(
    not {"eng-spa", "eng-cat"} <= _apertium_modes(),
    reason="needs Debian's Apertium: apt-get install apertium apertium-eng-spa apertium-eng-cat",
)


class CountingApertium(ApertiumTranslator):
    """The real Apertium backend, counting translate() calls and apertium processes."""

    def __init__(self, config: ApertiumTranslatorConfig | None = None) -> None:
        super().__init__(config or ApertiumTranslatorConfig())
        self.calls: list[list[str]] = []
        self.processes = 0

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        self.calls.append(list(texts))
        return super().translate(texts, src=src, tgt=tgt)

    def _run(self, mode: str, text: str) -> str:
        self.processes += 1
        return super()._run(mode, text)


def test_apertium_setup_names_the_missing_binary() -> None:
    translator = ApertiumTranslator(ApertiumTranslatorConfig(binary="no-such-apertium-binary"))
    with pytest.raises(TranslatorConfigError, match="apt-get install apertium apertium-eng-spa"):
        translator.setup()


@needs_apertium
def test_apertium_setup_refuses_missing_modes() -> None:
    with pytest.raises(TranslatorConfigError, match="no default Apertium mode for en→de"):
        Translate(ApertiumTranslator(ApertiumTranslatorConfig()), anchor_lang="en", langs=["de"]).setup()
    overridden = ApertiumTranslator(ApertiumTranslatorConfig(modes={"es": "eng-klingon"}))
    assert overridden.name == "apertium:es=eng-klingon"
    with pytest.raises(TranslatorConfigError, match=r"\['eng-klingon'\], which are not installed"):
        overridden.setup()


@needs_apertium
def test_apertium_batches_in_one_process_like_single_calls() -> None:
    texts = [
        "the red house",
        "I have ⟦0⟧ apples and ⟦1⟧ pears.",
        "First line.\nSecond line.\n\nNew paragraph.",
        "big dog",
        "  spaces around  ",
        "How do I undo my last commit?",
    ]
    translator = CountingApertium()
    translator.setup()
    batched = translator.translate(texts, src="en", tgt="es")
    assert translator.processes == 1
    singles = [translator.translate([t], src="en", tgt="es")[0] for t in texts]
    assert batched == singles
    assert "⟦0⟧" in batched[1] and "⟦1⟧" in batched[1] and "manzanas" in batched[1]
    assert batched[2].count("\n") == 3 and "\n\n" in batched[2]
    assert batched[0].lower() == "la casa roja"
    assert batched[4].startswith("  ") and batched[4].endswith("  ")
    assert "  " not in batched[5]  # the blanks of words Apertium drops are closed up


@needs_apertium
def test_apertium_falls_back_to_one_process_per_text_when_the_split_fails() -> None:
    texts = ["the red house", "a text that quotes the separator\n\n⟦⟦⟦0⟧⟧⟧\n\nin it", "big dog"]
    translator = CountingApertium()
    translator.setup()
    out = translator.translate(texts, src="en", tgt="es")
    assert translator.processes == 1 + len(texts)
    assert out[0].lower() == "la casa roja"
    assert "⟦⟦⟦0⟧⟧⟧" in out[1]


@needs_apertium
def test_apertium_stage_translates_prose_and_copies_structure() -> None:
    code = "```python\nprint(sum([1, 2]))\n```"
    batch = table(
        row(
            "g3",
            "en",
            f"Run this:\n{code}\nWhat does it print?",
            "It prints 3.\nSee https://docs.python.org/3/.",
        ),
        tool_row("g1"),
        preference_row("g2"),
        row("g2b", "en", "I like dogs."),
        row("g2b", "es", "Me gustan los perros (a mano).", anchor=False),
    )
    stage = Translate(CountingApertium(), anchor_lang="en", langs=["es", "ca"])
    stage.setup()
    result = stage.process(batch)
    assert_accounted(batch, result)
    assert result.created == Counter({"es": 3, "ca": 4})
    assert result.rejected.num_rows == 0

    user, answer = contents(result, "g3", "es")
    assert f"\n{code}\n" in user and user.endswith("imprime?") and not user.startswith("Run")
    assert answer.startswith("Imprime 3.\n") and answer.endswith("https://docs.python.org/3/.")
    assert contents(result, "g2b", "es") == ["Me gustan los perros (a mano)."]

    anchor = next(r for r in batch.to_pylist() if r["group_id"] == "g1")
    translated = next(r for r in result.kept.to_pylist() if (r["group_id"], r["lang"]) == ("g1", "ca"))
    assert [m["role"] for m in translated["messages"]] == [m["role"] for m in anchor["messages"]]
    for a, t in zip(anchor["messages"], translated["messages"], strict=True):
        assert (t["tool_calls"], t["tool_call_id"], t["name"]) == (
            a["tool_calls"],
            a["tool_call_id"],
            a["name"],
        )
    assert translated["messages"][2]["content"] == ""
    assert translated["messages"][3]["content"] == anchor["messages"][3]["content"]
    assert "París" in translated["messages"][1]["content"]
    assert translated["is_anchor"] is False and translated["translator"] == "apertium"
    assert translated["task"] == "tool_calling" and translated["lid_prob"] is None
    assert translated["content_hash"] == content_hash(translated["messages"])
    sent = [t for call in stage.translator.calls for t in call]
    assert not any("temp_c" in t or "get_weather" in t for t in sent)

    pref = next(r for r in result.kept.to_pylist() if (r["group_id"], r["lang"]) == ("g2", "es"))
    assert pref["kind"] == "preference"
    (question,) = (m["content"] for m in pref["messages"])
    assert "animal" in question and not question.startswith("Which")
    assert "perro" in pref["chosen"][0]["content"] and "gato" in pref["rejected"][0]["content"]
    assert pref["content_hash"] == content_hash(pref["messages"], pref["chosen"], pref["rejected"])


@needs_apertium
def test_cache_makes_a_second_run_translate_nothing(tmp_path: Path) -> None:
    batch = table(
        row("g1", "en", "The cat is on the table.", "Use `ls` to list files."),
        row("g2", "en", "The cat is on the table.", "Good night."),
    )
    first = CountingApertium()
    stage = Translate(
        first, anchor_lang="en", langs=["es", "ca"], cache=TranslationCache(tmp_path / "t.sqlite")
    )
    stage.setup()
    before = stage.process(batch)
    assert sorted(len(call) for call in first.calls) == [3, 3]  # unique texts, once per target
    assert sum(t == "Use ⟦0⟧ to list files." for call in first.calls for t in call) == 2
    assert len(stage.cache) == 6

    second = CountingApertium()
    rerun = Translate(
        second, anchor_lang="en", langs=["es", "ca"], cache=TranslationCache(tmp_path / "t.sqlite")
    )
    rerun.setup()
    after = rerun.process(batch)
    assert second.calls == [] and second.processes == 0
    assert after.kept.equals(before.kept)
    restored = contents(after, "g1", "es")[1]
    assert "`ls`" in restored and "files" not in restored


@needs_apertium
def test_apertium_cache_keys_on_mode_executable_and_pair_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = table(row("g1", "en", "The cat is on the table."))
    cache_path = tmp_path / "t.sqlite"

    def run(**settings: Any) -> tuple[int, str, str]:
        """Texts sent to Apertium, the es translation and the translator column."""
        translator = CountingApertium(ApertiumTranslatorConfig(**settings))
        stage = Translate(translator, anchor_lang="en", langs=["es"], cache=TranslationCache(cache_path))
        stage.setup()
        result = stage.process(batch)
        (translated,) = contents(result, "g1", "es")
        name = result.kept.filter(pa.compute.field("lang") == "es")["translator"][0].as_py()
        return sum(len(call) for call in translator.calls), translated, name

    sent, spanish, _ = run()
    assert sent == 1 and "gato" in spanish
    assert run() == (0, spanish, "apertium")
    assert run(modes={"es": "eng-spa"}) == (0, spanish, "apertium:es=eng-spa")  # the mode in force
    sent, catalan, name = run(modes={"es": "eng-cat"})
    assert (sent, name) == (1, "apertium:es=eng-cat") and "gat" in catalan

    wrapper = tmp_path / "bin" / "apertium-wrapper"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("apertium")} "$@"\n')
    wrapper.chmod(0o755)
    assert run(binary=str(wrapper))[0] == 1
    assert run(binary=str(wrapper))[0] == 0

    # Another installation of the pair's language data (here a copy elsewhere): translated afresh.
    datadir = tmp_path / "apertium"
    shutil.copytree("/usr/share/apertium/modes", datadir / "modes")
    shutil.copytree("/usr/share/apertium/apertium-eng-spa", datadir / "apertium-eng-spa")
    mode_file = datadir / "modes" / "eng-spa.mode"
    mode_file.write_text(mode_file.read_text().replace("/usr/share/apertium/", f"{datadir}/"))
    monkeypatch.setenv("APERTIUM_DATADIR", str(datadir))
    assert run() == (1, spanish, "apertium")
    assert run()[0] == 0


# --- OpenAI-compatible server ----------------------------------------------------------------------


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


class AnswerHandler(BaseHTTPRequestHandler):
    """Answers every request with ``server.answer(text)``, the body as it is (str or bytes), with or
    without a Content-Length."""

    server: "Answering"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.prompts.append(body["messages"][0]["content"])
        answer = self.server.answer(body["messages"][1]["content"])
        if isinstance(answer, str):
            answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.server.sized:
            self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class Answering(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: Any, *, sized: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), AnswerHandler)
        self.answer = answer
        self.sized = sized
        self.prompts: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@contextlib.contextmanager
def answering(answer: Any, *, sized: bool = True) -> Iterator[Answering]:
    server = Answering(answer, sized=sized)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# How chat models wrap a translation ("{t}") when they do not keep to the prompt.
WRAPPERS = {
    "preamble and sign-off": "Sure! Here is the translation:\n\n{t}\n\nLet me know if you need anything else!",
    "note after": "{t}\n\n(Note: I kept the placeholders unchanged.)",
    "preamble line": "Translation:\n{t}",
    "inline preamble": "Here is the translation: {t}",
    "quotes": "“{t}”",
    "tags and chatter": "Of course!\n<translation>{t}</translation>\nHope this helps.",
    "tags": "<translation>\n{t}\n</translation>",
}


@pytest.mark.parametrize("style", list(WRAPPERS))
def test_openai_wrapped_answers_are_unwrapped_or_rejected_never_kept_with_their_chatter(style: str) -> None:
    batch = table(
        row("g1", "en", "Hello there.", "Run `ls -la` now.\nThen read the list."),
        row("g2", "en", "Say “yes” or “no”."),
    )
    with answering(lambda text: WRAPPERS[style].format(t=text.upper())) as server:
        result = openai_stage(server.base_url).process(batch)
    assert_accounted(batch, result)
    kept = [m["content"] for r in result.kept.to_pylist() if r["lang"] == "es" for m in r["messages"]]
    if style in ("preamble and sign-off", "note after", "preamble line", "inline preamble"):
        assert kept == []
        assert set(result.rejected["reason"].to_pylist()) == {"translator_error"}
        assert all("a preamble" in d for d in result.rejected["detail"].to_pylist())
    else:
        assert kept == ["HELLO THERE.", "RUN `ls -la` NOW.\nTHEN READ THE LIST.", "SAY “YES” OR “NO”."]
    assert "<translation>" in server.prompts[0]  # the prompt asks for the tags


def test_openai_answer_with_a_lone_surrogate_is_a_translator_error_reject() -> None:
    batch = table(row("g1", "en", "Hello there."), row("g2", "en", "Good night."))
    reply = {"choices": [{"message": {"role": "assistant", "content": "PLACEHOLDER"}}]}

    def answer(text: str) -> bytes:
        content = "Hola \\ud800" if text == "Hello there." else text.upper()
        return json.dumps(reply).replace("PLACEHOLDER", content).encode()

    with answering(answer) as server:
        result = openai_stage(server.base_url).process(batch)
    assert_accounted(batch, result)
    (bad,) = result.rejected.to_pylist()
    assert (bad["group_id"], bad["reason"]) == ("g1", "translator_error")
    assert "lone surrogate (\\ud800)" in bad["detail"]
    assert contents(result, "g2", "es") == ["GOOD NIGHT."]


@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "read-until-closed"])
def test_openai_oversized_answer_fails_its_text_without_being_read_whole(sized: bool) -> None:
    batch = table(row("g1", "en", "Hello there."), row("g2", "en", "Good night."))
    # Made before memory is traced: the server runs in this process.
    huge = json.dumps({"choices": [{"message": {"role": "assistant", "content": "x" * 20_000_000}}]}).encode()

    def answer(text: str) -> str | bytes:
        return huge if text == "Hello there." else text.upper()

    with answering(answer, sized=sized) as server:
        stage = openai_stage(server.base_url, timeout_s=30.0)
        tracemalloc.start()
        result = stage.process(batch)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert_accounted(batch, result)
    (bad,) = result.rejected.to_pylist()
    assert bad["group_id"] == "g1" and "over translate.openai.max_response_bytes=4,194,304" in bad["detail"]
    assert contents(result, "g2", "es") == ["GOOD NIGHT."]
    assert peak < 12_000_000  # never the 20 MB answer, let alone copies of it


def test_preference_pair_translated_to_the_same_text_is_rejected() -> None:
    prompt = [message("user", "Which animal says woof?")]
    chosen = [message("assistant", "The DOG says woof.")]
    rejected = [message("assistant", "The dog says woof.")]  # the same once the "translation" is upper case
    batch = table(parallel_row("p1", "en", prompt, chosen=chosen, rejected=rejected))
    with answering(lambda text: text.upper()) as server:
        result = openai_stage(server.base_url).process(batch)
    assert_accounted(batch, result, reasons=REASONS | {"same_completions"})
    (bad,) = result.rejected.to_pylist()
    assert (bad["lang"], bad["reason"]) == ("es", "same_completions")


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


# --- Hugging Face seq2seq ------------------------------------------------------------------------------

# The tokenizer's whole vocabulary: the words of these lines.
CORPUS = ("the cat is on the table .", "hello world ?", "el gato está en la mesa ,", "hola mundo ⟦0⟧ ⟦1⟧")


def save_marian(path: Path, *, seed: int, bias: dict[str, float] | None = None) -> None:
    """A tiny randomly initialised Marian model with a word-level tokenizer, saved like a real checkpoint."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    words = dict.fromkeys(["<pad>", "</s>", "<unk>", *(w for line in CORPUS for w in line.split())])
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    model = MarianMTModel(config)
    for token, value in (bias or {}).items():
        model.final_logits_bias[0, vocab[token]] = value
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


@pytest.fixture(scope="module")
def marian_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("marian")
    # Seed 0 with the mask tokens ruled out answers every input with two words and the end token.
    save_marian(root / "en-es", seed=0, bias={"⟦0⟧": -50.0, "⟦1⟧": -50.0})
    save_marian(root / "en-ca", seed=3, bias={"</s>": 50.0})  # ends at once: empty output
    save_marian(root / "en-gl", seed=3, bias={"gato": 50.0})  # never ends: cut at max_new_tokens
    return root


def hf_stage(model_path: str, langs: list[str], **settings: Any) -> Translate:
    config = HFTranslatorConfig(model_path=model_path, max_new_tokens=8, batch_size=2, **settings)
    return Translate(HFSeq2SeqTranslator(config), anchor_lang="en", langs=langs)


def test_hf_marian_runs_end_to_end_and_accounts_for_every_row(marian_root: Path) -> None:
    long_text = " ".join(["the cat is on the table ."] * 12)
    batch = table(
        row("g1", "en", "the cat is on the table .", "hello world ?"),
        row("g2", "en", "hello ⟦0⟧ world", "the cat"),
        row("g3", "en", long_text),
        row("g4", "es", "hola", anchor=False),
        row("g4", "en", "hello"),
        row("g5", "en", "  hello\n"),
    )
    stage = hf_stage(f"{marian_root}/{{src}}-{{tgt}}", ["es", "ca", "gl"])
    stage.setup()
    result = stage.process(batch)
    assert_accounted(batch, result)
    assert result.created == Counter({"es": 4, "ca": 5, "gl": 5})
    new = [
        r for r in result.kept.to_pylist() if r["translator"].startswith("hf:")
    ] + result.rejected.to_pylist()
    expected = {(g, lang) for g in ("g1", "g2", "g3", "g4", "g5") for lang in ("es", "ca", "gl")} - {
        ("g4", "es")
    }
    assert sorted((r["group_id"], r["lang"]) for r in new) == sorted(expected)
    assert {r["translator"] for r in new} == {f"hf:{marian_root}/{{src}}-{{tgt}}"}

    bad = rejects(result)
    for lang in ("es", "ca", "gl"):
        assert bad["g3", lang]["reason"] == "translator_error"
        assert "input is 85 tokens, the model reads at most 64" in bad["g3", lang]["detail"]
    for group in ("g1", "g2", "g4", "g5"):
        assert bad[group, "ca"]["reason"] == "empty_output"
        assert bad[group, "gl"]["reason"] == "translator_error"
    assert "cut at max_new_tokens=8" in bad["g1", "gl"]["detail"]

    translated = contents(result, "g1", "es")
    assert all(t.strip() and "⟦" not in t for t in translated)
    assert bad["g2", "es"]["reason"] == "mask_lost" and "missing [0]" in bad["g2", "es"]["detail"]
    assert bad["g2", "es"]["raw"] == translated[0]
    assert contents(result, "g4", "es") == ["hola"]
    (edged,) = contents(result, "g5", "es")
    assert edged == f"  {translated[0]}\n"
    kept_es = [r for r in result.kept.to_pylist() if r["lang"] == "es" and not r["is_anchor"]]
    assert all(r["content_hash"] == content_hash(r["messages"]) for r in kept_es)


def test_hf_missing_pair_folder_fails_at_setup(marian_root: Path) -> None:
    with pytest.raises(TranslatorConfigError, match="which is not a folder"):
        hf_stage(f"{marian_root}/{{src}}-{{tgt}}", ["de"]).setup()


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("empty folder", "holds no config.json: not a Hugging Face model folder"),
        ("no tokenizer", "holds no tokenizer (none of tokenizer.json, "),
        ("no weights", "holds no .safetensors weights"),
        ("weights cut short", "model.safetensors is damaged (its tensors need "),
        ("weights not safetensors", "model.safetensors is damaged (its header claims "),
    ],
)
def test_hf_model_folder_that_cannot_load_is_one_line_at_setup(
    marian_root: Path, tmp_path: Path, damage: str, problem: str
) -> None:
    folder = tmp_path / "en-es"
    if damage == "empty folder":
        folder.mkdir()
    else:
        shutil.copytree(marian_root / "en-es", folder)
    weights = folder / "model.safetensors"
    if damage == "no tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).unlink()
    elif damage == "no weights":
        weights.unlink()
    elif damage == "weights cut short":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "weights not safetensors":
        weights.write_bytes(b"PK\x03\x04 a zip file, as torch.save writes")
    with pytest.raises(TranslatorConfigError) as caught:
        hf_stage(str(folder), ["es"]).setup()
    assert str(caught.value).startswith("translate.hf.model_path (en→es): ") and problem in str(caught.value)
    assert "\n" not in str(caught.value)


class CountingHF(HFSeq2SeqTranslator):
    """The real Hugging Face backend, recording the texts it is asked to translate."""

    def __init__(self, config: HFTranslatorConfig) -> None:
        super().__init__(config)
        self.sent: list[str] = []

    def translate(self, texts: list[str], *, src: str, tgt: str) -> list[str]:
        self.sent += texts
        return super().translate(texts, src=src, tgt=tgt)


def hf_cached_run(batch: pa.Table, cache: Path, model_path: Path | str, **settings: Any) -> int:
    """How many texts one cached run sends to the model."""
    config = {"model_path": str(model_path), "max_new_tokens": 8, "batch_size": 2} | settings
    translator = CountingHF(HFTranslatorConfig(**config))
    stage = Translate(translator, anchor_lang="en", langs=["es"], cache=TranslationCache(cache))
    stage.setup()
    stage.process(batch)
    return len(translator.sent)


def test_hf_cache_keys_on_the_model_files_and_decoding_settings(tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    model = tmp_path / "models" / "en-es"
    save_marian(model, seed=0, bias={"⟦0⟧": -50.0, "⟦1⟧": -50.0})
    batch = table(row("g1", "en", "the cat is on the table .", "hello world ?"))
    cache = tmp_path / "t.sqlite"

    def sent(**settings: Any) -> int:
        return hf_cached_run(batch, cache, model, **settings)

    assert sent() == 2
    assert sent() == 0
    assert sent(batch_size=1, device="cpu") == 0  # speed, not output
    assert sent(num_beams=2) == 2
    assert sent(max_new_tokens=9) == 2

    def edit_json(name: str, **fields: Any) -> None:
        path = model / name
        path.write_text(json.dumps(json.loads(path.read_text()) | fields))

    edit_json("config.json", dropout=0.2)
    assert sent() == 2
    edit_json("tokenizer_config.json", model_max_length=64)
    assert sent() == 2
    edit_json("generation_config.json", length_penalty=0.9)
    assert sent() == 2
    weights = model / "model.safetensors"
    size = weights.stat().st_size
    # Other weights of the same shapes (ending at once, so their empty outputs are cached too).
    save_marian(model, seed=1, bias={"⟦0⟧": -50.0, "⟦1⟧": -50.0, "</s>": 2.0})
    assert weights.stat().st_size == size
    assert sent() == 2
    assert sent() == 0

    # Notes and download caches do not count, nor does where the folder lives.
    (model / "README.md").write_text("A tiny Marian model.")
    (model / ".cache").mkdir()
    (model / ".cache" / "download.lock").write_text("")
    assert sent() == 0
    moved = tmp_path / "elsewhere" / "en-es"
    moved.parent.mkdir()
    model.rename(moved)
    assert hf_cached_run(batch, cache, f"{tmp_path}/elsewhere/{{src}}-{{tgt}}") == 0


def test_model_fingerprint_samples_large_weight_files(tmp_path: Path) -> None:
    import numpy as np

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"d_model": 16}')
    weights = folder / "model.safetensors"
    data = np.random.default_rng(0).bytes(3 << 20)
    weights.write_bytes(data)
    before = model_fingerprint(folder)
    assert model_fingerprint(folder) == before

    weights.write_bytes(np.random.default_rng(1).bytes(3 << 20))  # same size, other weights
    assert model_fingerprint(folder) != before
    weights.write_bytes(data)
    assert model_fingerprint(folder) == before
    weights.rename(folder / "pytorch_model.bin")
    assert model_fingerprint(folder) != before
    (folder / "pytorch_model.bin").rename(weights)
    weights.write_bytes(data + b"\0")
    assert model_fingerprint(folder) != before


@pytest.fixture(scope="module")
def nllb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny NLLB checkpoint: the real NLLB tokenizer class over a character vocabulary, an M2M100 model."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration
    from transformers.models.nllb.tokenization_nllb import NllbTokenizer

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("nllb")
    vocab = {
        w: i for i, w in enumerate(["<s>", "<pad>", "</s>", "<unk>", *"abcdefghijklmnopqrstuvwxyz▁⟦⟧01"])
    }
    tokenizer = NllbTokenizer(vocab=vocab, merges=[], extra_special_tokens=["eng_Latn", "spa_Latn"])
    config = M2M100Config(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    torch.manual_seed(0)
    M2M100ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_hf_nllb_translates_with_language_codes(nllb_dir: Path) -> None:
    batch = table(row("g1", "en", "hello world", "the cat ⟦0⟧"))
    stage = hf_stage(str(nllb_dir), ["es"], lang_codes={"en": "eng_Latn", "es": "spa_Latn"})
    stage.setup()
    result = stage.process(batch)
    assert_accounted(batch, result)
    assert result.created == Counter({"es": 1})


def test_hf_cache_keys_on_the_language_codes_the_pair_uses(nllb_dir: Path, tmp_path: Path) -> None:
    batch = table(row("g1", "en", "hello world", "the cat ⟦0⟧"))
    cache = tmp_path / "t.sqlite"
    codes = {"en": "eng_Latn", "es": "spa_Latn"}

    def sent(lang_codes: dict[str, str]) -> int:
        return hf_cached_run(batch, cache, nllb_dir, lang_codes=lang_codes, max_new_tokens=64)

    assert sent(codes) == 2
    assert sent(codes | {"de": "deu_Latn"}) == 0  # a code this pair does not use
    assert sent(codes | {"en": "spa_Latn"}) == 2
    assert sent(codes) == 0


@pytest.mark.parametrize(
    ("lang_codes", "problem"),
    [
        ({}, "multilingual m2m_100 model: set translate.hf.lang_codes"),
        ({"en": "eng_Latn"}, "lang_codes has no entry for 'es'"),
        ({"en": "eng_Latn", "es": "xyz_Latn"}, "'xyz_Latn' .* is not a token"),
    ],
)
def test_hf_nllb_language_code_mistakes_fail_at_setup(
    nllb_dir: Path, lang_codes: dict[str, str], problem: str
) -> None:
    with pytest.raises(TranslatorConfigError, match=problem):
        hf_stage(str(nllb_dir), ["es"], lang_codes=lang_codes).setup()

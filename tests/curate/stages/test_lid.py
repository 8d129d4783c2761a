from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from curate.config import BuildConfig, LidConfig
from curate.stages.lid import AnchorLid, Lid, default_model_path
from schemas import ConfigError
from schemas.config_io import load_config
from tests.curate import udhr
from tests.curate.rows import by_key, table
from tests.curate.rows import message as msg
from tests.curate.rows import parallel_row as row


def convo(user: str, assistant: str) -> list[dict[str, Any]]:
    return [msg("user", user), msg("assistant", assistant)]


EN = convo("What is the weather like in Paris tomorrow?", "It will be sunny and warm all day.")
DE = convo("Wie ist das Wetter morgen in Paris?", "Es wird den ganzen Tag sonnig und warm.")
FR = convo("Quel temps fera-t-il demain à Paris ?", "Il fera beau et chaud toute la journée.")
ES = convo("¿Qué tiempo hará mañana en París?", "Hará sol y calor todo el día.")


@pytest.fixture(scope="module")
def lid() -> Lid:
    stage = Lid(LidConfig())
    stage.setup()
    return stage


def test_translations_in_their_language_are_kept(lid: Lid) -> None:
    zh = convo(
        "明天巴黎的天氣怎麼樣？我想和朋友一起去公園散步。", "明天巴黎全天都會是晴朗溫暖的好天氣，很適合散步。"
    )
    rows = by_key(
        lid.process(
            table(
                row("g", "en", EN),
                row("g", "de", DE),
                row("g", "fr", FR),
                row("g", "es", ES),
                row("g", "zh_Hant", zh),
            )
        )
    )
    assert {k: r["reason"] for k, r in rows.items()} == dict.fromkeys(
        ["g/en", "g/de", "g/fr", "g/es", "g/zh_Hant"], None
    )
    assert {k: r["lid_lang"] for k, r in rows.items()} == {
        "g/en": "en",
        "g/de": "de",
        "g/fr": "fr",
        "g/es": "es",
        "g/zh_Hant": "zh",
    }
    assert all(0.5 <= r["lid_prob"] <= 1.0 for r in rows.values())
    # The least sure message decides: "Es wird den ganzen Tag sonnig und warm." (0.989), not the other (1.0).
    assert rows["g/de"]["lid_prob"] == pytest.approx(0.9888, abs=1e-3)


def test_wrong_lang(lid: Lid) -> None:
    prompt = [msg("user", "Wie ist das Wetter morgen in Paris?")]
    english = msg("assistant", "It will be sunny and very warm the whole day.")  # not the anchor's words
    result = lid.process(
        table(
            row("g", "en", EN),
            row("g", "de", [DE[0], english]),
            row("g", "ca", ES),
            row(
                "p", "en", prompt, chosen=[EN[1]], rejected=[msg("assistant", "It will snow all week long.")]
            ),
            row(
                "p",
                "de",
                [msg("user", "Wie wird das Wetter morgen in Paris sein?")],
                chosen=[DE[1]],
                rejected=[msg("assistant", "Snow is coming all week.")],
            ),
        )
    )
    rows = by_key(result)
    assert {k: (r["reason"], r["lid_lang"]) for k, r in rows.items()} == {
        "g/en": (None, "en"),
        "g/de": ("wrong_lang", "en"),
        "g/ca": ("wrong_lang", "es"),
        "p/en": (None, "de"),
        "p/de": ("wrong_lang", "en"),
    }
    assert rows["g/de"]["detail"].startswith("messages[1]: read as en (p=0.9")
    assert rows["p/de"]["detail"].startswith("rejected[0]: read as en")
    assert set(result.rejected.column("stage").to_pylist()) == {"lid"}


def test_low_prob_and_wrong_lang_outranks_it(lid: Lid) -> None:
    vague = msg("assistant", "Paris Berlin London Madrid Rome")
    rows = by_key(
        lid.process(
            table(
                row("g", "en", EN),
                row("g", "de", [DE[0], vague]),
                row("g", "fr", [msg("user", "What will the weather be in Paris tomorrow?"), vague]),
            )
        )
    )
    assert rows["g/de"]["reason"] == "low_prob"
    assert rows["g/de"]["lid_lang"] == "de"
    assert rows["g/de"]["lid_prob"] < 0.5
    assert rows["g/de"]["detail"].startswith("messages[1]: read as de (p=0.4")
    assert rows["g/fr"]["reason"] == "wrong_lang"
    assert rows["g/fr"]["lid_lang"] == "en"


def test_min_prob_comes_from_config() -> None:
    strict = Lid(LidConfig(min_prob=0.999))
    strict.setup()
    rows = by_key(strict.process(table(row("g", "en", EN), row("g", "es", ES))))
    assert rows["g/es"]["reason"] == "low_prob"
    assert rows["g/en"]["reason"] is None


def test_only_prose_of_prose_roles_is_judged(lid: Lid) -> None:
    code = "```python\nfor city in ['London', 'Berlin']:\n    print('The weather is fine in', city)\n```"
    tool_call = '[{"id": "c1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]'
    messages = [
        msg("system", "Du bist ein hilfreicher Assistent für das Wetter."),
        msg("user", f"Was macht dieser Code hier genau?\n{code}"),
        msg("assistant", "", tool_calls=tool_call),
        msg(
            "tool",
            "The weather in Paris is sunny, the temperature is 21 degrees.",
            tool_call_id="c1",
            name="get_weather",
        ),
        msg(
            "assistant",
            "Er gibt für jede Stadt eine Zeile aus, siehe `print` und https://docs.python.org/3/library/functions.html",
        ),
    ]
    rows = by_key(lid.process(table(row("g", "en", EN), row("g", "de", messages))))
    assert rows["g/de"]["reason"] is None
    assert rows["g/de"]["lid_lang"] == "de"


def test_rows_with_nothing_long_enough_are_kept_with_null_scores(lid: Lid) -> None:
    short = convo("Danke!", "Gern.")
    code_only = convo("`ls -la /tmp && echo done`", "```\nThe quick brown fox jumps over the lazy dog.\n```")
    rows = by_key(lid.process(table(row("g", "en", EN), row("g", "de", short), row("g", "fr", code_only))))
    for key in ("g/de", "g/fr"):
        assert (rows[key]["reason"], rows[key]["lid_lang"], rows[key]["lid_prob"]) == (None, None, None)


def test_anchors_are_never_rejected(lid: Lid) -> None:
    german = convo("Wie wird das Wetter morgen in Paris?", "Morgen wird es den ganzen Tag sonnig und warm.")
    rows = by_key(
        lid.process(table(row("g", "en", DE), row("g", "de", german), row("h", "fr", EN, anchor=True)))
    )
    assert {k: (r["reason"], r["lid_lang"]) for k, r in rows.items()} == {
        "g/en": (None, "de"),
        "g/de": (None, "de"),
        "h/fr": (None, "en"),
    }


def test_a_copy_of_the_anchor_is_untranslated(lid: Lid) -> None:
    short = convo("Thanks!", "Gern.")  # under min_chars: a name or "OK" may stay as it is
    rows = by_key(
        lid.process(
            table(
                row("g", "en", [msg("system", "Answer in one short sentence."), *EN]),
                row("g", "de", [msg("system", "Antworte in einem kurzen Satz."), DE[0], EN[1]]),
                row("g", "fr", [msg("system", "Réponds en une phrase courte."), *FR]),
                row("h", "en", short),
                row("h", "de", short),
            )
        )
    )
    assert {k: r["reason"] for k, r in rows.items()} == {
        "g/en": None,
        "g/de": "untranslated",
        "g/fr": None,
        "h/en": None,
        "h/de": None,
    }
    assert rows["g/de"]["detail"] == "messages[2]: the anchor's text, unchanged"


def test_anchor_lid_rejects_the_group_of_an_anchor_in_another_language() -> None:
    stage = AnchorLid(LidConfig())
    stage.setup()
    zh = convo(
        "明天巴黎的天氣怎麼樣？我想和朋友一起去公園散步。", "明天巴黎全天都會是晴朗溫暖的好天氣，很適合散步。"
    )
    result = stage.process(
        table(
            row("g", "en", EN),
            row("h", "en", DE),  # German labelled English
            row("h", "fr", FR),  # a pre-translated row of that group
            row("i", "en", ES),
            row("j", "en", zh),
            row("k", "en", convo("Danke!", "Gern.")),  # too short to tell: kept
        )
    )
    rows = by_key(result)
    assert {k: (r["stage"] if r.get("stage") else None, r["reason"]) for k, r in rows.items()} == {
        "g/en": (None, None),
        "h/en": ("anchor_lid", "wrong_lang"),
        "h/fr": ("anchor_lid", "anchor_rejected"),
        "i/en": ("anchor_lid", "wrong_lang"),
        "j/en": ("anchor_lid", "wrong_lang"),
        "k/en": (None, None),
    }
    assert rows["h/fr"]["detail"].startswith("the group's anchor was rejected (messages[0]: read as de")
    assert rows["g/en"]["lid_lang"] == "en" and rows["h/fr"]["lid_lang"] is None  # translations: lid's job


def test_lid_does_not_read_anchors_again_after_anchor_lid() -> None:
    anchors = AnchorLid(LidConfig())
    anchors.setup()
    checked = anchors.process(table(row("g", "en", EN), row("h", "en", EN[:1]))).kept.to_pylist()
    translations = [row("g", "de", DE), row("h", "de", DE[:1])]
    stage = Lid(LidConfig())
    stage.setup()
    stage._model = counting = CountingModel(stage._model)
    rows = by_key(stage.process(table(*checked, *translations)))
    assert sorted(counting.calls[0]) == sorted(f"{m['content']}\n".encode() for m in DE)  # German only
    assert rows["g/en"]["lid_lang"] == "en" and rows["g/de"]["lid_lang"] == "de"


class CountingModel:
    """The real fastText model, recording the lines of each native ``multilinePredict`` call."""

    def __init__(self, model: Any) -> None:
        self.native = model.f
        self.f = self
        self.calls: list[list[bytes]] = []
        self.ks: list[int] = []

    def multilinePredict(self, lines: list[bytes], k: int, *args: Any) -> Any:
        self.calls.append(lines)
        self.ks.append(k)
        return self.native.multilinePredict(lines, k, *args)


def test_one_predict_call_per_batch() -> None:
    stage = Lid(LidConfig())
    stage.setup()
    counting = CountingModel(stage._model)
    stage._model = counting
    stage.process(
        table(
            row("g", "en", EN), row("g", "de", DE), row("g", "fr", FR), row("h", "en", EN), row("h", "es", ES)
        )
    )
    # 10 messages, the two English rows' 2 are the same: read once
    assert [len(lines) for lines in counting.calls] == [8]
    # as fastText's predict() would pass them: one line each, newline-terminated
    assert all(line.count(b"\n") == 1 and line.endswith(b"\n") for line in counting.calls[0])


@pytest.fixture(scope="module")
def glotlid_style_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real fastText model with GlotLID-style labels, plus ``eml``, a code langcodes rejects."""
    sentences = {
        "deu_Latn": [
            "das wetter ist heute sehr schön",
            "wie viele äpfel hat tom jetzt",
            "bitte buche einen tisch",
        ],
        "eng_Latn": [
            "the weather is very nice today",
            "how many apples does tom have now",
            "please book a table",
        ],
        "eml": ["a gh'è dla nèva in dla strê", "al tèmp l'è bël incō", "mé a vâg a cà"],
    }
    folder = tmp_path_factory.mktemp("glotlid")
    train = folder / "train.txt"
    train.write_text("".join(f"__label__{label} {s}\n" for label, ss in sentences.items() for s in ss) * 10)
    # Trained in a fresh process: inside the test process (after torch and the other native libraries
    # have run) this fastText build sometimes diverges to NaN on so little data; alone it never does.
    script = (
        "import sys, fasttext; fasttext.train_supervised(input=sys.argv[1], epoch=100, lr=0.2, minn=2, "
        "maxn=4, bucket=10_000, thread=1, seed=0, verbose=0).save_model(sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", script, str(train), str(folder / "model.bin")], check=True)
    return folder / "model.bin"


def test_any_fasttext_model_with_other_labels(glotlid_style_model: Path) -> None:
    stage = Lid(LidConfig(model_path=glotlid_style_model, min_chars=10))
    stage.setup()
    rows = by_key(
        stage.process(
            table(
                row("g", "en", [msg("user", "the weather is very nice today")]),
                row("g", "de", [msg("user", "das wetter ist heute sehr schön")]),
                row("g", "fr", [msg("user", "al tèmp l'è bël incō, a gh'è dla nèva")]),
            )
        )
    )
    assert {k: (r["reason"], r["lid_lang"]) for k, r in rows.items()} == {
        "g/en": (None, "en"),
        "g/de": (None, "de"),
        "g/fr": ("wrong_lang", None),
    }
    assert rows["g/fr"]["detail"].startswith("messages[0]: read as __label__eml")


def test_missing_or_broken_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"lid.model_path: no file at .*missing\.ftz"):
        Lid(LidConfig(model_path=tmp_path / "missing.ftz")).setup()
    broken = tmp_path / "broken.bin"
    broken.write_bytes(b"not a fastText model")
    with pytest.raises(ValueError, match="is not a fastText model"):
        Lid(LidConfig(model_path=broken)).setup()


UDHR = udhr.load_extract()


@pytest.fixture(scope="module")
def lid_en() -> Lid:
    """The stage as ``curate build`` makes it: it knows the anchor language."""
    stage = Lid(LidConfig(), anchor_lang="en")
    stage.setup()
    return stage


def one(lang: str, text: str, group: str = "g") -> list[dict[str, Any]]:
    """A group of an English anchor (never judged here) and one translation of a single message."""
    return [row(group, "en", EN), row(group, lang, [msg("assistant", text)])]


def test_a_close_relative_may_outrank_the_row_language(lid_en: Lid) -> None:
    """lid.176 reads this Catalan as Spanish (es 0.467, ca 0.163, pt 0.122, gl 0.106): Spanish is a
    relative and ca keeps 0.163 / 0.467 >= 0.1 of it; the reading rests on ca and its relatives' 0.86.
    A Spanish paragraph under ca (es 0.928, ca 0.028) stays a wrong language."""
    catalan = "Com fusiono dos diccionaris en Pitó?"
    spanish = UDHR["a04.1"]["es"]
    rows = by_key(lid_en.process(table(*one("ca", catalan), *one("ca", spanish, "h"))))
    assert (rows["g/ca"]["reason"], rows["g/ca"]["lid_lang"]) == (None, "ca")
    assert rows["g/ca"]["lid_prob"] == pytest.approx(0.467 + 0.163 + 0.122 + 0.106, abs=2e-3)
    assert rows["h/ca"]["reason"] == "wrong_lang"
    assert rows["h/ca"]["detail"] == "messages[0]: read as es (p=0.928), ca 0.028"
    strict = Lid(LidConfig(langs={"ca": {"related_ratio": 0.5}}), anchor_lang="en")
    strict.setup()
    assert by_key(strict.process(table(*one("ca", catalan))))["g/ca"]["reason"] == "wrong_lang"
    alone = Lid(LidConfig(related={}, short_chars=0), anchor_lang="en")
    alone.setup()
    assert by_key(alone.process(table(*one("ca", catalan))))["g/ca"]["reason"] == "wrong_lang"


def test_varieties_a_model_does_not_separate_count_as_one(lid_en: Lid) -> None:
    """lid.176 reads this Bosnian as hr 0.472, sh 0.188, sr 0.176, bs 0.081; Bokmål as ``no`` (it has no
    ``nb`` label); Malay as Indonesian 0.724 (ms 0.238)."""
    rows = by_key(
        lid_en.process(
            table(
                *one("bs", UDHR["a01.1"]["bs"]),
                *one("nb", UDHR["a01.1"]["nb"], "h"),
                *one("ms", UDHR["a01.1"]["ms"], "i"),
            )
        )
    )
    assert {k: (r["reason"], r["lid_lang"]) for k, r in rows.items() if not k.endswith("/en")} == {
        "g/bs": (None, "hr"),
        "h/nb": (None, "no"),
        "i/ms": (None, "id"),
    }
    separate = Lid(LidConfig(varieties=[], related={}), anchor_lang="en")
    separate.setup()
    rows = by_key(
        separate.process(table(*one("bs", UDHR["a01.1"]["bs"]), *one("nb", UDHR["a01.1"]["nb"], "h")))
    )
    assert {rows["g/bs"]["reason"], rows["h/nb"]["reason"]} == {"wrong_lang"}


def test_a_relative_may_outrank_a_language_only_the_way_models_err(lid_en: Lid) -> None:
    """lid.176 reads this Galician paragraph as Spanish (es 0.58, gl 0.292): Spanish and Portuguese may
    outrank Galician. Not the other way: a Galician paragraph under ``pt`` (gl 0.662, pt 0.294: Portuguese
    keeps 0.44 of the top) is a wrong language."""
    galician = [UDHR["a01.1"]["gl"], UDHR["a16.3"]["gl"]]
    rows = by_key(lid_en.process(table(*one("gl", galician[0]), *one("pt", galician[1], "h"))))
    assert (rows["g/gl"]["reason"], rows["g/gl"]["lid_lang"]) == (None, "gl")
    assert rows["h/pt"]["reason"] == "wrong_lang"
    assert rows["h/pt"]["detail"] == "messages[0]: read as gl (p=0.662), pt 0.294"
    assert lid_en.config.relatives("gl") == ["pt", "es", "ast"] and lid_en.config.relatives("pt") == []
    both = Lid(LidConfig(langs={"pt": {"related": ["gl"]}}), anchor_lang="en")
    both.setup()
    assert both.config.relatives("pt") == ["gl"]
    assert by_key(both.process(table(*one("pt", galician[1]))))["g/pt"]["reason"] is None


def test_in_a_short_message_any_language_but_the_anchor_s_may_outrank_it(lid_en: Lid) -> None:
    """ "és" makes short Catalan read as Hungarian (hu 0.621, ca 0.368): under ``short_chars`` ca needs
    only ``short_ratio`` (0.3) of the top probability. English above the row language is never
    accepted: a half-translated turn (en 0.41, ca 0.172)."""
    math = "35% de 40 és \\(40 \\times 35 \\div 100 = 14\\).\nLa resta és \\(40 - 14 = 26\\).\nLa resposta és 26."
    mixed = "Vull anar a córrer a Austin aquesta tarda. Please tell me the weather."
    rows = by_key(lid_en.process(table(*one("ca", math), *one("ca", mixed, "h"))))
    assert (rows["g/ca"]["reason"], rows["g/ca"]["lid_lang"]) == (None, "ca")
    assert rows["g/ca"]["lid_prob"] == pytest.approx(0.368 + 0.621 + 0.001, abs=2e-3)
    assert rows["h/ca"]["reason"] == "wrong_lang"
    assert rows["h/ca"]["detail"] == "messages[0]: read as en (p=0.410), ca 0.172"
    long_only = Lid(LidConfig(short_chars=0), anchor_lang="en")
    long_only.setup()
    assert by_key(long_only.process(table(*one("ca", math))))["g/ca"]["detail"].startswith(
        "messages[0]: read as hu (p=0.621)"
    )


def test_per_language_min_prob(lid_en: Lid) -> None:
    vague = "Paris Berlin London Madrid Rome"
    assert by_key(lid_en.process(table(*one("de", vague))))["g/de"]["reason"] == "low_prob"
    lenient = Lid(LidConfig(langs={"deu": {"min_prob": 0.3}}), anchor_lang="en")
    lenient.setup()
    assert lenient.config.for_lang("de") == (0.3, 0.1)
    assert by_key(lenient.process(table(*one("de", vague))))["g/de"]["reason"] is None


def test_only_messages_not_read_surely_are_read_again_with_their_top_labels() -> None:
    stage = Lid(LidConfig(top_k=7), anchor_lang="en")
    stage.setup()
    stage._model = counting = CountingModel(stage._model)
    catalan = "Com fusiono dos diccionaris en Pitó?"
    stage.process(
        table(*one("de", DE[0]["content"]), *one("ca", catalan, "h"), *one("es", ES[1]["content"], "i"))
    )
    assert [(len(lines), k) for lines, k in zip(counting.calls, counting.ks, strict=True)] == [(5, 1), (1, 7)]
    assert counting.calls[1] == [f"{catalan}\n".encode()]


def test_language_groups_in_the_config_are_checked_and_normalised() -> None:
    config = LidConfig(
        related={"cat": ["spa", "glg", "es"]}, varieties=[["hr", "bos"]], langs={"cat": {"min_prob": 0.2}}
    )
    assert (config.related, config.varieties, list(config.langs)) == (
        {"ca": ["es", "gl"]},
        [["hr", "bs"]],
        ["ca"],
    )
    with pytest.raises(ConfigError, match=r"^lid\.related: unknown language code 'xx'") as refused:
        load_config(BuildConfig, None, flags={}, overrides=["lid.related={ca: [es, xx]}"])
    assert "\n" not in str(refused.value)


def test_default_model_is_the_shipped_lid176() -> None:
    assert default_model_path().name == "lid.176.ftz"
    assert default_model_path().is_file()


def test_judge_before_setup_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        Lid(LidConfig()).process(table(row("g", "en", EN), row("g", "de", DE)))

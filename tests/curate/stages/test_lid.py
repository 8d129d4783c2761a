from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from curate.config import BuildConfig, LidConfig
from curate.stages.lid import AnchorLid, Lid, default_model_path, language_bearing
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
    # The row is read as a whole: "Es wird den ganzen Tag sonnig und warm." alone is de 0.989, the row 0.999.
    assert rows["g/de"]["lid_prob"] == pytest.approx(0.9994, abs=1e-3)


def test_a_row_is_judged_on_its_letters_together() -> None:
    """lid.176 reads the worked answer alone as Hungarian (hu 0.86: "és" and the digits); digits and
    operators out and the row read together, it is Catalan. The answer said twice counts once."""
    stage = Lid(LidConfig(second_opinion=None), anchor_lang="en")
    stage.setup()
    question = (
        "Hi ha 17 adhesius en la taula. Liam posa 8 més adhesius en la taula. Quants adhesius hi ha ara?"
    )
    english = (
        "There are 17 stickers on the table. Liam puts 8 more stickers on the table. How many are there now?"
    )
    answers = {"chosen": [msg("assistant", "17 + 8 = 25. La resposta és 25.")]}
    answers["rejected"] = [msg("assistant", "17 + 8 = 24. La resposta és 24.")]
    anchor = row("g", "en", [msg("user", english)], chosen=[msg("assistant", "The answer is 25.")])
    rows = by_key(stage.process(table(anchor, row("g", "ca", [msg("user", question)], **answers))))
    assert (rows["g/ca"]["reason"], rows["g/ca"]["lid_lang"]) == (None, "ca")
    assert rows["g/ca"]["lid_prob"] >= 0.8
    words, letters = language_bearing(pa.array(["17 + 8 = 25. La resposta és 25.", "x² = 4 (2)", ""]))
    assert words.to_pylist() == ["La resposta és", "x²", ""]
    assert letters.tolist() == [12, 1, 0]


def test_wrong_lang(lid: Lid) -> None:
    """A row reads as another language, or one of its long messages (``short_chars`` letters) does alone:
    an English answer inside a German row. A short one (the German row's rejected answer) counts only in
    the row's reading."""
    prompt = [msg("user", "Wie ist das Wetter morgen in Paris?")]
    english = msg(
        "assistant",
        "It will be sunny and very warm the whole day, with a light breeze from the south, a few clouds in the "
        "evening and no rain at all, anywhere.",
    )
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
        "p/en": (None, "en"),
        "p/de": (None, "de"),
    }
    assert rows["g/de"]["detail"].startswith("messages[1] alone (107 letters): read as en (p=")
    assert rows["g/ca"]["detail"].startswith("row (messages[0], messages[1]; 48 letters): read as es")
    assert set(result.rejected.column("stage").to_pylist()) == {"lid"}


def test_low_prob_and_wrong_lang_outranks_it(lid: Lid) -> None:
    vague = msg("assistant", "Paris Berlin London Madrid Rome")
    rows = by_key(
        lid.process(
            table(
                row("g", "en", EN),
                row("g", "de", [vague]),
                row("g", "fr", [msg("user", "What will the weather be in Paris tomorrow?"), vague]),
            )
        )
    )
    assert rows["g/de"]["reason"] == "low_prob"
    assert rows["g/de"]["lid_lang"] == "de"
    assert rows["g/de"]["lid_prob"] < 0.5
    assert rows["g/de"]["detail"].startswith("row (messages[0]; 27 letters): read as de (p=0.4")
    assert rows["g/fr"]["reason"] == "wrong_lang"
    assert rows["g/fr"]["lid_lang"] == "en"


def test_min_prob_comes_from_config() -> None:
    strict = Lid(LidConfig(min_prob=0.999, second_opinion=None))
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
    assert rows["h/fr"]["detail"].startswith(
        "the group's anchor was rejected (row (messages[0], messages[1]; "
    )
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
    # German only: each row's messages read together
    assert sorted(counting.calls[0]) == sorted(
        f"{' '.join(m['content'] for m in r)}\n".encode() for r in (DE, DE[:1])
    )
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
    # 5 rows, each read as one text; the two English rows are the same: read once
    assert [len(lines) for lines in counting.calls] == [4]
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
    assert rows["g/fr"]["detail"].startswith("row (messages[0]; 26 letters): read as __label__eml")


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
    """lid.176 alone: the rules of the top-k reading, without a second opinion."""
    stage = Lid(LidConfig(second_opinion=None), anchor_lang="en")
    stage.setup()
    return stage


def one(lang: str, text: str, group: str = "g") -> list[dict[str, Any]]:
    """A group of an English anchor (never judged here) and one translation of a single message."""
    return [row(group, "en", EN), row(group, lang, [msg("assistant", text)])]


def test_a_close_relative_may_outrank_the_row_language() -> None:
    """lid.176 reads this Catalan as Spanish (es 0.467, ca 0.163, pt 0.122, gl 0.106). With Spanish,
    Portuguese and Galician as Catalan's relatives (``lid.related``; read as a long text here), ca keeps
    0.163 / 0.467 >= 0.1 of the top one and the reading rests on ca and its relatives' 0.86. A Spanish
    paragraph under ca (es 0.928, ca 0.028) stays a wrong language."""
    settings: dict[str, Any] = {
        "related": {"ca": ["es", "pt", "gl"]},
        "short_chars": 0,
        "second_opinion": None,
    }
    stage = Lid(LidConfig(**settings), anchor_lang="en")
    stage.setup()
    catalan = "Com fusiono dos diccionaris en Pitó?"
    spanish = UDHR["a04.1"]["es"]
    rows = by_key(stage.process(table(*one("ca", catalan), *one("ca", spanish, "h"))))
    assert (rows["g/ca"]["reason"], rows["g/ca"]["lid_lang"]) == (None, "ca")
    assert rows["g/ca"]["lid_prob"] == pytest.approx(0.467 + 0.163 + 0.122 + 0.106, abs=2e-3)
    assert rows["h/ca"]["reason"] == "wrong_lang"
    assert rows["h/ca"]["detail"] == "row (messages[0]; 105 letters): read as es (p=0.928), ca 0.028"
    strict = Lid(LidConfig(**settings, langs={"ca": {"related_ratio": 0.5}}), anchor_lang="en")
    alone = Lid(LidConfig(**{**settings, "related": {}}), anchor_lang="en")
    for other in (strict, alone):
        other.setup()
        assert by_key(other.process(table(*one("ca", catalan))))["g/ca"]["reason"] == "wrong_lang"


def test_the_default_relatives_are_lid176_s_measured_confusions() -> None:
    """``curate/lid_relatives.py``, measured on the UDHR: Galician is read as Portuguese and Spanish,
    Slovene as Croatian, Esperanto's offshoot Ido as Esperanto; never the reverse."""
    config = LidConfig()
    assert config.relatives("gl") == ["pt", "es"] and config.relatives("sl") == ["hr"]
    assert config.relatives("io")[0] == "eo"
    assert config.relatives("pt") == config.relatives("eo") == []


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
    separate = Lid(LidConfig(varieties=[], related={}, second_opinion=None), anchor_lang="en")
    separate.setup()
    rows = by_key(
        separate.process(table(*one("bs", UDHR["a01.1"]["bs"]), *one("nb", UDHR["a01.1"]["nb"], "h")))
    )
    assert {rows["g/bs"]["reason"], rows["h/nb"]["reason"]} == {"wrong_lang"}


def test_a_relative_may_outrank_a_language_only_the_way_models_err() -> None:
    """lid.176 reads this Galician paragraph as Spanish (es 0.58, gl 0.292): Spanish and Portuguese may
    outrank Galician. Not the other way: a Galician paragraph under ``pt`` (gl 0.662, pt 0.294: Portuguese
    keeps 0.44 of the top) is a wrong language (read as a long text here: it has 90 letters)."""
    stage = Lid(LidConfig(second_opinion=None, short_chars=50), anchor_lang="en")
    stage.setup()
    galician = [UDHR["a01.1"]["gl"], UDHR["a16.3"]["gl"]]
    rows = by_key(stage.process(table(*one("gl", galician[0]), *one("pt", galician[1], "h"))))
    assert (rows["g/gl"]["reason"], rows["g/gl"]["lid_lang"]) == (None, "gl")
    assert rows["h/pt"]["reason"] == "wrong_lang"
    assert rows["h/pt"]["detail"] == "row (messages[0]; 90 letters): read as gl (p=0.662), pt 0.294"
    assert stage.config.relatives("gl") == ["pt", "es"] and stage.config.relatives("pt") == []
    both = Lid(LidConfig(langs={"pt": {"related": ["gl"]}}, second_opinion=None), anchor_lang="en")
    both.setup()
    assert both.config.relatives("pt") == ["gl"]
    assert by_key(both.process(table(*one("pt", galician[1]))))["g/pt"]["reason"] is None


def test_the_second_opinion_decides_where_lid176_is_torn() -> None:
    """Apertium's Galician reads as Portuguese to lid.176 (pt 0.91, gl 0.06), CLD3 reads it as Galician;
    the short Galician paragraph under ``pt`` passes lid.176's short-text rule (pt keeps 0.44 of gl) and
    CLD3 reads it as Galician; Slovene under ``hr`` reads as Croatian (hr 0.81, sl 0.16), CLD3 says
    Slovene. English is never excused: a half-translated row stays wrong."""
    galician = "Diego tivo 16 galletas e perdeu 10 deles. Cantas cervas de galletas ha agora? A resposta é 6."
    slovene = udhr.load_extract(langs=("sl",))["a15.2"]["sl"]
    mixed = "Vull anar a córrer a Austin aquesta tarda. Please tell me the weather."
    batch = table(
        *one("gl", galician),
        *one("pt", UDHR["a16.3"]["gl"], "h"),
        *one("hr", slovene, "i"),
        *one("ca", mixed, "j"),
    )
    alone = Lid(LidConfig(second_opinion=None), anchor_lang="en")
    both = Lid(LidConfig(), anchor_lang="en")
    for stage in (alone, both):
        stage.setup()
    found = {name: by_key(stage.process(batch)) for name, stage in (("alone", alone), ("both", both))}
    reasons = {
        name: {k: r["reason"] for k, r in rows.items() if not k.endswith("/en")}
        for name, rows in found.items()
    }
    assert reasons == {
        "alone": {"g/gl": "wrong_lang", "h/pt": None, "i/hr": None, "j/ca": "wrong_lang"},
        "both": {"g/gl": None, "h/pt": "wrong_lang", "i/hr": "wrong_lang", "j/ca": "wrong_lang"},
    }
    assert found["both"]["g/gl"]["lid_lang"] == "gl"
    assert "; cld3 read it as sl (p=0.9" in found["both"]["i/hr"]["detail"]


def test_in_a_short_message_any_language_but_the_anchor_s_may_outrank_it(lid_en: Lid) -> None:
    """ "és" makes short Catalan read as Hungarian (hu 0.621, ca 0.368 with its digits; ca 0.506, hu 0.486
    once they are out): under ``short_chars`` ca needs only ``short_ratio`` (0.3) of the top probability.
    English above the row language is never accepted: a half-translated turn (en 0.41, ca 0.172)."""
    math = "35% de 40 és \\(40 \\times 35 \\div 100 = 14\\).\nLa resta és \\(40 - 14 = 26\\).\nLa resposta és 26."
    mixed = "Vull anar a córrer a Austin aquesta tarda. Please tell me the weather."
    rows = by_key(lid_en.process(table(*one("ca", math), *one("ca", mixed, "h"))))
    assert (rows["g/ca"]["reason"], rows["g/ca"]["lid_lang"]) == (None, "ca")
    assert rows["h/ca"]["reason"] == "wrong_lang"
    assert rows["h/ca"]["detail"] == "row (messages[0]; 56 letters): read as en (p=0.410), ca 0.172"
    hungarian = "Ez a mondat magyarul van írva, és nem katalánul."
    rows = by_key(lid_en.process(table(*one("ca", hungarian))))
    assert rows["g/ca"]["reason"] == "wrong_lang"


def test_per_language_min_prob(lid_en: Lid) -> None:
    vague = "Paris Berlin London Madrid Rome"
    assert by_key(lid_en.process(table(*one("de", vague))))["g/de"]["reason"] == "low_prob"
    lenient = Lid(LidConfig(langs={"deu": {"min_prob": 0.3}}, second_opinion=None), anchor_lang="en")
    lenient.setup()
    assert lenient.config.for_lang("de") == (0.3, 0.1)
    assert by_key(lenient.process(table(*one("de", vague))))["g/de"]["reason"] is None


def test_only_messages_not_read_surely_are_read_again_with_their_top_labels() -> None:
    stage = Lid(LidConfig(top_k=7, second_opinion=None), anchor_lang="en")
    stage.setup()
    stage._model = counting = CountingModel(stage._model)
    catalan = "Com fusiono dos diccionaris en Pitó?"
    stage.process(
        table(*one("de", DE[0]["content"]), *one("ca", catalan, "h"), *one("es", ES[1]["content"], "i"))
    )
    assert [(len(lines), k) for lines, k in zip(counting.calls, counting.ks, strict=True)] == [(4, 2), (1, 7)]
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


def test_a_batch_of_rows_read_as_their_language_with_a_rival_only() -> None:
    """Every row reads as its language, one with a rival holding more than a tenth of it (ca 0.61, hu
    0.19): the second opinion is asked, nothing is read with the top labels, and the row is kept."""
    stage = Lid(LidConfig(), anchor_lang="en")
    stage.setup()
    prompt = "Diego va recollir 2 ous en dilluns i 7 ous en dimarts. Quants ous recollir en tot?"
    english = "Diego collected 2 eggs on Monday and 7 eggs on Tuesday. How many eggs did he collect in all?"
    answers = {"chosen": [msg("assistant", "2 + 7 = 9. La resposta és 9.")]}
    answers["rejected"] = [msg("assistant", "2 + 7 = 19. La resposta és 19.")]
    batch = table(
        row("g", "en", [msg("user", english)], chosen=[msg("assistant", "The answer is 9.")]),
        row("g", "ca", [msg("user", prompt)], **answers),
    )
    rows = by_key(stage.process(batch))
    assert (rows["g/ca"]["reason"], rows["g/ca"]["lid_lang"]) == (None, "ca")

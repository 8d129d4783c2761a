from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from curate.config import StructureConfig
from curate.stages.base import StageResult
from curate.stages.structure import Structure, number_values
from schemas import PARALLEL_SCHEMA
from tests.curate.rows import parallel_row as row
from tests.curate.rows import table


def msg(role: str, content: str, *, tool_calls: list[dict[str, Any]] | str | None = None) -> dict[str, Any]:
    calls = json.dumps(tool_calls) if isinstance(tool_calls, list) else tool_calls
    return {"role": role, "content": content, "tool_calls": calls, "tool_call_id": None, "name": None}


def run(*rows: dict[str, Any], config: StructureConfig | None = None) -> StageResult:
    return Structure(config or StructureConfig()).process(table(*rows))


def outcome(result: StageResult) -> dict[str, str | None]:
    """``group/lang`` → reason (None when kept)."""
    out: dict[str, str | None] = {f"{r['group_id']}/{r['lang']}": None for r in result.kept.to_pylist()}
    out |= {f"{r['group_id']}/{r['lang']}": r["reason"] for r in result.rejected.to_pylist()}
    return out


def detail(result: StageResult, key: str) -> str:
    return next(r["detail"] for r in result.rejected.to_pylist() if f"{r['group_id']}/{r['lang']}" == key)


WEATHER_CALL = [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
]

CHAT = [
    msg("system", "You are a helpful assistant."),
    msg("user", "How do I list files? Use `ls -la` in the shell."),
    msg("assistant", "Run this:\n```bash\nls -la /tmp\n```\nThen check `echo $?`."),
]
CHAT_ES = [
    msg("system", "Eres un asistente útil."),
    msg("user", "¿Cómo listo archivos? Usa `ls -la` en la terminal."),
    msg("assistant", "Ejecuta esto:\n```bash\nls -la /tmp\n```\nLuego comprueba `echo $?`."),
]
TOOLS = [
    msg("user", "What is the weather in Paris?"),
    msg("assistant", "", tool_calls=WEATHER_CALL),
    {
        "role": "tool",
        "content": '{"temp_c": 21}',
        "tool_calls": None,
        "tool_call_id": "call_1",
        "name": "get_weather",
    },
    msg("assistant", "It is 21 °C in Paris."),
]
MATH = [
    msg("user", "A shop sold 1234.5 kg of rice at 2 dollars per kg. How much did it earn?"),
    msg("assistant", "It earned 1,234.5 × 2 = 2,469 dollars. The answer is 2469."),
]


def with_content(messages: list[dict[str, Any]], index: int, content: str) -> list[dict[str, Any]]:
    return [{**m, "content": content} if i == index else m for i, m in enumerate(messages)]


def with_calls(
    messages: list[dict[str, Any]], index: int, calls: list[dict[str, Any]] | str | None
) -> list[dict[str, Any]]:
    encoded = json.dumps(calls) if isinstance(calls, list) else calls
    return [{**m, "tool_calls": encoded} if i == index else m for i, m in enumerate(messages)]


def test_faithful_translations_are_kept() -> None:
    tools_de = with_content(
        with_content(TOOLS, 0, "Wie ist das Wetter in Paris?"), 3, "Es sind 21 °C in Paris."
    )
    math_de = with_content(
        with_content(
            MATH, 0, "Ein Laden verkaufte 1234,5 kg Reis zu 2 Dollar pro kg. Wie viel verdiente er?"
        ),
        1,
        "Er verdiente 1.234,5 × 2 = 2.469 Dollar. Die Antwort ist 2469.",
    )
    result = run(
        row("chat", "en", CHAT),
        row("chat", "es", CHAT_ES),
        row("tools", "en", TOOLS),
        row("tools", "de", tools_de),
        row("math", "en", MATH, task="math"),
        row("math", "de", math_de, task="math"),
    )
    assert outcome(result) == dict.fromkeys(
        ["chat/en", "chat/es", "tools/en", "tools/de", "math/en", "math/de"], None
    )


def test_roles_changed() -> None:
    result = run(
        row("g", "en", CHAT),
        row("g", "de", CHAT[1:]),
        row("g", "fr", [CHAT[0], msg("assistant", CHAT[1]["content"]), CHAT[2]]),
    )
    assert outcome(result) == {"g/en": None, "g/de": "roles_changed", "g/fr": "roles_changed"}
    assert (
        detail(result, "g/fr")
        == "messages: roles ['system', 'assistant', 'assistant'] vs anchor ['system', 'user', 'assistant']"
    )


def test_preference_rows_compare_chosen_and_rejected() -> None:
    prompt = [msg("user", "Say hi with `print`.")]
    chosen = [msg("assistant", "Use `print('hi')`.")]
    rejected = [msg("assistant", "Use `echo hi`.")]
    result = run(
        row("p", "en", prompt, chosen=chosen, rejected=rejected),
        row("p", "de", prompt, chosen=[msg("assistant", "Nutze `print('hi')`.")], rejected=rejected),
        row("p", "fr", prompt, chosen=chosen, rejected=[msg("assistant", "Utilise `echo salut`.")]),
        row("p", "es", prompt, chosen=chosen, rejected=[]),
    )
    assert outcome(result) == {"p/en": None, "p/de": None, "p/fr": "code_changed", "p/es": "roles_changed"}
    assert detail(result, "p/fr") == "rejected[0]: code span 0: '`echo salut`' vs anchor '`echo hi`'"


@pytest.mark.parametrize(
    ("assistant", "expected"),
    [
        ("Ejecuta esto:\n```bash\nls -la /var\n```\nLuego comprueba `echo $?`.", "code span 0"),
        ("Ejecuta esto:\n```bash\nls -la /tmp\n```\nLuego comprueba `eco $?`.", "code span 1"),
        ("Ejecuta esto: ls -la /tmp. Luego comprueba `echo $?`.", "1 code spans vs anchor 2"),
        ("Comprueba `echo $?` tras:\n```bash\nls -la /tmp\n```", "code span 0"),
    ],
    ids=["block_edited", "inline_translated", "fence_lost", "reordered"],
)
def test_code_changed(assistant: str, expected: str) -> None:
    result = run(row("g", "en", CHAT), row("g", "es", with_content(CHAT_ES, 2, assistant)))
    assert outcome(result) == {"g/en": None, "g/es": "code_changed"}
    assert detail(result, "g/es").startswith(f"messages[2]: {expected}")


@pytest.mark.parametrize(
    "calls",
    [
        [
            {
                "id": "call_9",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
        [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{ "city":"Paris" }'},
            }
        ],
    ],
    ids=["arguments_as_json_text_other_id", "whitespace"],
)
def test_equal_tool_calls_are_kept(calls: list[dict[str, Any]]) -> None:
    result = run(row("t", "en", TOOLS), row("t", "de", with_calls(TOOLS, 1, calls)))
    assert outcome(result) == {"t/en": None, "t/de": None}


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        ([{"function": {"name": "obtener_clima", "arguments": {"city": "Paris"}}}], "call 0: "),
        ([{"function": {"name": "get_weather", "arguments": {"ciudad": "París"}}}], "call 0: "),
        ([{"function": {"name": "get_weather", "arguments": '{"city": "Paris"'}}], "tool_calls not valid"),
        ('[{"function": ', "tool_calls not valid"),
        ('{"function": {"name": "get_weather"}}', "tool_calls not valid"),
        (None, "0 tool calls vs anchor 1"),
    ],
    ids=["name", "arguments", "arguments_not_json", "not_json", "not_a_list", "dropped"],
)
def test_tool_calls_changed(calls: list[dict[str, Any]] | str | None, expected: str) -> None:
    # Not validated: tool calls that break the contract (not JSON, not a list) must become rejects too.
    rows = [row("t", "en", TOOLS), row("t", "de", with_calls(TOOLS, 1, calls))]
    result = Structure(StructureConfig()).process(pa.Table.from_pylist(rows, schema=PARALLEL_SCHEMA))
    assert outcome(result) == {"t/en": None, "t/de": "tool_calls_changed"}
    assert detail(result, "t/de").startswith(f"messages[1]: {expected}")


@pytest.mark.parametrize(
    "answer",
    [
        "Ganó 1 234,5 × 2 = 2 469 dólares. La respuesta es 2469.",
        "Ganó 1.234,5 × 2 = 2.469 dólares. La respuesta es 2469.",
        "La respuesta es 2469: ganó 1234.50 × 2 = 2,469 dólares.",
        "ربح ١٬٢٣٤٫٥ × ٢ = ٢٬٤٦٩ دولارًا. الجواب هو ٢٤٦٩.",
    ],
    ids=["space_grouping", "decimal_comma", "reordered", "arabic_indic_digits"],
)
def test_math_numbers_in_any_locale_are_kept(answer: str) -> None:
    result = run(
        row("m", "en", MATH, task="math"), row("m", "ar", with_content(MATH, 1, answer), task="math")
    )
    assert outcome(result) == {"m/en": None, "m/ar": None}


def test_numbers_changed() -> None:
    wrong = with_content(MATH, 1, "Ganó 1.234,5 × 2 = 2.496 dólares. La respuesta es 2469.")
    result = run(
        row("m", "en", MATH, task="math"),
        row("m", "es", wrong, task="math"),
        row("c", "en", MATH, task="chat"),
        row("c", "es", wrong, task="chat"),
        row("q", "en", MATH, task="math"),
        row("q", "es", with_content(MATH, 0, "Una tienda vendió 99 kg de arroz."), task="math"),
    )
    assert outcome(result) == {
        "m/en": None,
        "m/es": "numbers_changed",
        "c/en": None,
        "c/es": None,
        "q/en": None,
        "q/es": None,
    }
    assert detail(result, "m/es") == "messages[1]: numbers missing ['2469'], added ['2496']"


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("1,234.5 and 1.234,5 and 1 234,5 and 1\u202f234,5 and 1'234.5", ["1234.5"] * 5),
        ("0.5 0,5 3.14159 1,234,567 1.234.567,89", ["0.5", "0.5", "3.14159", "1234567", "1234567.89"]),
        ("between 3 4 and 10, 20. The answer is 42.", ["3", "4", "10", "20", "42"]),
        ("١٢٣٤٫٥ and ۱۲ and १२", ["1234.5", "12", "12"]),
    ],
)
def test_number_values(text: str, values: list[str]) -> None:
    assert number_values(text) == {Decimal(v): values.count(v) for v in values}


@pytest.mark.parametrize(
    ("switch", "translation"),
    [
        ("code", with_content(CHAT_ES, 1, "¿Cómo listo archivos? Usa `ls -l` en la terminal.")),
        ("tool_calls", with_calls(TOOLS, 1, [{"function": {"name": "other", "arguments": {}}}])),
        ("numbers", with_content(MATH, 1, "The answer is 7.")),
    ],
)
def test_each_check_can_be_switched_off(switch: str, translation: list[dict[str, Any]]) -> None:
    anchor = {"code": CHAT, "tool_calls": TOOLS, "numbers": MATH}[switch]
    rows = (row("g", "en", anchor, task="math"), row("g", "de", translation, task="math"))
    assert outcome(run(*rows))["g/de"] is not None
    assert outcome(run(*rows, config=StructureConfig(**{switch: False}))) == {"g/en": None, "g/de": None}


def test_anchors_are_never_rejected_and_rows_are_conserved() -> None:
    rows = [
        row("a", "en", TOOLS),
        row("a", "de", TOOLS[:2]),
        row("b", "en", with_calls(TOOLS, 1, [{"function": {"name": "get_weather", "arguments": "{bad"}}])),
        row("b", "fr", with_calls(TOOLS, 1, [])),
        row("c", "en", MATH, task="math"),
    ]
    result = run(*rows)
    assert sorted(result.kept.column("group_id").to_pylist()) == ["a", "b", "c"]
    assert all(result.kept.column("is_anchor").to_pylist())
    assert result.rejected.column("stage").to_pylist() == ["structure", "structure"]
    assert result.kept.num_rows + result.rejected.num_rows == len(rows)

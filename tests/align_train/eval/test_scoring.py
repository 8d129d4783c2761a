"""Answer extraction on hand-made edge cases: locale digits and separators, tool-call JSON."""

from __future__ import annotations

import pytest

from align_train.eval.scoring import (
    SCORERS,
    final_number,
    first_tool_call,
    generated_tool_calls,
    last_assistant,
    reference_tool_calls,
)
from schemas import canonical_json
from tests.align_train.corpus import conversation, message


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("The answer is 28,000.", "28000"),  # English thousands separator, sentence full stop
        ("La respuesta es 28.000.", "28000"),  # Spanish thousands separator
        ("La respuesta es 3,5.", "3.5"),  # decimal comma
        ("The answer is 3.25", "3.25"),
        ("1,234,567.5 in total", "1234567.5"),
        ("1.234.567,5 en total", "1234567.5"),
        ("Il y a 28 000 bocaux", "28000"),  # space as thousands separator
        ("28\u202f000", "28000"),  # narrow no-break space (French typography)
        ("1'000'000", "1000000"),  # Swiss apostrophe
        ("0.125 of the cake", "0.125"),  # a leading 0 is never a thousands group
        ("الجواب هو ٢٨٬٠٠٠", "28000"),  # Arabic-Indic digits and the Arabic thousands sign
        ("١٬٢٣٤٫٥", "1234.5"),  # Arabic decimal separator
        ("उत्तर ४२ है", "42"),  # Devanagari digits
        ("答えは４２です", "42"),  # full-width digits
        ("উত্তর হল ৭", "7"),  # Bengali digits
        ("The temperature is −5 degrees.", "-5"),  # Unicode minus sign
        ("It costs -12.50 dollars", "-12.5"),
        ("pages 3-5", "5"),  # a hyphen after a digit is a range, not a sign
        ("42.0", "42"),
        ("so x² = 9, and x = 3²", "3"),  # superscripts are not digits
        ("Step 1: 48/2 = 24. Step 2: 24 + 48 = 72. #### 72", "72"),
        ("3 4", "4"),  # a single space joins only groups of three digits
        ("no number here", None),
    ],
)
def test_final_number(text: str, number: str | None) -> None:
    assert final_number(text) == number


def _reference(*functions: dict) -> dict:
    calls = [{"id": f"call{i}", "type": "function", "function": f} for i, f in enumerate(functions)]
    return message("assistant", "", tool_calls=canonical_json(calls))


def test_tool_calls_match_whatever_the_key_order_and_encoding() -> None:
    reference = reference_tool_calls(_reference({"name": "add", "arguments": {"a": 2, "b": 10.0}}))
    assert reference == '[{"arguments":{"a":2,"b":10},"name":"add"}]'
    same = [
        '<tool_call>\n{"name": "add", "arguments": {"b": 10, "a": 2}}\n</tool_call>',  # key order
        '<tool_call>{"arguments": {"a": 2.0, "b": 10}, "name": "add"}</tool_call>',  # 2.0 for 2
        '<tool_call>{"name": "add", "arguments": "{\\"b\\": 10, \\"a\\": 2}"}</tool_call>',  # as a string
        '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 10}}',  # generation cut before the close
        '{"name": "add", "parameters": {"a": 2, "b": 10}}',  # Llama 3.1's bare JSON
        'Let me add them.\n<tool_call>{"name": "add", "arguments": {"a": 2, "b": 10}}</tool_call>',
    ]
    for text in same:
        assert generated_tool_calls(text) == reference, text
    different = {
        '<tool_call>{"name": "sum", "arguments": {"a": 2, "b": 10}}</tool_call>': (
            '[{"arguments":{"a":2,"b":10},"name":"sum"}]'
        ),
        '<tool_call>{"name": "add", "arguments": {"a": "2", "b": 10}}</tool_call>': (
            '[{"arguments":{"a":"2","b":10},"name":"add"}]'  # the text "2" is not the number 2
        ),
        '<tool_call>{"name": "add", "arguments": {"a": 2}}</tool_call>': '[{"arguments":{"a":2},"name":"add"}]',
        "The sum is 12.": None,  # no call: no answer, which agrees with nothing
        '<tool_call>{"name": add, "arguments": {}}</tool_call>': None,  # not JSON
        '<tool_call>{"arguments": {"a": 2}}</tool_call>': None,  # no name
    }
    for text, answer in different.items():
        assert generated_tool_calls(text) == answer, text


def test_several_calls_match_in_any_order() -> None:
    weather = {"name": "get_weather", "arguments": {"city": "Austin", "unit": "celsius"}}
    events = {"name": "list_events", "arguments": {"date": "2024-05-01"}}
    reference = reference_tool_calls(_reference(weather, events))
    swapped = "\n".join(f"<tool_call>{canonical_json(f)}</tool_call>" for f in (events, weather))
    assert generated_tool_calls(swapped) == reference
    assert generated_tool_calls(f"<tool_call>{canonical_json(weather)}</tool_call>") != reference


def test_reference_without_a_call_expects_none() -> None:
    assert reference_tool_calls(message("assistant", "I cannot check that.")) == "[]"
    assert reference_tool_calls(message("assistant", "", tool_calls="[{broken")) is None


def test_targets_are_the_final_answer_and_the_first_tool_call() -> None:
    plain = conversation("en", 1)  # user, assistant
    tool = conversation("en", 4)  # system, user, assistant (tool call), tool, assistant
    assert last_assistant(plain) == 1 and first_tool_call(plain) == 1
    assert last_assistant(tool) == 4 and first_tool_call(tool) == 2
    assert last_assistant([message("user", "hi")]) is None
    math = SCORERS["math"]
    assert math.expected(plain[math.target(plain)]) == "7"  # "3 plus 4 is 7."
    calls = SCORERS["tool"]
    assert calls.expected(tool[calls.target(tool)]) == '[{"arguments":{"a":6,"b":13},"name":"add"}]'

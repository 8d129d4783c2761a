"""Arithmetic word problems in English, one and two steps, with varied wording and exactly scorable answers.

Every problem has a short worked answer that ends with its result ("4 × 6 = 24. 24 - 5 = 19. The answer
is 19."), which ``align-train eval``'s math scorer reads as the final number, and a plausible wrong answer in
the same form (a wrong operation, an off-by-a-little result, or a slip in the second step) for preference
pairs. Numbers stay small (sums up to 40, products of one-digit numbers) so that a 135M model can learn the
task in minutes; what is hard for it is the wording, which varies by template, name, object and verb.

Only the standard library is used, and every choice comes from one seeded ``random.Random``, so the same
seed writes the same files byte for byte. Question texts are unique across everything one seed writes, so
no evaluation question is ever a training question.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

# The demo generator's first twenty names, copied rather than imported: the experiment's problems, and so
# docs/results.md, must not change when the demo corpus does.
PEOPLE: tuple[tuple[str, str], ...] = (
    ("Maya", "she"),
    ("Liam", "he"),
    ("Sofia", "she"),
    ("Noah", "he"),
    ("Aisha", "she"),
    ("Mateo", "he"),
    ("Chloe", "she"),
    ("Kenji", "he"),
    ("Priya", "she"),
    ("Lucas", "he"),
    ("Emma", "she"),
    ("Omar", "he"),
    ("Hannah", "she"),
    ("Diego", "he"),
    ("Grace", "she"),
    ("Ravi", "he"),
    ("Zoe", "she"),
    ("Felix", "he"),
    ("Amara", "she"),
    ("Jonas", "he"),
)

# (things, container, containers): things people count, and what holds several of them.
THINGS: tuple[tuple[str, str, str], ...] = (
    ("apples", "basket", "baskets"),
    ("pencils", "box", "boxes"),
    ("stickers", "sheet", "sheets"),
    ("marbles", "bag", "bags"),
    ("cookies", "plate", "plates"),
    ("books", "shelf", "shelves"),
    ("eggs", "carton", "cartons"),
    ("flowers", "vase", "vases"),
    ("cards", "pack", "packs"),
    ("shells", "jar", "jars"),
    ("stamps", "page", "pages"),
    ("oranges", "crate", "crates"),
)


@dataclass(frozen=True)
class Problem:
    """One word problem: the question, its worked answer, a wrong worked answer and the result."""

    kind: str
    question: str
    answer: str
    wrong: str
    result: int


OBJECT = {"she": "her", "he": "him"}


def _who(rng: random.Random) -> tuple[str, str, str]:
    """A name, its subject pronoun and the pronoun capitalised."""
    name, pron = rng.choice(PEOPLE)
    return name, pron, pron.capitalize()


def _say(steps: list[tuple[int, str, int, int]]) -> str:
    """``[(a, "+", b, c), ...]`` as "a + b = c. ... The answer is c."."""
    parts = [f"{a} {op} {b} = {c}." for a, op, b, c in steps]
    return " ".join([*parts, f"The answer is {steps[-1][3]}."])


def _near(rng: random.Random, value: int, *, avoid: set[int]) -> int:
    """A small mistake near ``value``: off by 1, 2 or 10, never negative and never one of ``avoid``."""
    for delta in rng.sample([-10, -2, -1, 1, 2, 10], 6):
        if value + delta >= 0 and value + delta not in avoid:
            return value + delta
    return value + 11


def add(rng: random.Random) -> Problem:
    name, pron, Pron = _who(rng)
    things, _, _ = rng.choice(THINGS)
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    question = rng.choice(
        (
            f"{name} has {a} {things}. {Pron} buys {b} more {things}. How many {things} does {name} have now?",
            f"{name} collected {a} {things} on Monday and {b} {things} on Tuesday. How many {things} did {pron} collect in all?",
            f"There are {a} {things} on the table. {name} puts {b} more {things} on the table. How many {things} are on the table now?",
            f"{name} had {a} {things}. A friend gave {name} {b} {things}. How many {things} does {name} have?",
        )
    )
    c = a + b
    wrong = (
        _say([(a, "-", b, a - b)])
        if a > b and rng.random() < 0.5
        else _say([(a, "+", b, _near(rng, c, avoid={c}))])
    )
    return Problem("add", question, _say([(a, "+", b, c)]), wrong, c)


def subtract(rng: random.Random) -> Problem:
    name, pron, Pron = _who(rng)
    things, _, _ = rng.choice(THINGS)
    a = rng.randint(8, 40)
    b = rng.randint(2, a - 2)
    question = rng.choice(
        (
            f"{name} has {a} {things}. {Pron} gives {b} {things} to a friend. How many {things} does {name} have left?",
            f"There were {a} {things} in the kitchen. {name} took {b} of them. How many {things} are still in the kitchen?",
            f"{name} had {a} {things} and lost {b} of them. How many {things} does {pron} have now?",
            f"A shop had {a} {things}. It sold {b} {things}. How many {things} does the shop have left?",
        )
    )
    c = a - b
    wrong = (
        _say([(a, "+", b, a + b)]) if rng.random() < 0.5 else _say([(a, "-", b, _near(rng, c, avoid={c}))])
    )
    return Problem("subtract", question, _say([(a, "-", b, c)]), wrong, c)


def multiply(rng: random.Random) -> Problem:
    name, pron, _Pron = _who(rng)
    things, box, boxes = rng.choice(THINGS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    question = rng.choice(
        (
            f"{name} has {a} {boxes} with {b} {things} in each {box}. How many {things} does {name} have?",
            f"Each {box} holds {b} {things}. {name} fills {a} {boxes}. How many {things} are in the {boxes}?",
            f"{name} buys {a} {boxes} of {things}. There are {b} {things} in every {box}. How many {things} does {pron} buy?",
        )
    )
    c = a * b
    wrong = (
        _say([(a, "+", b, a + b)]) if rng.random() < 0.5 else _say([(a, "×", b, _near(rng, c, avoid={c}))])
    )
    return Problem("multiply", question, _say([(a, "×", b, c)]), wrong, c)


def divide(rng: random.Random) -> Problem:
    name, _pron, _Pron = _who(rng)
    things, box, boxes = rng.choice(THINGS)
    b, c = rng.randint(2, 9), rng.randint(2, 9)
    a = b * c
    question = rng.choice(
        (
            f"{name} has {a} {things} and puts them into {b} {boxes}, the same number in each. How many {things} are in each {box}?",
            f"{name} shares {a} {things} equally among {b} friends. How many {things} does each friend get?",
            f"There are {a} {things}, and each {box} holds {b} of them. How many {boxes} does {name} need?",
        )
    )
    wrong = (
        _say([(a, "-", b, a - b)]) if rng.random() < 0.5 else _say([(a, "/", b, _near(rng, c, avoid={c}))])
    )
    return Problem("divide", question, _say([(a, "/", b, c)]), wrong, c)


def multiply_then_add(rng: random.Random) -> Problem:
    name, pron, _Pron = _who(rng)
    things, box, boxes = rng.choice(THINGS)
    a, b, d = rng.randint(2, 6), rng.randint(2, 6), rng.randint(2, 9)
    question = rng.choice(
        (
            f"{name} has {a} {boxes} with {b} {things} in each {box} and {d} more loose {things}. How many {things} does {name} have?",
            f"{name} buys {a} {boxes} of {things} with {b} in each {box}. A friend gives {OBJECT[pron]} {d} more {things}. How many {things} does {name} have now?",
        )
    )
    p = a * b
    c = p + d
    wrong = _say([(a, "×", b, p), (p, "+", d, _near(rng, c, avoid={c}))])
    return Problem("multiply_then_add", question, _say([(a, "×", b, p), (p, "+", d, c)]), wrong, c)


def multiply_then_subtract(rng: random.Random) -> Problem:
    name, pron, Pron = _who(rng)
    things, box, boxes = rng.choice(THINGS)
    a, b = rng.randint(2, 6), rng.randint(2, 6)
    p = a * b
    d = rng.randint(1, p - 1)
    question = rng.choice(
        (
            f"{name} has {a} {boxes} with {b} {things} in each {box}. {Pron} gives away {d} {things}. How many {things} does {pron} have left?",
            f"{name} buys {a} {boxes} of {things}, {b} in each {box}, and then loses {d} {things}. How many {things} does {name} have now?",
        )
    )
    c = p - d
    wrong = _say([(a, "×", b, p), (p, "+", d, p + d)])
    return Problem("multiply_then_subtract", question, _say([(a, "×", b, p), (p, "-", d, c)]), wrong, c)


def add_then_subtract(rng: random.Random) -> Problem:
    name, _pron, Pron = _who(rng)
    things, _, _ = rng.choice(THINGS)
    a, b = rng.randint(3, 20), rng.randint(2, 15)
    s = a + b
    d = rng.randint(1, s - 1)
    question = rng.choice(
        (
            f"{name} has {a} {things}. {Pron} finds {b} more {things} and then gives {d} {things} away. How many {things} does {name} have now?",
            f"There are {a} {things} in a box. {name} adds {b} {things} and then takes out {d}. How many {things} are in the box?",
        )
    )
    c = s - d
    wrong = _say([(a, "+", b, s), (s, "-", d, _near(rng, c, avoid={c}))])
    return Problem("add_then_subtract", question, _say([(a, "+", b, s), (s, "-", d, c)]), wrong, c)


ONE_STEP: tuple[Callable[[random.Random], Problem], ...] = (add, subtract, multiply, divide)
TWO_STEP: tuple[Callable[[random.Random], Problem], ...] = (
    multiply_then_add,
    multiply_then_subtract,
    add_then_subtract,
)


def problems(rng: random.Random, count: int, *, two_step_share: float, seen: set[str]) -> list[Problem]:
    """``count`` problems whose questions are not in ``seen`` (which is updated), about ``two_step_share``
    of them two-step."""
    out: list[Problem] = []
    while len(out) < count:
        maker = rng.choice(TWO_STEP if rng.random() < two_step_share else ONE_STEP)
        problem = maker(rng)
        if problem.question not in seen:
            seen.add(problem.question)
            out.append(problem)
    return out

"""Write the demo corpus in ``examples/demo/`` that ``curate build`` and the tests run on.

- ``source.jsonl``: English conversations in the "messages" format (math word problems, tool calls, coding
  chats), then malformed lines, so that every reject reason of the read stage shows up.
- ``parallel.jsonl``: groups written by hand in en (anchor), es, de and fr, one row per (id, lang), with
  rows that the read, LID, structure and equivalence stages must reject.
- ``preference.jsonl``: math prompts with a correct (chosen) and a plausible wrong (rejected) answer.

Only the standard library is used and every choice comes from seeded ``random.Random`` instances, so
``python examples/make_demo.py`` reproduces the files byte for byte.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

SEED = 2025
DEMO = Path(__file__).resolve().parent / "demo"

Row = dict[str, Any]
Message = dict[str, Any]

# ---------------------------------------------------------------------------------------------------------
# Formatting helpers
# ---------------------------------------------------------------------------------------------------------


def _decimal(value: Fraction | Decimal | int, places: int) -> Decimal:
    d = (
        Decimal(value.numerator) / Decimal(value.denominator)
        if isinstance(value, Fraction)
        else Decimal(value)
    )
    return d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def num(value: Fraction | Decimal | int, places: int = 2) -> str:
    """A quantity as people write it: ``24``, ``2.5``, ``1.13`` (rounded to ``places``, no trailing zeros)."""
    text = f"{_decimal(value, places):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(value: Fraction | Decimal | int) -> str:
    """An amount of money: ``20`` when whole, else two decimals (``4.50``)."""
    d = _decimal(value, 2)
    return str(d.to_integral_value()) if d == d.to_integral_value() else f"{d:f}"


def grouped(value: Fraction | Decimal | int, places: int = 2) -> str:
    """Like :func:`num`, with thousands separators (``7,500``, ``1,234.5``)."""
    whole, _, frac = num(value, places).partition(".")
    return f"{int(whole):,}" + (f".{frac}" if frac else "")


def show(style: str, expr: str, value: str, *, tex: str | None = None) -> str:
    """One calculation written in the answer's style: plain, GSM8K ``<<a*b=c>>`` or LaTeX ``\\( \\)``."""
    bare = expr.replace(" ", "").replace(",", "")
    if style == "calc":
        return f"{expr} = <<{bare}={value.replace(',', '')}>>{value}"
    if style == "latex":
        formula = tex or expr.replace(",", "").replace(" * ", r" \times ").replace(" / ", r" \div ")
        return rf"\({formula} = {value.replace(',', '')}\)"
    return f"{expr.replace(' * ', ' × ')} = {value}"


def final(value: str) -> str:
    return f"The answer is {value}."


def frac_tex(f: Fraction) -> str:
    return rf"\frac{{{f.numerator}}}{{{f.denominator}}}"


def to_json(value: Any) -> str:
    """One JSON line, non-ASCII kept readable."""
    return json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------------
# Math word problems
# ---------------------------------------------------------------------------------------------------------

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
    ("Leila", "she"),
    ("Samuel", "he"),
    ("Nina", "she"),
    ("Theo", "he"),
)
POSSESSIVE = {"she": "her", "he": "his"}


@dataclass(frozen=True)
class Problem:
    """A word problem with a correct worked answer and a plausible wrong one (for preference pairs)."""

    question: str
    answer: str
    wrong: str


def lines(*parts: str) -> str:
    return "\n".join(parts)


def shopping_change(rng: random.Random, style: str) -> Problem:
    name, pron = rng.choice(PEOPLE)
    items, extra, low, high = rng.choice(
        (
            ("notebooks", "pen", 150, 475),
            ("sandwiches", "bottle of water", 350, 725),
            ("bags of rice", "jar of honey", 200, 550),
            ("cinema tickets", "large popcorn", 800, 1250),
            ("cupcakes", "coffee", 175, 350),
            ("packs of stickers", "pencil case", 125, 300),
            ("bunches of tulips", "vase", 400, 900),
        )
    )
    n = rng.randint(2, 6)
    price = Fraction(rng.randrange(low, high + 1, 25), 100)
    extra_price = Fraction(rng.randrange(75, 600, 25), 100)
    cost = n * price
    total = cost + extra_price
    bill = next(b for b in (10, 20, 50, 100) if b > total)
    question = rng.choice(
        (
            "{name} buys {n} {items} at ${p} each and a {extra} for ${e}. {Pron} pays with a ${bill} bill. "
            "How much change does {name} get back?",
            "At the shop, {name} picks up {n} {items} that cost ${p} apiece, plus one {extra} priced at ${e}. "
            "If {pron} hands the cashier a ${bill} bill, how much change should {pron} receive?",
            "{name} has a ${bill} bill and spends part of it on {n} {items} (${p} each) and a {extra} (${e}). "
            "How much money does {name} have left?",
        )
    ).format(
        name=name,
        Pron=pron.capitalize(),
        pron=pron,
        n=n,
        items=items,
        extra=extra,
        p=money(price),
        e=money(extra_price),
        bill=bill,
    )
    answer = lines(
        f"The {items} cost {show(style, f'{n} * {money(price)}', money(cost))} dollars.",
        f"With the {extra}, the total is "
        f"{show(style, f'{money(cost)} + {money(extra_price)}', money(total))} dollars.",
        f"The change from ${bill} is {show(style, f'{bill} - {money(total)}', money(bill - total))} dollars.",
        final(money(bill - total)),
    )
    wrong = lines(
        f"The {items} cost {show(style, f'{n} * {money(price)}', money(cost))} dollars.",
        f"The change from ${bill} is {show(style, f'{bill} - {money(cost)}', money(bill - cost))} dollars.",
        final(money(bill - cost)),
    )
    return Problem(question, answer, wrong)


def discount(rng: random.Random, style: str) -> Problem:
    item = rng.choice(("jacket", "pair of running shoes", "backpack", "desk lamp", "blender", "winter coat"))
    price = rng.randrange(40, 240, 20)
    pct = rng.choice((10, 15, 20, 25, 30, 40))
    off = Fraction(price * pct, 100)
    sale = price - off
    if rng.random() < 0.5:
        question = rng.choice(
            (
                "A {item} costs ${price}. This week the store takes {pct}% off. What is the sale price?",
                "The regular price of a {item} is ${price}. During a sale it is {pct}% cheaper. "
                "How much does it cost during the sale?",
            )
        ).format(item=item, price=price, pct=pct)
        discount_line = f"The discount is {pct}% of ${price}: {show(style, f'{price} * {pct} / 100', money(off))} dollars."
        answer = lines(
            discount_line,
            f"The sale price is {show(style, f'{price} - {money(off)}', money(sale))} dollars.",
            final(money(sale)),
        )
        wrong = lines(discount_line, "That is the sale price.", final(money(off)))
        return Problem(question, answer, wrong)
    extra = rng.choice((5, 10))
    factor = Fraction(100 - extra, 100)
    paid = sale * factor
    naive = Fraction(price * (100 - pct - extra), 100)
    question = (
        f"A {item} is marked down {pct}% from ${price}, and a coupon takes a further {extra}% off the reduced "
        "price at checkout. How much does the customer pay?"
    )
    answer = lines(
        f"After the markdown the price is {show(style, f'{price} * {100 - pct} / 100', money(sale))} dollars.",
        f"The coupon applies to that price: {show(style, f'{money(sale)} * {num(factor)}', money(paid))} dollars.",
        "The two discounts multiply; they do not simply add up.",
        final(money(paid)),
    )
    wrong = lines(
        f"The discounts add up to {pct + extra}%.",
        f"So the price is {show(style, f'{price} * {100 - pct - extra} / 100', money(naive))} dollars.",
        final(money(naive)),
    )
    return Problem(question, answer, wrong)


def bulk(rng: random.Random, style: str) -> Problem:
    if rng.random() < 0.5:
        per_day = rng.randrange(1050, 4800, 50)
        days = rng.choice((5, 6))
        weeks = rng.randint(2, 4)
        thing = rng.choice(("bread rolls", "bottles of juice", "glass jars", "phone cases", "paper cups"))
        week = per_day * days
        total = week * weeks
        question = (
            f"A small factory makes {grouped(per_day)} {thing} a day and works {days} days a week. "
            f"How many {thing} does it make in {weeks} weeks?"
        )
        week_line = (
            f"In one week it makes {show(style, f'{grouped(per_day)} * {days}', grouped(week))} {thing}."
        )
        answer = lines(
            week_line,
            f"In {weeks} weeks that is {show(style, f'{grouped(week)} * {weeks}', grouped(total))}.",
            final(grouped(total)),
        )
        wrong = lines(week_line, final(grouped(week)))
        return Problem(question, answer, wrong)
    capacity = rng.choice((120, 150, 180, 240, 275))
    boxes = capacity * rng.randint(8, 30) + rng.randint(1, capacity - 1)
    trucks = -(-boxes // capacity)
    question = (
        f"A warehouse has to ship {grouped(boxes)} boxes. Each truck carries at most {capacity} boxes. "
        "How many trucks are needed to ship all of them?"
    )
    ratio = f"{grouped(boxes)} / {capacity} is about {num(Fraction(boxes, capacity))}"
    answer = lines(
        f"{ratio}, so {trucks - 1} full trucks are not enough.",
        f"The boxes left over need one more truck, which makes {trucks}.",
        final(str(trucks)),
    )
    wrong = lines(f"{ratio}.", f"Dropping the decimals gives {trucks - 1} trucks.", final(str(trucks - 1)))
    return Problem(question, answer, wrong)


def travel(rng: random.Random, style: str) -> Problem:
    kind = rng.choice(("distance", "time", "average"))
    if kind == "distance":
        speed = rng.randrange(45, 125, 5)
        hours = Fraction(rng.choice((3, 5, 7, 9)), 2)
        dist = speed * hours
        vehicle = rng.choice(("train", "coach", "car", "ferry"))
        question = f"A {vehicle} travels at a steady {speed} km/h for {num(hours)} hours. How far does it go?"
        answer = lines(
            "Distance is speed multiplied by time:",
            f"{show(style, f'{speed} * {num(hours)}', num(dist))} km.",
            final(num(dist)),
        )
        wrong = lines(
            "Distance is speed divided by time:",
            f"{show(style, f'{speed} / {num(hours)}', num(speed / hours))} km.",
            final(num(speed / hours)),
        )
        return Problem(question, answer, wrong)
    if kind == "time":
        name, pron = rng.choice(PEOPLE)
        speed = rng.choice((12, 16, 18, 20, 24))
        hours = Fraction(rng.choice((3, 5, 7, 9)), 2)
        dist = speed * hours
        start = rng.choice((7, 8, 9))
        minutes = int(hours * 60)
        end_h, end_m = divmod(start * 60 + minutes, 60)
        question = (
            f"{name} sets off at {start}:00 and cycles {num(dist)} km at an average speed of {speed} km/h. "
            "How many minutes does the ride take?"
        )
        hours_line = f"The ride takes {show(style, f'{num(dist)} / {speed}', num(hours))} hours."
        answer = lines(
            hours_line,
            f"That is {show(style, f'{num(hours)} * 60', str(minutes))} minutes, "
            f"so {pron} arrives at {end_h}:{end_m:02d}.",
            final(str(minutes)),
        )
        misread = int(hours) * 60 + 50
        wrong = lines(
            hours_line,
            f"{num(hours)} hours is {int(hours)} hours and 50 minutes, which makes {misread} minutes.",
            final(str(misread)),
        )
        return Problem(question, answer, wrong)
    s1, s2 = rng.choice(((60, 40), (90, 60), (30, 60), (120, 80), (45, 90)))
    d = math.lcm(s1, s2) * rng.choice((1, 2))
    t1, t2 = Fraction(d, s1), Fraction(d, s2)
    avg = 2 * d / (t1 + t2)
    name, _ = rng.choice(PEOPLE)
    question = (
        f"{name} drives {d} km to the coast at {s1} km/h and comes back the same way at {s2} km/h. "
        "What is the average speed for the whole round trip, in km/h?"
    )
    answer = lines(
        f"The outward trip takes {show(style, f'{d} / {s1}', num(t1))} hours "
        f"and the return takes {show(style, f'{d} / {s2}', num(t2))} hours.",
        f"The whole trip is {2 * d} km in {num(t1 + t2)} hours, "
        f"so the average is {show(style, f'{2 * d} / {num(t1 + t2)}', num(avg))} km/h.",
        final(num(avg)),
    )
    mean = Fraction(s1 + s2, 2)
    mean_tex = rf"({s1} + {s2}) \div 2"
    wrong = lines(
        f"The average of the two speeds is {show(style, f'({s1} + {s2}) / 2', num(mean), tex=mean_tex)} km/h.",
        final(num(mean)),
    )
    return Problem(question, answer, wrong)


def share_of_group(rng: random.Random, style: str) -> Problem:
    n = rng.choice((20, 25, 40, 50, 60, 80, 120, 200))
    p = rng.choice([p for p in (10, 15, 20, 25, 30, 35, 40, 45, 60, 75) if n * p % 100 == 0])
    k = n * p // 100
    group, yes, no = rng.choice(
        (
            ("a class of {n} students", "walk to school", "do not walk to school"),
            ("a survey of {n} people", "prefer tea to coffee", "do not prefer tea"),
            ("an orchard of {n} trees", "are apple trees", "are not apple trees"),
            ("a choir of {n} singers", "are sopranos", "are not sopranos"),
            ("a batch of {n} light bulbs", "fail the quality check", "pass the quality check"),
        )
    )
    question = f"In {group.format(n=n)}, {p}% {yes}. How many {no}?"
    share_line = f"{p}% of {n} is {show(style, f'{n} * {p} / 100', str(k))}."
    answer = lines(share_line, f"The rest is {show(style, f'{n} - {k}', str(n - k))}.", final(str(n - k)))
    wrong = lines(share_line, final(str(k)))
    return Problem(question, answer, wrong)


def growth(rng: random.Random, style: str) -> Problem:
    if rng.random() < 0.5:
        old, new = rng.choice(((40, 50), (80, 100), (60, 75), (50, 60), (25, 40), (120, 150), (200, 230)))
        thing = rng.choice(("a monthly bus pass", "a concert ticket", "a gym membership", "a box of tea"))
        up = Fraction(new - old, old) * 100
        bad = Fraction(new - old, new) * 100
        question = f"The price of {thing} went up from ${old} to ${new}. By what percentage did it rise?"
        answer = lines(
            f"The increase is {show(style, f'{new} - {old}', str(new - old))} dollars.",
            f"Compared with the old price: {show(style, f'{new - old} / {old} * 100', num(up))}%.",
            final(num(up)),
        )
        wrong = lines(
            f"The increase is {new - old} dollars.",
            f"Compared with the new price: {show(style, f'{new - old} / {new} * 100', num(bad))}%.",
            final(num(bad)),
        )
        return Problem(question, answer, wrong)
    town = rng.choice(("Millbrook", "Ashford", "Riverton", "Eastvale", "Pinecrest"))
    pct = rng.choice((5, 10, 20))
    people = rng.randrange(10000, 40000, 400 if pct == 5 else 100)
    rate = Fraction(100 + pct, 100)
    one, two = people * rate, people * rate * rate
    simple = people * Fraction(100 + 2 * pct, 100)
    question = (
        f"{town} has {grouped(people)} residents, and its population grows by {pct}% each year. "
        "How many residents will it have after two years?"
    )
    answer = lines(
        f"After one year: {show(style, f'{grouped(people)} * {num(rate)}', grouped(one))}.",
        f"After two years: {show(style, f'{grouped(one)} * {num(rate)}', grouped(two))}.",
        final(grouped(two)),
    )
    wrong = lines(
        f"Two years of {pct}% growth is {2 * pct}%:",
        f"{show(style, f'{grouped(people)} * {num(Fraction(100 + 2 * pct, 100))}', grouped(simple))}.",
        final(grouped(simple)),
    )
    return Problem(question, answer, wrong)


def pizza(rng: random.Random, style: str) -> Problem:
    slices = rng.choice((8, 12, 16, 24))
    options = [Fraction(a, b) for b in (2, 3, 4, 6, 8) for a in range(1, b) if slices % b == 0]
    while True:
        f1, f2 = rng.sample(options, 2)
        if f1 + f2 < 1 and f1.denominator != f2.denominator:
            break
    (a, _), (b, _) = rng.sample(PEOPLE, 2)
    e1, e2 = f1 * slices, f2 * slices
    left = slices - e1 - e2
    question = (
        f"A pizza is cut into {slices} equal slices. {a} eats ${frac_tex(f1)}$ of it and {b} eats "
        f"${frac_tex(f2)}$ of it. How many slices are left?"
    )
    answer = lines(
        rf"{a} eats \({frac_tex(f1)} \times {slices} = {e1}\) slices.",
        rf"{b} eats \({frac_tex(f2)} \times {slices} = {e2}\) slices.",
        rf"Left over: \({slices} - {e1} - {e2} = {left}\).",
        final(str(left)),
    )
    naive = Fraction(f1.numerator + f2.numerator, f1.denominator + f2.denominator)
    naive_text = f"{naive.numerator}/{naive.denominator}"
    wrong = lines(
        rf"Together they eat \({frac_tex(f1)} + {frac_tex(f2)} = \frac{{{f1.numerator + f2.numerator}}}"
        rf"{{{f1.denominator + f2.denominator}}}\) of the pizza.",
        f"That is {naive_text} of {slices}, about {num(naive * slices)} slices, "
        f"so {num(slices - naive * slices)} are left.",
        final(num(slices - naive * slices)),
    )
    return Problem(question, answer, wrong)


def tank(rng: random.Random, style: str) -> Problem:
    capacity = rng.choice((60, 80, 120, 200, 240, 360))
    full = rng.choice([Fraction(a, b) for b in (3, 4, 5, 6, 8) for a in range(1, b) if capacity % b == 0])
    has = full * capacity
    missing = capacity - has
    container = rng.choice(("rain barrel", "fish tank", "car's fuel tank", "water tank", "paddling pool"))
    question = (
        f"A {container} holds {capacity} litres and is ${frac_tex(full)}$ full. "
        "How many more litres are needed to fill it?"
    )
    holds = rf"\({frac_tex(full)} \times {capacity} = {has}\) litres"
    answer = lines(
        f"It already holds {holds}.",
        rf"To fill it you need \({capacity} - {has} = {missing}\) more litres.",
        final(str(missing)),
    )
    wrong = lines(f"It holds {holds}, so {has} litres are needed.", final(str(has)))
    return Problem(question, answer, wrong)


def recipe(rng: random.Random, style: str) -> Problem:
    while True:
        amount = rng.choice((Fraction(3, 4), Fraction(2, 3), Fraction(1, 2), Fraction(3, 2), Fraction(5, 4)))
        factor = rng.choice((Fraction(3, 2), Fraction(2), Fraction(3), Fraction(5, 2)))
        base = rng.choice((12, 16, 20, 24))
        need = amount * factor
        more = factor - 1
        if (
            (need * 100).denominator == 1
            and ((amount + more) * 100).denominator == 1
            and (base * factor).denominator == 1
        ):
            break
    target = int(base * factor)
    ingredient = rng.choice(("cups of sugar", "cups of flour", "cups of milk", "cups of oats"))
    food = rng.choice(("cookies", "muffins", "pancakes", "scones"))
    question = (
        f"A recipe uses ${frac_tex(amount)}$ {ingredient} for {base} {food}. "
        f"How many {ingredient} are needed for {target} {food}?"
    )
    answer = lines(
        rf"{target} {food} is \({target} \div {base} = {num(factor)}\) times the recipe.",
        rf"So you need \({frac_tex(amount)} \times {num(factor)} = {num(need)}\) {ingredient}.",
        final(num(need)),
    )
    wrong = lines(
        rf"You make {target - base} more {food}, which is \({target - base} \div {base} = {num(more)}\) of a batch.",
        rf"Add that to the original amount: \({frac_tex(amount)} + {num(more)} = {num(amount + more)}\) "
        f"{ingredient}.",
        final(num(amount + more)),
    )
    return Problem(question, answer, wrong)


def wages(rng: random.Random, style: str) -> Problem:
    name, pron = rng.choice(PEOPLE)
    rate = rng.choice((14, 16, 18, 20, 22, 24, 25))
    if rng.random() < 0.5:
        hours = rng.choice((4, 5, 6, 7, 8))
        days = rng.choice((3, 4, 5))
        weeks = rng.choice((2, 4))
        day_pay = rate * hours
        week_pay = day_pay * days
        question = (
            f"{name} earns ${rate} an hour at a café and works {hours} hours a day, {days} days a week. "
            f"How much does {pron} earn in {weeks} weeks?"
        )
        day_line = f"Each day {pron} earns {show(style, f'{rate} * {hours}', str(day_pay))} dollars."
        answer = lines(
            day_line,
            f"Each week that is {show(style, f'{day_pay} * {days}', str(week_pay))} dollars.",
            f"Over {weeks} weeks: {show(style, f'{week_pay} * {weeks}', grouped(week_pay * weeks))} dollars.",
            final(grouped(week_pay * weeks)),
        )
        wrong = lines(
            day_line,
            f"For the {days} days that is {show(style, f'{day_pay} * {days}', str(week_pay))} dollars.",
            final(str(week_pay)),
        )
        return Problem(question, answer, wrong)
    hours = rng.randint(42, 52)
    extra = hours - 40
    overtime_rate = Fraction(rate * 3, 2)
    overtime = extra * overtime_rate
    total = 40 * rate + overtime
    question = (
        f"{name} is paid ${rate} an hour for the first 40 hours of a week and time and a half for every "
        f"hour after that. Last week {pron} worked {hours} hours. How much did {pron} earn?"
    )
    answer = lines(
        f"Regular pay: {show(style, f'40 * {rate}', str(40 * rate))} dollars.",
        f"The overtime rate is {show(style, f'{rate} * 1.5', money(overtime_rate))} dollars, and {pron} worked "
        f"{extra} extra hours: {show(style, f'{extra} * {money(overtime_rate)}', money(overtime))} dollars.",
        f"Total: {show(style, f'{40 * rate} + {money(overtime)}', grouped(total))} dollars.",
        final(grouped(total)),
    )
    wrong = lines(
        f"{pron.capitalize()} worked {hours} hours at ${rate}: "
        f"{show(style, f'{hours} * {rate}', grouped(hours * rate))} dollars.",
        final(grouped(hours * rate)),
    )
    return Problem(question, answer, wrong)


def savings(rng: random.Random, style: str) -> Problem:
    name, pron = rng.choice(PEOPLE)
    per_week = rng.choice((15, 20, 25, 30, 35, 40, 45))
    weeks = rng.randint(6, 20)
    start = rng.choice((0, 40, 60, 75, 90, 120))
    goal = start + per_week * weeks
    thing = rng.choice(
        ("a new bike", "a tablet", "concert tickets", "a guitar", "a weekend trip", "a telescope")
    )
    if start == 0:
        question = f"{name} saves ${per_week} every week for {thing} that costs ${goal}. How many weeks will it take?"
        weeks_text = show(style, f"{goal} / {per_week}", str(weeks))
        answer = lines(f"{weeks_text}, so it takes {weeks} weeks.", final(str(weeks)))
        wrong = lines(f"{weeks_text} weeks, plus one more week to be safe.", final(str(weeks + 1)))
        return Problem(question, answer, wrong)
    question = (
        f"{name} wants {thing} that costs ${goal}. {pron.capitalize()} already has ${start} and saves "
        f"${per_week} a week. How many weeks until {pron} can buy it?"
    )
    answer = lines(
        f"{pron.capitalize()} still needs {show(style, f'{goal} - {start}', str(goal - start))} dollars.",
        f"At ${per_week} a week that takes {show(style, f'{goal - start} / {per_week}', str(weeks))} weeks.",
        final(str(weeks)),
    )
    naive = Fraction(goal, per_week)
    wrong = lines(f"{show(style, f'{goal} / {per_week}', num(naive))} weeks.", final(num(naive)))
    return Problem(question, answer, wrong)


def algebra(rng: random.Random, style: str) -> Problem:
    words = {2: "Twice", 3: "Three times", 4: "Four times", 5: "Five times", 6: "Six times"}
    while True:
        a = rng.choice(tuple(words))
        x = rng.randint(4, 25)
        b = rng.randint(3, 30)
        c = a * x + b
        if (c + b) % a == 0:
            break
    if rng.random() < 0.5:
        question = f"{words[a]} a number plus {b} equals {c}. What is the number?"
    else:
        name, pron = rng.choice(PEOPLE)
        question = (
            f"{name} thinks of a number, multiplies it by {a} and then adds {b}. The result is {c}. "
            f"Which number did {pron} start with?"
        )
    setup = rf"Call the number \(x\). Then \({a}x + {b} = {c}\)."
    answer = lines(
        setup,
        rf"Subtract {b} from both sides: \({a}x = {c - b}\).",
        rf"Divide by {a}: \(x = {x}\).",
        final(str(x)),
    )
    wrong = lines(
        setup,
        rf"Moving {b} across gives \({a}x = {c + b}\), so \(x = {(c + b) // a}\).",
        final(str((c + b) // a)),
    )
    return Problem(question, answer, wrong)


def ages(rng: random.Random, style: str) -> Problem:
    (older, pron), (younger, _) = rng.sample(PEOPLE, 2)
    y = rng.randint(4, 15)
    k = rng.randint(2, 8)
    later = rng.randint(3, 10)
    now = 2 * y + k
    question = (
        f"{older} is {k} years older than twice {younger}'s age. {younger} is {y} years old. "
        f"How old will {older} be in {later} years?"
    )
    steps = (
        f"Twice {younger}'s age is {show(style, f'2 * {y}', str(2 * y))}.",
        f"{older} is {show(style, f'{2 * y} + {k}', str(now))} years old now.",
    )
    answer = lines(
        *steps,
        f"In {later} years {pron} will be {show(style, f'{now} + {later}', str(now + later))}.",
        final(str(now + later)),
    )
    wrong = lines(*steps, final(str(now)))
    return Problem(question, answer, wrong)


def fence(rng: random.Random, style: str) -> Problem:
    length = rng.randint(8, 30)
    width = rng.randint(5, length - 1)
    cost = rng.choice((8, 12, 15, 18, 22, 25))
    place = rng.choice(("vegetable garden", "dog run", "chicken yard", "school playground", "paddock"))
    perimeter = 2 * (length + width)
    area = length * width
    question = (
        f"A rectangular {place} is {length} m long and {width} m wide. Fencing costs ${cost} per metre. "
        "How much does it cost to fence it all the way around?"
    )
    sides = show(style, f"2 * ({length} + {width})", str(perimeter), tex=rf"2 \times ({length} + {width})")
    answer = lines(
        f"The perimeter is {sides} m.",
        f"The fence costs {show(style, f'{perimeter} * {cost}', grouped(perimeter * cost))} dollars.",
        final(grouped(perimeter * cost)),
    )
    wrong = lines(
        f"The {place} measures {show(style, f'{length} * {width}', str(area))} square metres.",
        f"The fence costs {show(style, f'{area} * {cost}', grouped(area * cost))} dollars.",
        final(grouped(area * cost)),
    )
    return Problem(question, answer, wrong)


def scores(rng: random.Random, style: str) -> Problem:
    name, pron = rng.choice(PEOPLE)
    while True:
        marks = [rng.randint(62, 98) for _ in range(4)]
        if sum(marks) % 4 == 0:
            break
    mean = sum(marks) // 4
    listed = ", ".join(map(str, marks[:-1])) + f" and {marks[-1]}"
    if rng.random() < 0.5:
        question = f"{name} scored {listed} on four maths tests. What is {POSSESSIVE[pron]} average score?"
        answer = lines(
            f"The total is {show(style, ' + '.join(map(str, marks)), str(sum(marks)))}.",
            f"The average is {show(style, f'{sum(marks)} / 4', str(mean))}.",
            final(str(mean)),
        )
        ordered = sorted(marks)
        median = Fraction(ordered[1] + ordered[2], 2)
        wrong = lines(
            f"Sorted, the scores are {', '.join(map(str, ordered))}.",
            f"The middle of the list is {num(median)}.",
            final(num(median)),
        )
        return Problem(question, answer, wrong)
    target = mean + rng.randint(2, 6)
    need = 5 * target - sum(marks)
    question = (
        f"{name} scored {listed} on four tests. What score does {pron} need on the fifth test "
        f"to finish with an average of {target}?"
    )
    answer = lines(
        f"An average of {target} over five tests needs {show(style, f'5 * {target}', str(5 * target))} points.",
        f"{pron.capitalize()} has {sum(marks)} so far, so {pron} needs "
        f"{show(style, f'{5 * target} - {sum(marks)}', str(need))}.",
        final(str(need)),
    )
    wrong = lines(
        f"An average of {target} needs {show(style, f'4 * {target}', str(4 * target))} points.",
        f"{pron.capitalize()} has {sum(marks)}, so {pron} needs "
        f"{show(style, f'{4 * target} - {sum(marks)}', str(4 * target - sum(marks)))}.",
        final(str(4 * target - sum(marks))),
    )
    return Problem(question, answer, wrong)


def unit_price(rng: random.Random, style: str) -> Problem:
    product = rng.choice(("coffee beans", "rolled oats", "basmati rice", "dog food", "laundry powder"))
    small_g, big_g = rng.choice(((200, 1000), (500, 1500), (400, 1000), (500, 2000), (300, 900)))
    small_per = rng.randrange(60, 200, 5)
    big_per = small_per - rng.randrange(5, 40, 5)
    small_price = Fraction(small_per * small_g, 10000)
    big_price = Fraction(big_per * big_g, 10000)
    small_unit, big_unit = Fraction(small_per, 100), Fraction(big_per, 100)
    question = (
        f"A {small_g} g bag of {product} costs ${money(small_price)} and a {big_g} g bag costs "
        f"${money(big_price)}. How much cheaper per 100 g is the big bag, in dollars?"
    )
    answer = lines(
        f"Small bag: {show(style, f'{money(small_price)} / {small_g // 100}', money(small_unit))} dollars per 100 g.",
        f"Big bag: {show(style, f'{money(big_price)} / {big_g // 100}', money(big_unit))} dollars per 100 g.",
        f"Difference: {show(style, f'{money(small_unit)} - {money(big_unit)}', money(small_unit - big_unit))}.",
        final(money(small_unit - big_unit)),
    )
    wrong = lines(
        f"The big bag costs {show(style, f'{money(big_price)} - {money(small_price)}', money(big_price - small_price))} "
        "dollars more, so that is the difference.",
        final(money(big_price - small_price)),
    )
    return Problem(question, answer, wrong)


MATH_TEMPLATES: tuple[Callable[[random.Random, str], Problem], ...] = (
    shopping_change,
    discount,
    bulk,
    travel,
    share_of_group,
    growth,
    pizza,
    tank,
    recipe,
    wages,
    savings,
    algebra,
    ages,
    fence,
    scores,
    unit_price,
)


def problems(rng: random.Random, count: int) -> list[Problem]:
    """``count`` distinct problems, templates used in turn so every kind is represented evenly."""
    out: list[Problem] = []
    seen: set[str] = set()
    order = list(MATH_TEMPLATES)
    while len(out) < count:
        rng.shuffle(order)
        for template in order:
            if len(out) == count:
                break
            style = rng.choices(("plain", "calc", "latex"), weights=(4, 3, 3))[0]
            problem = template(rng, style)
            if problem.question not in seen:
                seen.add(problem.question)
                out.append(problem)
    return out


# ---------------------------------------------------------------------------------------------------------
# Tool calling
# ---------------------------------------------------------------------------------------------------------

TOOL_SPECS: dict[str, dict[str, Any]] = {
    "get_weather": {
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
    "convert_currency": {
        "description": "Convert an amount of money using today's exchange rate.",
        "parameters": {
            "type": "object",
            "properties": {
                "amount": {"type": "number"},
                "from_currency": {"type": "string", "description": "ISO 4217 code, e.g. USD"},
                "to_currency": {"type": "string", "description": "ISO 4217 code, e.g. EUR"},
            },
            "required": ["amount", "from_currency", "to_currency"],
        },
    },
    "create_event": {
        "description": "Add an event to the user's calendar.",
        "parameters": {
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "date": {"type": "string", "description": "YYYY-MM-DD"},
                "start_time": {"type": "string", "description": "HH:MM, 24-hour clock"},
                "duration_minutes": {"type": "integer"},
            },
            "required": ["title", "date", "start_time"],
        },
    },
    "list_events": {
        "description": "List the events on the user's calendar for one day.",
        "parameters": {
            "type": "object",
            "properties": {"date": {"type": "string", "description": "YYYY-MM-DD"}},
            "required": ["date"],
        },
    },
    "convert_units": {
        "description": "Convert a value between units of length, mass, volume or temperature.",
        "parameters": {
            "type": "object",
            "properties": {
                "value": {"type": "number"},
                "from_unit": {"type": "string"},
                "to_unit": {"type": "string"},
            },
            "required": ["value", "from_unit", "to_unit"],
        },
    },
    "web_search": {
        "description": "Search the web and return the top results with title, URL and snippet.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "max_results": {"type": "integer", "minimum": 1, "maximum": 10},
            },
            "required": ["query"],
        },
    },
}

TOOL_SIGNATURES: dict[str, str] = {
    "get_weather": "`get_weather(city, unit)`: current conditions for a city",
    "convert_currency": "`convert_currency(amount, from_currency, to_currency)`: today's exchange rate",
    "create_event": "`create_event(title, date, start_time, duration_minutes)`: add a calendar event",
    "list_events": "`list_events(date)`: the user's events on one day",
    "convert_units": "`convert_units(value, from_unit, to_unit)`: length, mass, volume and temperature",
    "web_search": "`web_search(query, max_results)`: top web results with title, URL and snippet",
}

ASSISTANT_NAMES = ("Atlas", "Juniper", "Pilot", "Sage", "Beacon")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def long_date(d: date) -> str:
    return f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}"


def system_prompt(rng: random.Random, needed: list[str], *, today: date | None = None) -> str:
    """A system message listing the tools, in one of the layouts people use (JSON schema, list, names)."""
    others = [t for t in TOOL_SPECS if t not in needed]
    tools = needed + rng.sample(others, rng.randint(0, 2))
    rng.shuffle(tools)
    layout = rng.choice(("json", "list", "names"))
    if layout == "json":
        specs = [{"type": "function", "function": {"name": t, **TOOL_SPECS[t]}} for t in tools]
        text = (
            "You are a helpful assistant with access to the tools below. Call a tool whenever it helps you "
            "answer, then reply in plain language.\n\n```json\n" + json.dumps(specs, indent=2) + "\n```"
        )
    elif layout == "list":
        listing = "\n".join(f"- {TOOL_SIGNATURES[t]}" for t in tools)
        text = (
            f"You are {rng.choice(ASSISTANT_NAMES)}, a friendly assistant. You can use these tools:\n{listing}\n"
            "Only call a tool when the request needs it, and never make up a result."
        )
    else:
        names = ", ".join(f"`{t}`" for t in tools)
        text = (
            f"You are a helpful assistant. Available tools: {names}. Use them to look up anything you cannot "
            "know yourself, such as live weather, exchange rates or the user's calendar."
        )
    if today is not None:
        text += f"\nToday is {long_date(today)}."
    return text


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any]


def tool_exchange(rng: random.Random, calls: list[Call], *, as_text: bool) -> list[Message]:
    """The assistant's tool calls and the tool replies; arguments as an object or as a JSON string."""
    ids = (
        [f"call_{i + 1}" for i in range(len(calls))]
        if rng.random() < 0.4
        else [f"call_{rng.getrandbits(40):010x}" for _ in calls]
    )
    tool_calls = [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": c.name, "arguments": to_json(c.arguments) if as_text else c.arguments},
        }
        for call_id, c in zip(ids, calls, strict=True)
    ]
    out: list[Message] = [{"role": "assistant", "content": "", "tool_calls": tool_calls}]
    out += [
        {"role": "tool", "tool_call_id": call_id, "name": c.name, "content": to_json(c.result)}
        for call_id, c in zip(ids, calls, strict=True)
    ]
    return out


def conversation(
    rng: random.Random, user: str, calls: list[Call], reply: str, *, today: date | None = None
) -> list[Message]:
    needed = list(dict.fromkeys(c.name for c in calls))
    return [
        {"role": "system", "content": system_prompt(rng, needed, today=today)},
        {"role": "user", "content": user},
        *tool_exchange(rng, calls, as_text=rng.random() < 0.4),
        {"role": "assistant", "content": reply},
    ]


CITIES: tuple[tuple[str, bool], ...] = (
    ("Lisbon", False),
    ("Dublin", False),
    ("Vienna", False),
    ("Oslo", False),
    ("Nairobi", False),
    ("Buenos Aires", False),
    ("Osaka", False),
    ("Toronto", False),
    ("Edinburgh", False),
    ("Marseille", False),
    ("Krakow", False),
    ("Cape Town", False),
    ("Melbourne", False),
    ("Seoul", False),
    ("Reykjavik", False),
    ("Chicago", True),
    ("Denver", True),
    ("Seattle", True),
    ("Austin", True),
    ("Boston", True),
)
CONDITIONS: dict[str, str] = {
    "sunny": "sunny",
    "partly cloudy": "partly cloudy",
    "overcast": "overcast",
    "light rain": "raining lightly",
    "heavy rain": "raining hard",
    "fog": "foggy",
    "thunderstorms": "stormy, with thunder around",
    "light snow": "snowing lightly",
}
RAINY = {"light rain", "heavy rain", "thunderstorms"}


def weather_report(rng: random.Random, city: str, *, fahrenheit: bool = False) -> dict[str, Any]:
    condition = rng.choice(tuple(CONDITIONS))
    temp_c = rng.randint(-6, 1) if condition == "light snow" else rng.randint(3, 33)
    report: dict[str, Any] = {"city": city, "condition": condition}
    if fahrenheit:
        report |= {"temperature": round(temp_c * 9 / 5 + 32), "unit": "fahrenheit"}
    else:
        report |= {"temperature": temp_c, "unit": "celsius"}
    report |= {"humidity": rng.randint(30, 95), "wind_kph": rng.randint(0, 45)}
    return report


def weather_conversation(rng: random.Random, variant: int) -> list[Message]:
    city, us = rng.choice(CITIES)
    if variant == 0:
        report = weather_report(rng, city)
        user = rng.choice(
            (
                f"What's the weather like in {city} right now?",
                f"Can you tell me the current weather in {city}?",
                f"How is the weather in {city} at the moment?",
            )
        )
        reply = (
            f"Right now it's {report['temperature']} °C and {CONDITIONS[report['condition']]} in {city}, "
            f"with {report['humidity']}% humidity and wind at {report['wind_kph']} km/h."
        )
        return conversation(rng, user, [Call("get_weather", {"city": city}, report)], reply)
    if variant == 1:
        report = weather_report(rng, city)
        user = rng.choice(
            (
                f"Do I need an umbrella in {city} today?",
                f"I'm about to walk to work in {city}. Should I take an umbrella?",
            )
        )
        if report["condition"] in RAINY:
            reply = (
                f"Yes, take one: it's {CONDITIONS[report['condition']]} in {city} at the moment, "
                f"at {report['temperature']} °C."
            )
        else:
            reply = (
                f"You can leave it at home. It's {CONDITIONS[report['condition']]} and {report['temperature']} °C "
                f"in {city}, and no rain is reported right now."
            )
        return conversation(rng, user, [Call("get_weather", {"city": city}, report)], reply)
    if variant == 2:
        report = weather_report(rng, city)
        user = f"I want to go for a run in {city} this afternoon. How warm is it, and is it windy?"
        wind = report["wind_kph"]
        if wind >= 30:
            feel = "so expect a strong headwind on the exposed stretches"
        elif wind >= 15:
            feel = "so it's noticeably breezy"
        else:
            feel = "which is only a light breeze"
        reply = (
            f"It's {report['temperature']} °C and {CONDITIONS[report['condition']]} in {city}. "
            f"The wind is blowing at {wind} km/h, {feel}."
        )
        return conversation(rng, user, [Call("get_weather", {"city": city}, report)], reply)
    if variant == 3:
        other, _ = rng.choice([c for c in CITIES if c[0] != city])
        a, b = weather_report(rng, city), weather_report(rng, other)
        while a["temperature"] == b["temperature"]:
            b = weather_report(rng, other)
        user = f"Is it warmer in {city} or in {other} right now?"
        warm, cold = (a, b) if a["temperature"] > b["temperature"] else (b, a)
        reply = (
            f"{warm['city']} is warmer at the moment: {warm['temperature']} °C against {cold['temperature']} °C "
            f"in {cold['city']}."
        )
        calls = [Call("get_weather", {"city": city}, a), Call("get_weather", {"city": other}, b)]
        return conversation(rng, user, calls, reply)
    if variant == 4:
        city, _ = rng.choice([c for c in CITIES if c[1]])
        report = weather_report(rng, city, fahrenheit=True)
        user = f"What's the temperature in {city} in Fahrenheit?"
        reply = f"It's {report['temperature']} °F in {city} right now, and {CONDITIONS[report['condition']]}."
        args = {"city": city, "unit": "fahrenheit"}
        return conversation(rng, user, [Call("get_weather", args, report)], reply)
    report = weather_report(rng, city, fahrenheit=us)
    unit = "°F" if us else "°C"
    user = rng.choice(
        (
            f"Hi, this is {{user_name}}. I'm flying to {city} tomorrow morning. What's the weather there now?",
            f"Hello! {{user_name}} here. My sister lives in {city}; is it cold there today?",
        )
    )
    reply = (
        f"Hi {{user_name}}! It's currently {report['temperature']} {unit} and "
        f"{CONDITIONS[report['condition']]} in {city}."
    )
    args = {"city": city, "unit": "fahrenheit"} if us else {"city": city}
    return conversation(rng, user, [Call("get_weather", args, report)], reply)


CURRENCIES: dict[str, tuple[str, str]] = {
    "USD": ("US dollars", "$"),
    "EUR": ("euros", "€"),
    "GBP": ("British pounds", "£"),
    "JPY": ("Japanese yen", "¥"),
    "CHF": ("Swiss francs", "CHF "),
    "CAD": ("Canadian dollars", "C$"),
    "AUD": ("Australian dollars", "A$"),
    "MXN": ("Mexican pesos", "MX$"),
    "SEK": ("Swedish kronor", "SEK "),
    "INR": ("Indian rupees", "₹"),
}
RATES: dict[tuple[str, str], str] = {
    ("USD", "EUR"): "0.92",
    ("EUR", "USD"): "1.09",
    ("GBP", "EUR"): "1.17",
    ("USD", "JPY"): "151.2",
    ("EUR", "GBP"): "0.85",
    ("CHF", "EUR"): "1.04",
    ("CAD", "USD"): "0.73",
    ("AUD", "USD"): "0.66",
    ("USD", "MXN"): "17.1",
    ("EUR", "SEK"): "11.3",
    ("USD", "INR"): "83.4",
    ("GBP", "USD"): "1.27",
}


def convert(amount: int, pair: tuple[str, str]) -> Call:
    rate = Decimal(RATES[pair])
    result = (Decimal(amount) * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return Call(
        "convert_currency",
        {"amount": amount, "from_currency": pair[0], "to_currency": pair[1]},
        {"amount": amount, "from": pair[0], "to": pair[1], "rate": float(rate), "result": float(result)},
    )


def cash(value: float | Decimal | int) -> str:
    """Money with thousands separators: ``30,240``, ``110.40``."""
    whole, _, cents = money(Decimal(str(value))).partition(".")
    return f"{int(whole):,}" + (f".{cents}" if cents else "")


def money_text(value: float | int, code: str) -> str:
    return f"{cash(value)} {CURRENCIES[code][0]}"


def currency_conversation(rng: random.Random, variant: int) -> list[Message]:
    pair = rng.choice(tuple(RATES))
    src, dst = pair
    if variant == 2:
        amount = rng.choice((850, 1200, 1450, 2100, 2500, 3800))
    else:
        amount = rng.choice((20, 45, 75, 120, 250, 380, 600, 1200, 2500, 15000))
    call = convert(amount, pair)
    result = call.result["result"]
    rate = call.result["rate"]
    if variant == 0:
        user = f"How much is {cash(amount)} {CURRENCIES[src][0]} in {CURRENCIES[dst][0]}?"
        reply = f"{money_text(amount, src)} is {money_text(result, dst)} at today's rate of {rate}."
        return conversation(rng, user, [call], reply)
    if variant == 1:
        user = f"I have {cash(amount)} {src} left over from my trip. What is that worth in {dst} today?"
        reply = f"At today's rate ({rate} {dst} per {src}), your {cash(amount)} {src} are worth {cash(result)} {dst}."
        return conversation(rng, user, [call], reply)
    if variant == 2:
        symbol = CURRENCIES[src][1]
        user = f"My rent is {symbol}{cash(amount)} a month. Roughly how much is that in {CURRENCIES[dst][0]}?"
        reply = (
            f"Roughly {money_text(round(result), dst)} a month: {symbol}{cash(amount)} converts to exactly "
            f"{cash(result)} {dst} at today's rate."
        )
        return conversation(rng, user, [call], reply)
    amount = rng.choice((50, 100, 200, 500))
    first, second = convert(amount, ("USD", "EUR")), convert(amount, ("USD", "JPY"))
    if rng.random() < 0.5:
        first, second = convert(amount, ("EUR", "USD")), convert(amount, ("EUR", "GBP"))
    src = first.arguments["from_currency"]
    to1, to2 = first.arguments["to_currency"], second.arguments["to_currency"]
    user = f"Please convert {amount} {src} to both {to1} and {to2}."
    reply = (
        f"{amount} {src} is {cash(first.result['result'])} {to1} "
        f"and {cash(second.result['result'])} {to2} at today's rates."
    )
    return conversation(rng, user, [first, second], reply)


EVENT_TITLES = (
    "Dentist appointment",
    "Team stand-up",
    "Yoga class",
    "Lunch with Priya",
    "Project review",
    "Car service",
    "Parent-teacher meeting",
    "Piano lesson",
    "Haircut",
    "Book club",
)


def clock(hour: int, minute: int) -> str:
    suffix = "am" if hour < 12 else "pm"
    h = hour % 12 or 12
    return f"{h}:{minute:02d} {suffix}" if minute else f"{h} {suffix}"


def relative_day(rng: random.Random, today: date) -> tuple[str, date]:
    kind = rng.choice(("tomorrow", "next", "date"))
    if kind == "tomorrow":
        return "tomorrow", today + timedelta(days=1)
    if kind == "next":
        target = rng.randrange(7)
        ahead = (target - today.weekday()) % 7 or 7
        return f"next {WEEKDAYS[target]}", today + timedelta(days=ahead)
    day = today + timedelta(days=rng.randint(2, 40))
    return f"on {MONTHS[day.month - 1]} {day.day}", day


def calendar_conversation(rng: random.Random, variant: int) -> list[Message]:
    today = date(2025, 1, 6) + timedelta(days=rng.randint(0, 300))
    when, day = relative_day(rng, today)
    spoken = f"{WEEKDAYS[day.weekday()]}, {MONTHS[day.month - 1]} {day.day}"
    if variant == 0:
        title = rng.choice((*EVENT_TITLES, "Call with {client_name}"))
        hour, minute = rng.randint(8, 18), rng.choice((0, 15, 30, 45))
        duration = rng.choice((30, 45, 60, 90))
        user = rng.choice(
            (
                f'Put "{title}" on my calendar {when} at {clock(hour, minute)}, for {duration} minutes.',
                f'Can you add an event called "{title}" {when} at {clock(hour, minute)}? '
                f"It should take about {duration} minutes.",
            )
        )
        end = hour * 60 + minute + duration
        event_id = f"evt_{rng.randint(1000, 9999)}"
        args = {
            "title": title,
            "date": day.isoformat(),
            "start_time": f"{hour:02d}:{minute:02d}",
            "duration_minutes": duration,
        }
        result = {"status": "created", "event_id": event_id}
        reply = (
            f'Done! "{title}" is on your calendar for {spoken}, from {clock(hour, minute)} '
            f"to {clock(*divmod(end, 60))}."
        )
        return conversation(rng, user, [Call("create_event", args, result)], reply, today=today)
    events = []
    for title in rng.sample(EVENT_TITLES, rng.randint(0, 3)):
        start = rng.randrange(8 * 60, 18 * 60, 30)
        events.append((start, start + rng.choice((30, 60, 90)), title))
    events.sort()
    payload = {
        "date": day.isoformat(),
        "events": [
            {"title": t, "start": f"{s // 60:02d}:{s % 60:02d}", "end": f"{e // 60:02d}:{e % 60:02d}"}
            for s, e, t in events
        ],
    }
    call = Call("list_events", {"date": day.isoformat()}, payload)
    if variant == 1:
        user = rng.choice((f"What's on my calendar {when}?", f"What do I have planned {when}?"))
        if not events:
            reply = f"Your calendar is clear on {spoken}; nothing is scheduled."
        else:
            items = [f"{t} from {clock(*divmod(s, 60))} to {clock(*divmod(e, 60))}" for s, e, t in events]
            listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" and {items[-1]}"
            count = "one event" if len(items) == 1 else f"{len(items)} events"
            reply = f"You have {count} on {spoken}: {listed}."
        return conversation(rng, user, [call], reply, today=today)
    hour = rng.randint(9, 17)
    user = f"Am I free {when} at {clock(hour, 0)}? I'd like to book an hour for a call with {{client_name}}."
    clash = [(s, e, t) for s, e, t in events if s < (hour + 1) * 60 and hour * 60 < e]
    if clash:
        s, e, t = clash[0]
        reply = (
            f'Not quite: "{t}" runs from {clock(*divmod(s, 60))} to {clock(*divmod(e, 60))} on {spoken}, '
            f"which overlaps the hour from {clock(hour, 0)}. Would another time work for {{client_name}}?"
        )
    else:
        reply = (
            f"Yes, you're free from {clock(hour, 0)} to {clock(hour + 1, 0)} on {spoken}. "
            "Shall I add the call?"
        )
    return conversation(rng, user, [call], reply, today=today)


@dataclass(frozen=True)
class Conversion:
    """A kind of unit question: what the user asks, sample values, and the reply (``{x}``, ``{r}``)."""

    from_unit: str
    to_unit: str
    factor: str | None
    values: tuple[int, ...]
    asks: tuple[str, ...]
    reply: str


CONVERSIONS: tuple[Conversion, ...] = (
    Conversion(
        "mile",
        "km",
        "1.609344",
        (3, 5, 8, 13, 26),
        ("How many kilometres is a {x}-mile hike?", "I ran {x} miles this morning. How far is that in km?"),
        "{x} miles is about {r} km.",
    ),
    Conversion(
        "km",
        "mile",
        "0.621371",
        (5, 10, 21, 42),
        ("The charity race is {x} km long. How many miles is that?",),
        "{x} km is roughly {r} miles.",
    ),
    Conversion(
        "pound",
        "kg",
        "0.45359237",
        (38, 44, 49, 55, 61),
        ("My suitcase weighs {x} pounds. Is that under the 23 kg limit?",),
        "{x} pounds is {r} kg, {verdict}",
    ),
    Conversion(
        "kg",
        "pound",
        "2.20462",
        (1, 2, 3),
        ("The bread recipe calls for {x} kg of flour. How many pounds is that?",),
        "{x} kg of flour is about {r} pounds.",
    ),
    Conversion(
        "foot",
        "metre",
        "0.3048",
        (850, 1200, 2750, 4400),
        (
            "The hill behind our village is {x} feet high. What is that in metres?",
            "How many metres is {x} feet?",
        ),
        "{x} feet is about {r} metres.",
    ),
    Conversion(
        "inch",
        "cm",
        "2.54",
        (13, 14, 15, 16),
        ("My laptop screen is {x} inches across. How many centimetres is that?",),
        "{x} inches is {r} cm.",
    ),
    Conversion(
        "cup",
        "ml",
        "236.588",
        (2, 3, 4),
        ("A recipe asks for {x} cups of milk. How many millilitres should I measure?",),
        "{x} cups is about {r} ml, so measure roughly that much milk.",
    ),
    Conversion(
        "gallon",
        "litre",
        "3.78541",
        (12, 14, 16, 18),
        ("My car's tank holds {x} gallons. How many litres is that?",),
        "{x} US gallons is about {r} litres.",
    ),
    Conversion(
        "fahrenheit",
        "celsius",
        None,
        (14, 41, 68, 86, 95),
        (
            "The thermometer outside says {x} °F. What's that in Celsius?",
            "The forecast for tomorrow says {x} °F. How warm is that in Celsius?",
        ),
        "{x} °F is {r} °C.",
    ),
    Conversion(
        "fahrenheit",
        "celsius",
        None,
        (350, 375, 400, 425),
        (
            "My oven recipe says {x} °F. What should I set my Celsius oven to?",
            "The brioche recipe at https://example.com/recipes/brioche bakes at {x} °F. What is that in °C?",
        ),
        "{x} °F is {r} °C, so set your oven to about {oven} °C.",
    ),
    Conversion(
        "celsius",
        "fahrenheit",
        None,
        (-5, 18, 25, 37, 180),
        ("Convert {x} °C to Fahrenheit, please.",),
        "{x} °C is {r} °F.",
    ),
)


def units_conversation(rng: random.Random, conv: Conversion) -> list[Message]:
    x = rng.choice(conv.values)
    if conv.factor is None:
        exact = (Decimal(x) - 32) * 5 / 9 if conv.from_unit == "fahrenheit" else Decimal(x) * 9 / 5 + 32
        r = _decimal(exact, 1)
    else:
        r = _decimal(Decimal(x) * Decimal(conv.factor), 2)
    result = {"value": x, "from_unit": conv.from_unit, "to_unit": conv.to_unit, "result": float(r)}
    user = rng.choice(conv.asks).format(x=grouped(x))
    verdict = (
        f"so it's under the limit with {num(23 - r)} kg to spare."
        if r <= 23
        else f"which is {num(r - 23)} kg over the limit."
    )
    reply = conv.reply.format(x=grouped(x), r=grouped(r), verdict=verdict, oven=num(_decimal(r / 10, 0) * 10))
    args = {"value": x, "from_unit": conv.from_unit, "to_unit": conv.to_unit}
    return conversation(rng, user, [Call("convert_units", args, result)], reply)


@dataclass(frozen=True)
class Topic:
    asks: tuple[str, str]
    query: str
    results: tuple[dict[str, str], ...]
    reply: str


TOPICS: tuple[Topic, ...] = (
    Topic(
        (
            "How tall is Mount Kilimanjaro?",
            "Hi, I'm {user_name} and I'm planning a trek. What is the height of Kilimanjaro in metres?",
        ),
        "Mount Kilimanjaro height",
        (
            {
                "title": "Mount Kilimanjaro - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Mount_Kilimanjaro",
                "snippet": "Its summit, Uhuru Peak, is 5,895 metres above sea level, the highest point in Africa.",
            },
        ),
        "Mount Kilimanjaro is 5,895 metres high at Uhuru Peak, which makes it the highest mountain in Africa.",
    ),
    Topic(
        (
            "What is the exact speed of light in a vacuum?",
            "Is the speed of light really an exact number? What is it?",
        ),
        "speed of light in vacuum exact value",
        (
            {
                "title": "Speed of light - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Speed_of_light",
                "snippet": "The speed of light in vacuum is exactly 299,792,458 metres per second.",
            },
        ),
        "It is exactly 299,792,458 metres per second. The value is exact because the metre itself is defined "
        "from it.",
    ),
    Topic(
        (
            "A post on https://example.com/blog/space-facts says the Moon is 300,000 km away. Is that right?",
            "How far away is the Moon on average?",
        ),
        "average distance Earth Moon km",
        (
            {
                "title": "Moon - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Moon",
                "snippet": "The average distance between the Earth and the Moon is about 384,400 km.",
            },
            {
                "title": "Lunar distance",
                "url": "https://en.wikipedia.org/wiki/Lunar_distance",
                "snippet": "It varies from about 363,300 km at perigee to 405,500 km at apogee.",
            },
        ),
        "The average distance is about 384,400 km, so 300,000 km is too low. Over one orbit it varies "
        "between roughly 363,300 km and 405,500 km.",
    ),
    Topic(
        (
            "What changed for f-strings in Python 3.12?",
            "I saw https://docs.python.org/3/whatsnew/3.12.html mention f-strings. What is new about them?",
        ),
        "Python 3.12 f-string changes PEP 701",
        (
            {
                "title": "What's New In Python 3.12",
                "url": "https://docs.python.org/3/whatsnew/3.12.html",
                "snippet": "PEP 701: Syntactic formalization of f-strings. Expression components can now be any "
                "valid Python expression.",
            },
        ),
        "Python 3.12 implemented PEP 701: an f-string can now reuse its own quote character inside the braces, "
        "span several lines, and contain backslashes and comments.",
    ),
    Topic(
        (
            "What does HTTP status code 418 mean?",
            "My test against https://api.example.com/v1/brew returned a 418. Is that a real status code?",
        ),
        "HTTP 418 status code",
        (
            {
                "title": "418 I'm a teapot - HTTP | MDN",
                "url": "https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/418",
                "snippet": "The server refuses to brew coffee because it is, permanently, a teapot.",
            },
        ),
        "418 means \"I'm a teapot\". It comes from an April Fools' joke, RFC 2324 from 1998, and no real "
        "server should need it, so check whether your test server returns it on purpose.",
    ),
    Topic(
        (
            "How long is a marathon in kilometres?",
            "{user_name} here. The training plan at https://example.com/running/first-marathon says a marathon is "
            "exactly 42 km. Is that right?",
        ),
        "marathon distance km",
        (
            {
                "title": "Marathon - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Marathon",
                "snippet": "The marathon is a long-distance foot race with a distance of 42.195 km.",
            },
        ),
        "A marathon is 42.195 km, or about 26.2 miles, so a little more than 42 km.",
    ),
    Topic(
        (
            "How long is the Great Wall of China?",
            "Is it true that the Great Wall of China is more than 20,000 km long?",
        ),
        "Great Wall of China total length",
        (
            {
                "title": "Great Wall of China - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Great_Wall_of_China",
                "snippet": "A 2012 survey found that all the wall's sections measure 21,196 km.",
            },
        ),
        "A 2012 survey by China's State Administration of Cultural Heritage measured all of its sections at "
        "21,196 km in total.",
    ),
    Topic(
        (
            "How many bones are in the adult human body?",
            "My son asked me how many bones we have. Can you look it up?",
        ),
        "number of bones adult human body",
        (
            {
                "title": "Human skeleton - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Human_skeleton",
                "snippet": "The adult human skeleton is made up of 206 bones.",
            },
        ),
        "An adult has 206 bones. Babies start with around 270, and some of them fuse together as they grow.",
    ),
    Topic(
        (
            "Who wrote One Hundred Years of Solitude?",
            "When was One Hundred Years of Solitude first published, and by whom?",
        ),
        "One Hundred Years of Solitude author first published",
        (
            {
                "title": "One Hundred Years of Solitude - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/One_Hundred_Years_of_Solitude",
                "snippet": "A 1967 novel by Colombian author Gabriel García Márquez.",
            },
        ),
        "It was written by the Colombian author Gabriel García Márquez and first published in 1967.",
    ),
    Topic(
        (
            "When was the Eiffel Tower finished, and how tall is it?",
            "I'm writing a quiz for {company}. How tall is the Eiffel Tower today?",
        ),
        "Eiffel Tower completion year height",
        (
            {
                "title": "Eiffel Tower - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Eiffel_Tower",
                "snippet": "Completed in 1889, the tower is 330 metres tall including its antennas.",
            },
        ),
        "The Eiffel Tower was completed in 1889 and stands 330 metres tall today, antennas included.",
    ),
    Topic(
        (
            "How long is the Amazon River?",
            "Which is longer, the Amazon or the Nile? I keep reading different answers.",
        ),
        "Amazon River length km",
        (
            {
                "title": "Amazon River - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Amazon_River",
                "snippet": "Estimates of its length range from 6,400 km to more than 7,000 km, depending on "
                "where the source is placed.",
            },
        ),
        "Roughly 6,400 km, though estimates reach more than 7,000 km depending on where its source is "
        "placed. That uncertainty is why the Amazon and the Nile trade places in different rankings.",
    ),
    Topic(
        (
            "At what temperature does water boil on top of Mount Everest?",
            "Why does pasta take longer to cook at high altitude?",
        ),
        "boiling point of water Mount Everest",
        (
            {
                "title": "Boiling point - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Boiling_point",
                "snippet": "At the top of Mount Everest, water boils at about 70 °C because of the low pressure.",
            },
        ),
        "At the summit of Everest water boils at only about 70 °C, because the air pressure is roughly a "
        "third of that at sea level. Lower boiling water cooks food more slowly.",
    ),
    Topic(
        (
            "Is Sydney the capital of Australia?",
            "My friend read on https://example.org/trivia that Sydney is Australia's capital. Can you check?",
        ),
        "capital of Australia",
        (
            {
                "title": "Canberra - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Canberra",
                "snippet": "Canberra is the capital city of Australia; Parliament has sat there since 1927.",
            },
        ),
        "No, the capital is Canberra. Sydney is the largest city, but Canberra was built as the capital and "
        "Parliament has met there since 1927.",
    ),
    Topic(
        (
            "How far is one light year in kilometres?",
            "Roughly how many kilometres does light travel in a year?",
        ),
        "light year in kilometres",
        (
            {
                "title": "Light-year - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Light-year",
                "snippet": "A light-year is about 9.46 trillion kilometres (9,460,730,472,580.8 km).",
            },
        ),
        "A light year is 9,460,730,472,580.8 km, or about 9.46 trillion kilometres.",
    ),
)


def search_conversation(rng: random.Random, topic: Topic, ask: str) -> list[Message]:
    args: dict[str, Any] = {"query": topic.query}
    if rng.random() < 0.6:
        args["max_results"] = rng.choice((3, 5))
    reply = topic.reply
    if rng.random() < 0.5:
        reply += f" (Source: {topic.results[0]['url']})"
    payload = {"query": topic.query, "results": list(topic.results)}
    return conversation(rng, ask, [Call("web_search", args, payload)], reply)


def distinct(count: int, make: Callable[[int], list[Message]]) -> list[list[Message]]:
    """``count`` conversations whose user requests all differ; ``make(i)`` draws the i-th candidate."""
    out: list[list[Message]] = []
    seen: set[str] = set()
    i = 0
    while len(out) < count:
        conv = make(i)
        i += 1
        user = next(m["content"] for m in conv if m["role"] == "user")
        if user not in seen:
            seen.add(user)
            out.append(conv)
    return out


def tool_conversations(rng: random.Random) -> list[list[Message]]:
    convs: list[list[Message]] = []
    convs += distinct(26, lambda i: weather_conversation(rng, i % 6))
    convs += distinct(20, lambda i: currency_conversation(rng, i % 4))
    convs += distinct(20, lambda i: calendar_conversation(rng, i % 3))
    convs += distinct(20, lambda i: units_conversation(rng, CONVERSIONS[i % len(CONVERSIONS)]))
    asks = [(t, a) for t in TOPICS for a in t.asks]
    convs += [search_conversation(rng, t, a) for t, a in rng.sample(asks, 24)]
    return convs


# ---------------------------------------------------------------------------------------------------------
# Coding chats
# ---------------------------------------------------------------------------------------------------------

CHATS: tuple[tuple[str, str], ...] = (
    (
        "How do I reverse a list in Python?",
        "There are three common ways, depending on whether you want a new list or want to change the original.\n\n"
        "```python\nnumbers = [1, 2, 3, 4]\n\nreversed_copy = numbers[::-1]  # new list: [4, 3, 2, 1]\n"
        "numbers.reverse()                # reverses in place, returns None\n"
        "for n in reversed(numbers):      # lazy iterator, no copy\n    print(n)\n```\n\n"
        "Use `numbers[::-1]` when you need a copy, and `numbers.reverse()` when you don't need the old order.",
    ),
    (
        "What's the difference between `==` and `is` in Python?",
        "`==` compares values, while `is` checks whether two names point to the very same object.\n\n"
        "```python\na = [1, 2]\nb = [1, 2]\nprint(a == b)  # True: same contents\nprint(a is b)  # False: two lists\n```\n\n"
        "Use `is` only for singletons such as `None`, as in `if value is None:`.",
    ),
    (
        "How can I read a file line by line in Python without loading it all into memory?",
        "Iterate over the file object inside a `with` block; Python reads one line at a time.\n\n"
        '```python\nwith open("server.log", encoding="utf-8") as f:\n    for line in f:\n'
        '        if "ERROR" in line:\n            print(line.rstrip())\n```\n\n'
        "The `with` statement closes the file for you, even if an exception is raised.",
    ),
    (
        "How do I sort a dictionary by its values?",
        "Dictionaries keep insertion order, so you can build a new one from the sorted items:\n\n"
        '```python\nscores = {"ana": 82, "ben": 95, "chen": 78}\n'
        "by_score = dict(sorted(scores.items(), key=lambda kv: kv[1], reverse=True))\n"
        "print(by_score)  # {'ben': 95, 'ana': 82, 'chen': 78}\n```\n\n"
        "Drop `reverse=True` if you want the lowest values first.",
    ),
    (
        "How do I undo my last Git commit but keep the changes?",
        "Move the branch back one commit with a soft reset:\n\n```bash\ngit reset --soft HEAD~1\n```\n\n"
        "Your changes stay staged, so you can fix them and commit again. If you have already pushed the "
        "commit, prefer `git revert HEAD`, which adds a new commit instead of rewriting history.",
    ),
    (
        "How do I create and activate a virtual environment for a Python project?",
        "Create it with the built-in `venv` module, then activate it:\n\n"
        "```bash\npython -m venv .venv\nsource .venv/bin/activate   # on Windows: .venv\\Scripts\\activate\n"
        "pip install requests\n```\n\n"
        "While it is active, `pip` installs packages into `.venv` only. Run `deactivate` to leave it.",
    ),
    (
        "How can I find all files larger than 100 MB on Linux?",
        "Use `find` with the `-size` test:\n\n"
        "```bash\nfind ~ -type f -size +100M -exec ls -lh {} \\; 2>/dev/null\n```\n\n"
        "`+100M` means more than 100 MiB, and `2>/dev/null` hides permission errors. "
        "Replace `~` with `/` to search the whole disk.",
    ),
    (
        "What's the simplest way to remove duplicates from an array in JavaScript?",
        "Put the values in a `Set`, which keeps only unique values, and spread it back into an array:\n\n"
        '```javascript\nconst tags = ["news", "tech", "news", "sport"];\nconst unique = [...new Set(tags)];\n'
        'console.log(unique); // ["news", "tech", "sport"]\n```\n\n'
        "The order of first appearance is preserved. For arrays of objects you need to compare a key instead.",
    ),
    (
        "Can you explain `async` and `await` in JavaScript with a short example?",
        "An `async` function always returns a promise, and `await` pauses it until another promise settles, "
        "without blocking the page.\n\n"
        "```javascript\nasync function loadUser(id) {\n  const response = await fetch(`/api/users/${id}`);\n"
        "  if (!response.ok) {\n    throw new Error(`HTTP ${response.status}`);\n  }\n  return response.json();\n}\n"
        "\nloadUser(42).then((user) => console.log(user.name));\n```\n\n"
        "Wrap the `await` calls in `try`/`catch` when you want to handle errors inside the function.",
    ),
    (
        "How do I get the top 5 customers by total order value in SQL?",
        "Group the orders by customer, sum the amounts and sort:\n\n"
        "```sql\nSELECT customer_id, SUM(amount) AS total\nFROM orders\nGROUP BY customer_id\n"
        "ORDER BY total DESC\nLIMIT 5;\n```\n\n"
        "On SQL Server, use `SELECT TOP 5 ...` instead of `LIMIT 5`.",
    ),
    (
        "How do I merge two dictionaries in Python?",
        "Since Python 3.9 you can use the `|` operator; values from the right-hand side win.\n\n"
        '```python\ndefaults = {"theme": "light", "lang": "en"}\nuser = {"theme": "dark"}\n'
        "settings = defaults | user\nprint(settings)  # {'theme': 'dark', 'lang': 'en'}\n```\n\n"
        "On older versions, `{**defaults, **user}` does the same.",
    ),
    (
        "How can I check whether a string is a palindrome in Python?",
        "Normalise the string first, then compare it with its reverse:\n\n"
        "```python\ndef is_palindrome(text: str) -> bool:\n"
        "    letters = [c.lower() for c in text if c.isalnum()]\n    return letters == letters[::-1]\n\n"
        'print(is_palindrome("A man, a plan, a canal: Panama"))  # True\n```\n\n'
        "Keeping only `isalnum()` characters makes spaces and punctuation irrelevant.",
    ),
    (
        "How do I rename a Git branch, both locally and on the remote?",
        "Rename it locally, push the new name, then delete the old one on the remote:\n\n"
        "```bash\ngit branch -m old-name new-name\ngit push origin -u new-name\ngit push origin --delete old-name\n```\n\n"
        "Anyone else who has the old branch checked out will need to run `git fetch --prune`.",
    ),
    (
        "How do I loop over all `.txt` files in a folder in Bash?",
        "A glob in a `for` loop is enough:\n\n"
        '```bash\nfor f in *.txt; do\n  echo "Processing $f"\n  wc -w "$f"\ndone\n```\n\n'
        'Always quote `"$f"` so file names with spaces work. Add `shopt -s nullglob` first if the folder '
        "may contain no `.txt` files at all.",
    ),
    (
        "What's a quick way to count how often each word appears in a text?",
        "`collections.Counter` does the counting for you:\n\n"
        '```python\nfrom collections import Counter\n\ntext = "the cat and the hat and the bat"\n'
        "counts = Counter(text.split())\nprint(counts.most_common(2))  # [('the', 3), ('and', 2)]\n```\n\n"
        'Lower-case the text and strip punctuation first if "The" and "the." should count as the same word.',
    ),
    (
        "How do I print a number with thousands separators in Python?",
        "Use the `,` option of the format mini-language:\n\n"
        '```python\npopulation = 1250000\nprint(f"{population:,}")     # 1,250,000\n'
        'print(f"{1234.5:,.2f}")       # 1,234.50\n```\n\n'
        "For locale-aware separators such as `1.250.000`, use the `locale` module instead.",
    ),
    (
        "How do I parse a JSON string in JavaScript safely?",
        "`JSON.parse` throws on invalid input, so wrap it in `try`/`catch`:\n\n"
        "```javascript\nfunction parseConfig(text) {\n  try {\n    return JSON.parse(text);\n  } catch (err) {\n"
        '    console.error("Invalid JSON:", err.message);\n    return null;\n  }\n}\n```\n\n'
        "Never use `eval` to parse JSON: it runs any code the string contains.",
    ),
    (
        "What is a list comprehension in Python?",
        "It is a compact way to build a list from another iterable, optionally with a filter:\n\n"
        "```python\nsquares_of_even = [x * x for x in range(10) if x % 2 == 0]\nprint(squares_of_even)  # [0, 4, 16, 36, 64]\n```\n\n"
        'It reads as "`x * x` for each `x` in `range(10)` where `x` is even". Switch to a normal loop once '
        "it no longer fits on one readable line.",
    ),
    (
        "How do I get the current date and time in Python as an ISO string?",
        "Use `datetime.now` with a time zone, then `isoformat()`:\n\n"
        "```python\nfrom datetime import datetime, timezone\n\nnow = datetime.now(timezone.utc)\n"
        "print(now.isoformat())  # e.g. 2025-03-14T09:26:53.589793+00:00\n```\n\n"
        "Passing a time zone avoids naive datetimes, which cause subtle bugs when servers run in different zones.",
    ),
    (
        "How do I replace a word in many files at once from the command line?",
        "GNU `sed` can edit files in place:\n\n```bash\nsed -i 's/colour/color/g' docs/*.md\n```\n\n"
        "On macOS, `sed -i` needs an explicit backup suffix, so use `sed -i '' 's/colour/color/g' docs/*.md`. "
        "Commit or back up your files first, since the change cannot be undone.",
    ),
    (
        "How can I measure how long a piece of Python code takes to run?",
        "For a single measurement, use `time.perf_counter`, the clock with the highest resolution:\n\n"
        "```python\nimport time\n\nstart = time.perf_counter()\nresult = sum(i * i for i in range(1_000_000))\n"
        'elapsed = time.perf_counter() - start\nprint(f"took {elapsed:.3f} s")\n```\n\n'
        "For small snippets, `python -m timeit` repeats the code many times and gives a more reliable number.",
    ),
    (
        "How do I make a simple HTTP GET request in Python?",
        "With the popular `requests` library it takes two lines:\n\n"
        '```python\nimport requests\n\nresponse = requests.get("https://api.github.com/repos/python/cpython", timeout=10)\n'
        'response.raise_for_status()\nprint(response.json()["stargazers_count"])\n```\n\n'
        "Always set a `timeout`; without one, a request to a dead server can hang forever.",
    ),
    (
        "How do I add a column with a default value to a PostgreSQL table?",
        "Use `ALTER TABLE ... ADD COLUMN` with a `DEFAULT`:\n\n"
        "```sql\nALTER TABLE users\n  ADD COLUMN is_active boolean NOT NULL DEFAULT true;\n```\n\n"
        "Since PostgreSQL 11, adding a column with a constant default does not rewrite the table, so it is fast "
        "even on large tables.",
    ),
    (
        "How do I split a comma-separated string and remove the spaces around each item?",
        "Split on the comma, then strip each part:\n\n"
        '```python\nraw = "apples, pears ,plums,  cherries"\nfruits = [part.strip() for part in raw.split(",")]\n'
        "print(fruits)  # ['apples', 'pears', 'plums', 'cherries']\n```\n\n"
        'Add `if part.strip()` at the end of the comprehension to drop empty items from input like `"a,,b"`.',
    ),
    (
        "How do I write a first unit test with pytest?",
        "Put a function whose name starts with `test_` in a file whose name starts with `test_`, and use a plain "
        "`assert`:\n\n"
        "```python\n# test_maths.py\ndef add(a: int, b: int) -> int:\n    return a + b\n\n\ndef test_add():\n"
        "    assert add(2, 3) == 5\n```\n\n"
        "Run `pytest -q` in the same folder; pytest finds the test and shows the values if the assertion fails.",
    ),
)

CHAT_SYSTEMS = (
    "You are a concise programming assistant. Show short, working examples.",
    "You are a patient coding tutor. Explain briefly and give an example.",
)


def chat_conversations(rng: random.Random) -> list[list[Message]]:
    convs: list[list[Message]] = []
    for question, answer in CHATS:
        messages: list[Message] = []
        if rng.random() < 0.4:
            messages.append({"role": "system", "content": rng.choice(CHAT_SYSTEMS)})
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        convs.append(messages)
    return convs


# ---------------------------------------------------------------------------------------------------------
# source.jsonl
# ---------------------------------------------------------------------------------------------------------


def source_rows(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for i, p in enumerate(problems(rng, 160), 1):
        messages: list[Message] = []
        if rng.random() < 0.2:
            messages.append(
                {
                    "role": "system",
                    "content": 'Solve the problem step by step and end with "The answer is N."',
                }
            )
        messages += [{"role": "user", "content": p.question}, {"role": "assistant", "content": p.answer}]
        rows.append({"id": f"math-{i:04d}", "task": "math", "messages": messages})
    rows += [
        {"id": f"tool-{i:04d}", "task": "tool_calling", "messages": m}
        for i, m in enumerate(tool_conversations(rng), 1)
    ]
    rows += [
        {"id": f"chat-{i:04d}", "task": "chat", "messages": m}
        for i, m in enumerate(chat_conversations(rng), 1)
    ]
    rng.shuffle(rows)
    return rows


def source_bad_lines(first_math_id: str) -> list[bytes]:
    """Malformed lines, one or more per read-stage reject reason (see ``demo/README.md``)."""
    user = {"role": "user", "content": "What is 15% of 240?"}
    reply = {"role": "assistant", "content": "15% of 240 is 240 × 0.15 = 36.\nThe answer is 36."}

    def with_arguments(row_id: str, arguments: str) -> bytes:
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": arguments},
        }
        messages = [
            {"role": "user", "content": "Is it raining in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "name": "get_weather",
                "content": '{"condition": "sunny"}',
            },
            {"role": "assistant", "content": "No, it is sunny in Paris."},
        ]
        return to_json({"id": row_id, "task": "tool_calling", "messages": messages}).encode()

    return [
        b'{"id": "math-0900", "task": "math", "messages": [{"role": "user", "content": "What is 7 times 8?"}, ]}',
        b'{"id": "chat-0900", "task": "chat", "messages": [{"role": "user", "content": "How do I sort a',
        to_json([user, reply]).encode(),
        b'"What is the capital of Peru?"',
        to_json({"id": "math-0901", "task": "math", "conversation": [user, reply]}).encode(),
        to_json(
            {"id": "math-0902", "task": "math", "messages": [{"role": "user", "content": ""}, reply]}
        ).encode(),
        to_json(
            {"id": "math-0903", "task": "math", "messages": [{"role": "user", "content": "   \n  "}, reply]}
        ).encode(),
        to_json(
            {
                "id": "chat-0904",
                "task": "chat",
                "messages": [
                    {"role": "narrator", "content": "The user walks into the room and looks around."},
                    {"role": "user", "content": "Tell me a short story about a lighthouse keeper."},
                    {
                        "role": "assistant",
                        "content": "Every night, Ada climbed the hundred steps of the lighthouse.",
                    },
                ],
            }
        ).encode(),
        to_json(
            {
                "id": "chat-0905",
                "task": "chat",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "What does `git stash` do?"}]},
                    {
                        "role": "assistant",
                        "content": "It shelves your uncommitted changes so you can switch branches.",
                    },
                ],
            }
        ).encode(),
        b'{"id": "chat-0906", "task": "chat", "messages": [{"role": "user", "content": "Caf\xe9 au lait or '
        b'cappuccino: which has more milk?"}, {"role": "assistant", "content": "A caf\xe9 au lait."}]}',
        with_arguments("tool-0900", "{city: Paris}"),
        with_arguments("tool-0901", '{"city": "Paris"'),
        to_json({"id": first_math_id, "task": "math", "messages": [user, reply]}).encode(),
    ]


# ---------------------------------------------------------------------------------------------------------
# parallel.jsonl: en anchors with hand-written es / de / fr translations
# ---------------------------------------------------------------------------------------------------------

LANGS = ("en", "es", "de", "fr")
Texts = dict[str, str]


def msgs(user: Texts, assistant: Texts) -> dict[str, list[Message]]:
    """A user turn and its answer, per language."""
    return {
        lang: [{"role": "user", "content": user[lang]}, {"role": "assistant", "content": assistant[lang]}]
        for lang in user
    }


def tool_msgs(
    system: Texts,
    user: Texts,
    call: Call,
    reply: Texts,
    *,
    call_id: str,
    arguments: dict[str, dict[str, Any]] | None = None,
) -> dict[str, list[Message]]:
    """A one-call tool conversation per language; the call and the tool's JSON are shared unless
    ``arguments`` overrides a language's call arguments."""
    out: dict[str, list[Message]] = {}
    for lang in user:
        args = (arguments or {}).get(lang, call.arguments)
        out[lang] = [
            {"role": "system", "content": system[lang]},
            {"role": "user", "content": user[lang]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": args}}
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "name": call.name, "content": to_json(call.result)},
            {"role": "assistant", "content": reply[lang]},
        ]
    return out


NAMES = ("Anna", "Marco", "Lena", "Tom", "Sofia", "Jonas", "Clara", "Paul", "Elena", "David")

ANSWER_IS = {
    "en": "The answer is {}.",
    "es": "La respuesta es {}.",
    "de": "Die Antwort ist {}.",
    "fr": "La réponse est {}.",
    "it": "La risposta è {}.",
    "nl": "Het antwoord is {}.",
}


def answer_line(lang: str, value: int) -> str:
    return ANSWER_IS[lang].format(value)


PAR_ITEMS = (
    ("notebooks", "cuadernos", "Hefte", "cahiers"),
    ("tickets", "entradas", "Eintrittskarten", "billets"),
    ("books", "libros", "Bücher", "livres"),
    ("T-shirts", "camisetas", "T-Shirts", "tee-shirts"),
    ("plants", "plantas", "Pflanzen", "plantes"),
    ("mugs", "tazas", "Tassen", "tasses"),
)


def par_shopping(rng: random.Random, *, changed_es: bool = False) -> dict[str, list[Message]]:
    name = rng.choice(NAMES)
    item = dict(zip(LANGS, rng.choice(PAR_ITEMS), strict=True))
    n, p = rng.randint(3, 9), rng.randint(4, 19)
    t = n * p
    es_total = t + 10 if changed_es else t
    user = {
        "en": f"{name} buys {n} {item['en']} at {p} euros each. How much does {name} pay in total?",
        "es": f"{name} compra {n} {item['es']} a {p} euros la unidad. ¿Cuánto paga {name} en total?",
        "de": f"{name} kauft {n} {item['de']} für je {p} Euro. Wie viel bezahlt {name} insgesamt?",
        "fr": f"{name} achète {n} {item['fr']} à {p} euros l'unité. Quel est le montant total à payer ?",
    }
    assistant = {
        "en": f"{n} × {p} = {t}, so {name} pays {t} euros.\n{answer_line('en', t)}",
        "es": f"{n} × {p} = {es_total}, así que {name} paga {es_total} euros.\n{answer_line('es', es_total)}",
        "de": f"{n} × {p} = {t}, also bezahlt {name} {t} Euro.\n{answer_line('de', t)}",
        "fr": f"{n} × {p} = {t}, donc {name} paie {t} euros.\n{answer_line('fr', t)}",
    }
    return msgs(user, assistant)


PAR_VEHICLES = (
    ("A train", "Un tren", "Ein Zug", "Un train", "er", "il"),
    ("A car", "Un coche", "Ein Auto", "Une voiture", "es", "elle"),
    ("A bus", "Un autobús", "Ein Bus", "Un bus", "er", "il"),
)


def par_speed(rng: random.Random) -> dict[str, list[Message]]:
    en, es, de, fr, er, il = rng.choice(PAR_VEHICLES)
    v, h = rng.randrange(40, 130, 10), rng.randint(2, 6)
    d = v * h
    user = {
        "en": f"{en} travels at {v} km/h for {h} hours. How far does it go?",
        "es": f"{es} viaja a {v} km/h durante {h} horas. ¿Qué distancia recorre?",
        "de": f"{de} fährt {h} Stunden lang mit {v} km/h. Welche Strecke legt {er} zurück?",
        "fr": f"{fr} roule à {v} km/h pendant {h} heures. Quelle distance parcourt-{il} ?",
    }
    assistant = {
        "en": f"Distance = speed × time = {v} × {h} = {d} km.\n{answer_line('en', d)}",
        "es": f"Distancia = velocidad × tiempo = {v} × {h} = {d} km.\n{answer_line('es', d)}",
        "de": f"Strecke = Geschwindigkeit × Zeit = {v} × {h} = {d} km.\n{answer_line('de', d)}",
        "fr": f"Distance = vitesse × temps = {v} × {h} = {d} km.\n{answer_line('fr', d)}",
    }
    return msgs(user, assistant)


def par_percent(rng: random.Random) -> dict[str, list[Message]]:
    """en/es/de/fr plus it (used as a wrong-language and as an unrequested row)."""
    n = rng.choice((20, 25, 30, 40, 50, 60))
    p = rng.choice([p for p in (10, 20, 30, 40, 60) if n * p % 100 == 0])
    k = n * p // 100
    user = {
        "en": f"In a class of {n} students, {p}% walk to school. How many students walk to school?",
        "es": f"En una clase de {n} alumnos, el {p} % va a la escuela a pie. ¿Cuántos alumnos van a pie?",
        "de": f"In einer Klasse mit {n} Schülerinnen und Schülern gehen {p} % zu Fuß zur Schule. "
        "Wie viele gehen zu Fuß?",
        "fr": f"Dans une classe de {n} élèves, {p} % vont à l'école à pied. Combien d'élèves vont à pied ?",
        "it": f"In una classe di {n} studenti, il {p}% va a scuola a piedi. Quanti studenti vanno a scuola a piedi?",
    }
    assistant = {
        "en": f"{p}% of {n} is {n} × {p} / 100 = {k}.\n{answer_line('en', k)}",
        "es": f"El {p} % de {n} es {n} × {p} / 100 = {k}.\n{answer_line('es', k)}",
        "de": f"{p} % von {n} sind {n} × {p} / 100 = {k}.\n{answer_line('de', k)}",
        "fr": f"{p} % de {n}, c'est {n} × {p} / 100 = {k}.\n{answer_line('fr', k)}",
        "it": f"Il {p}% di {n} è {n} × {p} / 100 = {k}.\n{answer_line('it', k)}",
    }
    return msgs(user, assistant)


def par_tank(rng: random.Random) -> dict[str, list[Message]]:
    c = rng.choice((60, 80, 120, 200, 240))
    f = rng.choice([Fraction(a, b) for b in (3, 4, 5) for a in range(1, b) if c % b == 0 and 2 * a != b])
    has = f * c
    r = c - has
    fr_tex = frac_tex(f)
    has_tex, rest_tex = rf"\({fr_tex} \times {c} = {has}\)", rf"\({c} - {has} = {r}\)"
    user = {
        "en": f"A water tank holds {c} litres and is ${fr_tex}$ full. How many more litres does it take to fill it?",
        "es": f"Un depósito de agua de {c} litros está lleno hasta los ${fr_tex}$ de su capacidad. "
        "¿Cuántos litros faltan para llenarlo?",
        "de": f"Ein Wassertank fasst {c} Liter und ist zu ${fr_tex}$ gefüllt. "
        "Wie viele Liter fehlen noch, bis er voll ist?",
        "fr": f"Un réservoir d'eau de {c} litres est rempli aux ${fr_tex}$. "
        "Combien de litres faut-il encore pour le remplir ?",
    }
    assistant = {
        "en": f"It already holds {has_tex} litres, so {rest_tex} litres are missing.\n{answer_line('en', r)}",
        "es": f"Ya contiene {has_tex} litros, así que faltan {rest_tex} litros.\n{answer_line('es', r)}",
        "de": f"Er enthält bereits {has_tex} Liter, also fehlen noch {rest_tex} Liter.\n{answer_line('de', r)}",
        "fr": f"Il contient déjà {has_tex} litres, il manque donc {rest_tex} litres.\n{answer_line('fr', r)}",
    }
    return msgs(user, assistant)


TOO_LONG_ES = (
    "Ahorrar con regularidad es una costumbre muy útil, sobre todo cuando se tiene un objetivo concreto. "
    "Apuntar cada semana lo que se ha guardado ayuda a mantener la motivación y a ver el progreso.\n\n"
    "También conviene pensar en los imprevistos: si alguna semana no se puede ahorrar la cantidad prevista, "
    "el plazo se alarga. Por eso muchas personas guardan un poco más de lo necesario al principio.\n\n"
    "Otra buena idea es comparar precios antes de comprar la bicicleta. En las rebajas de temporada o en las "
    "tiendas de segunda mano a veces se encuentran modelos muy buenos por bastante menos dinero.\n\n"
    "Por último, no hay que olvidar el equipo de seguridad. Un casco, unas luces y un buen candado también "
    "forman parte del gasto y deberían incluirse en el presupuesto desde el principio."
)


def par_savings(rng: random.Random, *, too_long_es: bool = False) -> dict[str, list[Message]]:
    name = rng.choice(NAMES)
    s, w = rng.choice((10, 15, 20, 25)), rng.randint(6, 16)
    g = s * w
    calc = f"{g} / {s} = <<{g}/{s}={w}>>{w}"
    user = {
        "en": f"{name} saves {s} euros every week. How many weeks does {name} need to save {g} euros for a new bike?",
        "es": f"{name} ahorra {s} euros cada semana. ¿Cuántas semanas necesita {name} para ahorrar {g} euros para "
        "una bicicleta nueva?",
        "de": f"{name} spart jede Woche {s} Euro. Wie viele Wochen braucht {name}, um {g} Euro für ein neues "
        "Fahrrad zu sparen?",
        "fr": f"{name} économise {s} euros par semaine. Combien de semaines faut-il à {name} pour mettre de côté "
        f"{g} euros pour un nouveau vélo ?",
    }
    assistant = {
        "en": f"{calc}, so {name} needs {w} weeks.\n{answer_line('en', w)}",
        "es": f"{calc}, así que {name} necesita {w} semanas.\n{answer_line('es', w)}",
        "de": f"{calc}, also braucht {name} {w} Wochen.\n{answer_line('de', w)}",
        "fr": f"{calc}, donc il faut {w} semaines à {name}.\n{answer_line('fr', w)}",
    }
    if too_long_es:
        assistant["es"] += "\n\n" + TOO_LONG_ES
    return msgs(user, assistant)


PAR_TIMES = {
    2: (
        "Twice a number",
        "El doble de un número",
        "Das Doppelte einer Zahl",
        "Le double d'un nombre",
        "Twee keer een getal",
    ),
    3: (
        "Three times a number",
        "El triple de un número",
        "Das Dreifache einer Zahl",
        "Le triple d'un nombre",
        "Drie keer een getal",
    ),
    4: (
        "Four times a number",
        "El cuádruple de un número",
        "Das Vierfache einer Zahl",
        "Le quadruple d'un nombre",
        "Vier keer een getal",
    ),
    5: (
        "Five times a number",
        "El quíntuple de un número",
        "Das Fünffache einer Zahl",
        "Le quintuple d'un nombre",
        "Vijf keer een getal",
    ),
}


def par_algebra(rng: random.Random) -> dict[str, list[Message]]:
    """en/es/de/fr plus nl (used under an unknown language code)."""
    a = rng.choice(tuple(PAR_TIMES))
    x, b = rng.randint(3, 20), rng.randint(2, 15)
    c = a * x + b
    words = dict(zip((*LANGS, "nl"), PAR_TIMES[a], strict=True))
    eq1, eq2, eq3 = rf"\({a}x + {b} = {c}\)", rf"\({a}x = {c - b}\)", rf"\(x = {x}\)"
    user = {
        "en": f"{words['en']} plus {b} equals {c}. What is the number?",
        "es": f"{words['es']} más {b} es igual a {c}. ¿Cuál es ese número?",
        "de": f"{words['de']} plus {b} ergibt {c}. Wie lautet die Zahl?",
        "fr": f"{words['fr']} plus {b} est égal à {c}. Quel est ce nombre ?",
        "nl": f"{words['nl']} plus {b} is gelijk aan {c}. Welk getal is het?",
    }
    assistant = {
        "en": rf"Call the number \(x\). Then {eq1}, so {eq2} and {eq3}." + f"\n{answer_line('en', x)}",
        "es": rf"Llamemos \(x\) al número. Entonces {eq1}, así que {eq2} y {eq3}."
        + f"\n{answer_line('es', x)}",
        "de": rf"Nennen wir die Zahl \(x\). Dann gilt {eq1}, also {eq2} und {eq3}."
        + f"\n{answer_line('de', x)}",
        "fr": rf"Appelons ce nombre \(x\). On a alors {eq1}, donc {eq2} et {eq3}."
        + f"\n{answer_line('fr', x)}",
        "nl": rf"Noem het getal \(x\). Dan geldt {eq1}, dus {eq2} en {eq3}." + f"\n{answer_line('nl', x)}",
    }
    return msgs(user, assistant)


def par_average(rng: random.Random) -> dict[str, list[Message]]:
    name = rng.choice(NAMES)
    while True:
        m = [rng.randint(55, 99) for _ in range(4)]
        if sum(m) % 4 == 0:
            break
    s, avg = sum(m), sum(m) // 4
    a, b, c, d = m
    total = f"{a} + {b} + {c} + {d} = {s}"
    user = {
        "en": f"{name} scored {a}, {b}, {c} and {d} points in four tests. What is the average score?",
        "es": f"{name} sacó {a}, {b}, {c} y {d} puntos en cuatro exámenes. ¿Cuál es la puntuación media?",
        "de": f"{name} hat in vier Tests {a}, {b}, {c} und {d} Punkte erreicht. "
        "Wie hoch ist die durchschnittliche Punktzahl?",
        "fr": f"{name} a obtenu {a}, {b}, {c} et {d} points à quatre contrôles. Quelle est la note moyenne ?",
    }
    assistant = {
        "en": f"The total is {total}, and {s} / 4 = {avg}.\n{answer_line('en', avg)}",
        "es": f"El total es {total}, y {s} / 4 = {avg}.\n{answer_line('es', avg)}",
        "de": f"Die Summe ist {total}, und {s} / 4 = {avg}.\n{answer_line('de', avg)}",
        "fr": f"Le total est {total}, et {s} / 4 = {avg}.\n{answer_line('fr', avg)}",
    }
    return msgs(user, assistant)


PAR_CITIES = (
    ("Vienna", "Viena", "Wien", "Vienne"),
    ("Munich", "Múnich", "München", "Munich"),
    ("Lisbon", "Lisboa", "Lissabon", "Lisbonne"),
    ("Geneva", "Ginebra", "Genf", "Genève"),
    ("Seville", "Sevilla", "Sevilla", "Séville"),
    ("Cologne", "Colonia", "Köln", "Cologne"),
)
PAR_CONDITIONS = (
    ("light rain", "lluvia ligera", "leichtem Regen", "une pluie fine"),
    ("clear skies", "cielo despejado", "klarem Himmel", "un ciel dégagé"),
    ("strong wind", "viento fuerte", "starkem Wind", "un vent fort"),
    ("fog", "niebla", "Nebel", "du brouillard"),
)
UNRELATED_FR = "Ma sœur vient d'adopter un chat roux qui dort toute la journée sur le canapé du salon."


def par_weather(
    rng: random.Random,
    *,
    city: tuple[str, ...] | None = None,
    translated_args_de: bool = False,
    unrelated_fr: bool = False,
) -> dict[str, list[Message]]:
    names = dict(zip(LANGS, city or rng.choice(PAR_CITIES), strict=True))
    cond = dict(zip(LANGS, rng.choice(PAR_CONDITIONS), strict=True))
    t = rng.randint(4, 28)
    system = {
        "en": "You are a helpful assistant. Use the tool `get_weather` to look up the current weather in a city "
        "before you answer.",
        "es": "Eres un asistente útil. Usa la herramienta `get_weather` para consultar el tiempo actual en una "
        "ciudad antes de responder.",
        "de": "Du bist ein hilfreicher Assistent. Verwende das Werkzeug `get_weather`, um das aktuelle Wetter in "
        "einer Stadt abzufragen, bevor du antwortest.",
        "fr": "Tu es un assistant serviable. Utilise l'outil `get_weather` pour consulter la météo actuelle "
        "d'une ville avant de répondre.",
    }
    user = {
        "en": f"What is the weather like in {names['en']} right now?",
        "es": f"¿Qué tiempo hace ahora mismo en {names['es']}?",
        "de": f"Wie ist das Wetter gerade in {names['de']}?",
        "fr": UNRELATED_FR if unrelated_fr else f"Quel temps fait-il en ce moment à {names['fr']} ?",
    }
    reply = {
        "en": f"It is {t} °C in {names['en']} right now, with {cond['en']}.",
        "es": f"Ahora mismo hace {t} °C en {names['es']}, con {cond['es']}.",
        "de": f"In {names['de']} sind es gerade {t} °C bei {cond['de']}.",
        "fr": f"Il fait actuellement {t} °C à {names['fr']}, avec {cond['fr']}.",
    }
    call = Call(
        "get_weather",
        {"city": names["en"]},
        {"city": names["en"], "temperature_c": t, "condition": cond["en"]},
    )
    arguments = {"de": {"city": names["de"]}} if translated_args_de else None
    return tool_msgs(system, user, call, reply, call_id=f"call_{rng.randint(100, 999)}", arguments=arguments)


def par_currency(rng: random.Random) -> dict[str, list[Message]]:
    if rng.random() < 0.6:
        amount, src, rate = rng.choice((100, 250, 300, 400, 500, 750)), "USD", Decimal("0.92")
        names = ("US dollars", "dólares estadounidenses", "US-Dollar", "dollars américains")
    else:
        amount, src, rate = rng.choice((50, 100, 200, 300)), "GBP", Decimal("1.16")
        names = ("British pounds", "libras esterlinas", "britische Pfund", "livres sterling")
    result = int(amount * rate)
    n = dict(zip(LANGS, names, strict=True))
    system = {
        "en": "You are a helpful assistant. Call `convert_currency` to get today's exchange rate before you "
        "convert an amount.",
        "es": "Eres un asistente útil. Llama a `convert_currency` para obtener el tipo de cambio de hoy antes de "
        "convertir una cantidad.",
        "de": "Du bist ein hilfreicher Assistent. Rufe `convert_currency` auf, um den heutigen Wechselkurs zu "
        "erhalten, bevor du einen Betrag umrechnest.",
        "fr": "Tu es un assistant serviable. Appelle `convert_currency` pour obtenir le taux de change du jour "
        "avant de convertir un montant.",
    }
    user = {
        "en": f"How much is {amount} {n['en']} in euros?",
        "es": f"¿Cuántos euros son {amount} {n['es']}?",
        "de": f"Wie viel sind {amount} {n['de']} in Euro?",
        "fr": f"Combien font {amount} {n['fr']} en euros ?",
    }
    reply = {
        "en": f"{amount} {n['en']} are {result} euros at today's rate.",
        "es": f"{amount} {n['es']} equivalen a {result} euros al cambio de hoy.",
        "de": f"{amount} {n['de']} entsprechen zum heutigen Kurs {result} Euro.",
        "fr": f"{amount} {n['fr']} valent {result} euros au taux du jour.",
    }
    call = Call(
        "convert_currency",
        {"amount": amount, "from_currency": src, "to_currency": "EUR"},
        {"amount": amount, "from": src, "to": "EUR", "rate": float(rate), "result": result},
    )
    return tool_msgs(system, user, call, reply, call_id=f"call_{rng.randint(100, 999)}")


def par_oven(rng: random.Random) -> dict[str, list[Message]]:
    f, c = rng.choice(((338, 170), (356, 180), (374, 190), (392, 200), (428, 220)))
    system = {
        "en": "You are a helpful assistant. Use `convert_units` for any unit conversion.",
        "es": "Eres un asistente útil. Usa `convert_units` para cualquier conversión de unidades.",
        "de": "Du bist ein hilfreicher Assistent. Verwende `convert_units` für jede Umrechnung von Einheiten.",
        "fr": "Tu es un assistant serviable. Utilise `convert_units` pour toute conversion d'unités.",
    }
    user = {
        "en": f"My recipe says to bake at {f} degrees Fahrenheit. What is that in Celsius?",
        "es": f"Mi receta dice que hay que hornear a {f} grados Fahrenheit. ¿Cuánto es eso en grados Celsius?",
        "de": f"In meinem Rezept steht, dass man bei {f} Grad Fahrenheit backen soll. "
        "Wie viel ist das in Grad Celsius?",
        "fr": f"Ma recette indique une cuisson à {f} degrés Fahrenheit. Combien cela fait-il en degrés Celsius ?",
    }
    reply = {
        "en": f"{f} °F is {c} °C, so set your oven to {c} °C.",
        "es": f"{f} °F equivalen a {c} °C, así que pon el horno a {c} °C.",
        "de": f"{f} °F entsprechen {c} °C, stellen Sie den Ofen also auf {c} °C.",
        "fr": f"{f} °F correspondent à {c} °C : réglez donc votre four sur {c} °C.",
    }
    args = {"value": f, "from_unit": "fahrenheit", "to_unit": "celsius"}
    call = Call("convert_units", args, {**args, "result": c})
    return tool_msgs(system, user, call, reply, call_id=f"call_{rng.randint(100, 999)}")


PAR_EVENTS = (
    ("Team meeting", "team meeting", "la reunión de equipo", "das Teammeeting", "la réunion d'équipe"),
    (
        "Dentist appointment",
        "dentist appointment",
        "la cita con el dentista",
        "der Zahnarzttermin",
        "le rendez-vous chez le dentiste",
    ),
    (
        "Lunch with Sara",
        "lunch with Sara",
        "la comida con Sara",
        "das Mittagessen mit Sara",
        "le déjeuner avec Sara",
    ),
    ("Yoga class", "yoga class", "la clase de yoga", "der Yogakurs", "le cours de yoga"),
    (
        "Call with the bank",
        "call with the bank",
        "la llamada con el banco",
        "das Telefonat mit der Bank",
        "l'appel avec la banque",
    ),
)
PAR_MONTHS = (
    ("March", "marzo", "März", "mars"),
    ("April", "abril", "April", "avril"),
    ("May", "mayo", "Mai", "mai"),
    ("June", "junio", "Juni", "juin"),
)


def par_calendar(rng: random.Random) -> dict[str, list[Message]]:
    month_index = rng.randrange(len(PAR_MONTHS))
    month = dict(zip(LANGS, PAR_MONTHS[month_index], strict=True))
    day = rng.randint(2, 28)
    e1, e2 = rng.sample(PAR_EVENTS, 2)
    (h1, m1), (h2, m2) = (rng.randint(8, 11), rng.choice((0, 30))), (rng.randint(13, 17), rng.choice((0, 30)))
    t1, t2 = f"{h1}:{m1:02d}", f"{h2}:{m2:02d}"
    iso = f"2025-{month_index + 3:02d}-{day:02d}"
    system = {
        "en": "You are a helpful assistant that manages the user's calendar with the tool `list_events`.",
        "es": "Eres un asistente útil que gestiona el calendario del usuario con la herramienta `list_events`.",
        "de": "Du bist ein hilfreicher Assistent, der mit dem Werkzeug `list_events` den Kalender des Nutzers "
        "verwaltet.",
        "fr": "Tu es un assistant serviable qui gère l'agenda de l'utilisateur avec l'outil `list_events`.",
    }
    user = {
        "en": f"What is on my calendar for {month['en']} {day}?",
        "es": f"¿Qué tengo en el calendario el {day} de {month['es']}?",
        "de": f"Was steht am {day}. {month['de']} in meinem Kalender?",
        "fr": f"Qu'est-ce que j'ai dans mon agenda le {day} {month['fr']} ?",
    }
    reply = {
        "en": f"You have two events on {month['en']} {day}: the {e1[1]} at {t1} and the {e2[1]} at {t2}.",
        "es": f"El {day} de {month['es']} tienes dos eventos: {e1[2]} a las {t1} y {e2[2]} a las {t2}.",
        "de": f"Am {day}. {month['de']} stehen zwei Termine an: {e1[3]} um {t1} Uhr und {e2[3]} um {t2} Uhr.",
        "fr": f"Le {day} {month['fr']}, vous avez deux événements : {e1[4]} à {t1} et {e2[4]} à {t2}.",
    }
    events = [
        {"title": e1[0], "start": f"{h1:02d}:{m1:02d}"},
        {"title": e2[0], "start": f"{h2:02d}:{m2:02d}"},
    ]
    call = Call("list_events", {"date": iso}, {"date": iso, "events": events})
    return tool_msgs(system, user, call, reply, call_id=f"call_{rng.randint(100, 999)}")


PAR_SEARCH_SYSTEM = {
    "en": "You are a helpful assistant. Use `web_search` to check facts before you answer.",
    "es": "Eres un asistente útil. Usa `web_search` para comprobar los datos antes de responder.",
    "de": "Du bist ein hilfreicher Assistent. Nutze `web_search`, um Fakten zu überprüfen, bevor du antwortest.",
    "fr": "Tu es un assistant serviable. Utilise `web_search` pour vérifier les faits avant de répondre.",
}


def par_search_eiffel(rng: random.Random) -> dict[str, list[Message]]:
    user = {
        "en": "When was the Eiffel Tower completed, and how tall is it?",
        "es": "¿Cuándo se terminó la torre Eiffel y cuánto mide?",
        "de": "Wann wurde der Eiffelturm fertiggestellt, und wie hoch ist er?",
        "fr": "Quand la tour Eiffel a-t-elle été achevée, et quelle est sa hauteur ?",
    }
    reply = {
        "en": "The Eiffel Tower was completed in 1889 and is 330 metres tall today.",
        "es": "La torre Eiffel se terminó en 1889 y hoy mide 330 metros.",
        "de": "Der Eiffelturm wurde 1889 fertiggestellt und ist heute 330 Meter hoch.",
        "fr": "La tour Eiffel a été achevée en 1889 et mesure aujourd'hui 330 mètres.",
    }
    result = {
        "results": [
            {
                "title": "Eiffel Tower - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/Eiffel_Tower",
                "snippet": "Completed in 1889, the tower is 330 metres tall including its antennas.",
            }
        ]
    }
    call = Call("web_search", {"query": "Eiffel Tower completion year height"}, result)
    return tool_msgs(PAR_SEARCH_SYSTEM, user, call, reply, call_id=f"call_{rng.randint(100, 999)}")


def par_search_novel(rng: random.Random) -> dict[str, list[Message]]:
    user = {
        "en": "Who wrote One Hundred Years of Solitude, and when was it published?",
        "es": "¿Quién escribió Cien años de soledad y cuándo se publicó?",
        "de": "Wer hat „Hundert Jahre Einsamkeit“ geschrieben, und wann ist das Buch erschienen?",
        "fr": "Qui a écrit Cent ans de solitude, et quand le livre a-t-il été publié ?",
    }
    reply = {
        "en": "It was written by Gabriel García Márquez and first published in 1967.",
        "es": "La escribió Gabriel García Márquez y se publicó por primera vez en 1967.",
        "de": "Der Roman stammt von Gabriel García Márquez und erschien erstmals 1967.",
        "fr": "Il a été écrit par Gabriel García Márquez et publié pour la première fois en 1967.",
    }
    result = {
        "results": [
            {
                "title": "One Hundred Years of Solitude - Wikipedia",
                "url": "https://en.wikipedia.org/wiki/One_Hundred_Years_of_Solitude",
                "snippet": "A 1967 novel by Colombian author Gabriel García Márquez.",
            }
        ]
    }
    call = Call("web_search", {"query": "One Hundred Years of Solitude author publication year"}, result)
    return tool_msgs(PAR_SEARCH_SYSTEM, user, call, reply, call_id=f"call_{rng.randint(100, 999)}")


REVERSE_CODE = "```python\nnumbers = [1, 2, 3, 4]\nprint(numbers[::-1])  # [4, 3, 2, 1]\n```"


def par_reverse(*, altered_fr: bool = False) -> dict[str, list[Message]]:
    code_fr = REVERSE_CODE.replace("numbers", "nombres") if altered_fr else REVERSE_CODE
    user = {
        "en": "How do I reverse a list in Python?",
        "es": "¿Cómo invierto una lista en Python?",
        "de": "Wie kehre ich eine Liste in Python um?",
        "fr": "Comment inverser une liste en Python ?",
    }
    assistant = {
        "en": f"Use slicing with a step of -1, which returns a new list:\n\n{REVERSE_CODE}\n\n"
        "If you want to change the list in place, call `numbers.reverse()` instead.",
        "es": f"Usa el corte (slicing) con un paso de -1, que devuelve una lista nueva:\n\n{REVERSE_CODE}\n\n"
        "Si quieres modificar la propia lista, llama a `numbers.reverse()`.",
        "de": f"Verwende Slicing mit der Schrittweite -1; das liefert eine neue Liste:\n\n{REVERSE_CODE}\n\n"
        "Wenn du die Liste direkt verändern willst, rufe stattdessen `numbers.reverse()` auf.",
        "fr": f"Utilise le découpage (slicing) avec un pas de -1, qui renvoie une nouvelle liste :\n\n{code_fr}\n\n"
        "Si tu veux modifier la liste sur place, appelle plutôt `numbers.reverse()`.",
    }
    return msgs(user, assistant)


def par_count_lines() -> dict[str, list[Message]]:
    code = "```bash\nwc -l notes.txt\n```"
    user = {
        "en": "How can I count the lines in a text file from the terminal?",
        "es": "¿Cómo puedo contar las líneas de un archivo de texto desde la terminal?",
        "de": "Wie kann ich im Terminal die Zeilen einer Textdatei zählen?",
        "fr": "Comment compter les lignes d'un fichier texte depuis le terminal ?",
    }
    assistant = {
        "en": f"Use `wc` with the `-l` option:\n\n{code}\n\nIt prints the number of lines followed by the file name.",
        "es": f"Usa `wc` con la opción `-l`:\n\n{code}\n\nMuestra el número de líneas seguido del nombre del archivo.",
        "de": f"Verwende `wc` mit der Option `-l`:\n\n{code}\n\n"
        "Der Befehl gibt die Anzahl der Zeilen und danach den Dateinamen aus.",
        "fr": f"Utilise `wc` avec l'option `-l` :\n\n{code}\n\nLa commande affiche le nombre de lignes suivi du nom "
        "du fichier.",
    }
    return msgs(user, assistant)


def par_dedupe() -> dict[str, list[Message]]:
    code = (
        '```python\nitems = ["b", "a", "b", "c", "a"]\nunique = list(dict.fromkeys(items))\n'
        "print(unique)  # ['b', 'a', 'c']\n```"
    )
    user = {
        "en": "How do I remove duplicates from a list in Python but keep the original order?",
        "es": "¿Cómo elimino los duplicados de una lista en Python sin perder el orden original?",
        "de": "Wie entferne ich Duplikate aus einer Liste in Python, ohne die ursprüngliche Reihenfolge zu verlieren?",
        "fr": "Comment supprimer les doublons d'une liste en Python tout en gardant l'ordre d'origine ?",
    }
    assistant = {
        "en": f"Dictionaries keep insertion order, so `dict.fromkeys` does the job in one line:\n\n{code}\n\n"
        "A `set` would also remove duplicates, but it does not keep the order.",
        "es": f"Los diccionarios conservan el orden de inserción, así que `dict.fromkeys` lo resuelve en una "
        f"línea:\n\n{code}\n\nUn `set` también elimina los duplicados, pero no conserva el orden.",
        "de": f"Dictionaries behalten die Einfügereihenfolge bei, daher erledigt `dict.fromkeys` das in einer "
        f"Zeile:\n\n{code}\n\nEin `set` entfernt zwar auch Duplikate, behält aber die Reihenfolge nicht bei.",
        "fr": f"Les dictionnaires conservent l'ordre d'insertion, donc `dict.fromkeys` fait l'affaire en une "
        f"ligne :\n\n{code}\n\nUn `set` supprime aussi les doublons, mais il ne conserve pas l'ordre.",
    }
    return msgs(user, assistant)


GroupRows = list[tuple[str, list[Message]]]


def pick(per_lang: dict[str, list[Message]], langs: tuple[str, ...] = LANGS) -> GroupRows:
    return [(lang, per_lang[lang]) for lang in langs]


def parallel_groups(rng: random.Random) -> list[tuple[str, GroupRows]]:
    """40 groups of (lang, messages) rows; the deliberate faults are listed in ``demo/README.md``."""
    groups: list[tuple[str, GroupRows]] = []
    seen: set[str] = set()

    def fresh(make: Callable[[], dict[str, list[Message]]]) -> dict[str, list[Message]]:
        """Draw until the English text differs from every earlier group by more than a name."""
        while True:
            per_lang = make()
            key = "\n".join(m["content"] for m in per_lang["en"])
            for name in NAMES:
                key = key.replace(name, "")
            if key not in seen:
                seen.add(key)
                return per_lang

    for i in range(4):
        groups.append(("math", pick(fresh(partial(par_shopping, rng, changed_es=i == 0)))))
    for i in range(3):
        groups.append(("math", pick(fresh(partial(par_speed, rng)), LANGS[1:] if i == 0 else LANGS)))
    for i in range(3):
        per_lang = fresh(partial(par_percent, rng))
        rows = pick(per_lang)
        if i == 0:
            rows[2] = ("de", per_lang["it"])
        if i == 1:
            rows.append(("it", per_lang["it"]))
        groups.append(("math", rows))
    for _ in range(3):
        groups.append(("math", pick(fresh(partial(par_tank, rng)))))
    for i in range(3):
        groups.append(("math", pick(fresh(partial(par_savings, rng, too_long_es=i == 0)))))
    for i in range(3):
        per_lang = fresh(partial(par_algebra, rng))
        groups.append(("math", pick(per_lang) + ([("xx", per_lang["nl"])] if i == 0 else [])))
    for i in range(3):
        per_lang = fresh(partial(par_average, rng))
        groups.append(("math", pick(per_lang) + ([("de", per_lang["de"])] if i == 0 else [])))
    weather = (
        partial(par_weather, rng, city=PAR_CITIES[1], translated_args_de=True),
        partial(par_weather, rng, city=PAR_CITIES[0], unrelated_fr=True),
        partial(par_weather, rng, city=PAR_CITIES[2]),
        partial(par_weather, rng, city=PAR_CITIES[3]),
    )
    others = (
        (par_currency,) * 3 + (par_oven,) * 3 + (par_calendar,) * 3 + (par_search_eiffel, par_search_novel)
    )
    for make in (*weather, *(partial(f, rng) for f in others)):
        groups.append(("tool_calling", pick(fresh(make))))
    groups.append(("chat", pick(par_reverse(altered_fr=True))))
    groups.append(("chat", pick(par_count_lines())))
    groups.append(("chat", pick(par_dedupe())))
    return groups


def parallel_rows(rng: random.Random) -> list[Row]:
    """Groups in shuffled order, numbered ``pg-001``...; rows of a group stay together."""
    groups = parallel_groups(rng)
    rng.shuffle(groups)
    return [
        {"id": f"pg-{number:03d}", "lang": lang, "task": task, "messages": messages}
        for number, (task, rows) in enumerate(groups, 1)
        for lang, messages in rows
    ]


# ---------------------------------------------------------------------------------------------------------
# preference.jsonl
# ---------------------------------------------------------------------------------------------------------


def preference_rows(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for i, p in enumerate(problems(rng, 60), 1):
        row: Row = {"id": f"pref-{i:04d}", "task": "math"}
        if i % 5 == 0:
            row |= {
                "prompt": [
                    {
                        "role": "system",
                        "content": 'Solve the problem step by step and end with "The answer is N."',
                    },
                    {"role": "user", "content": p.question},
                ],
                "chosen": [{"role": "assistant", "content": p.answer}],
                "rejected": [{"role": "assistant", "content": p.wrong}],
            }
        else:
            row |= {"prompt": p.question, "chosen": p.answer, "rejected": p.wrong}
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[Row], extra_lines: list[bytes] | None = None) -> None:
    """One JSON object per line, UTF-8, ``\\n`` endings; ``extra_lines`` are written as raw bytes."""
    data = [to_json(row).encode("utf-8") for row in rows] + (extra_lines or [])
    path.write_bytes(b"\n".join(data) + b"\n")


def main() -> None:
    DEMO.mkdir(exist_ok=True)
    source = source_rows(random.Random(f"{SEED}-source"))
    first_math = next(r["id"] for r in source if r["task"] == "math")
    write_jsonl(DEMO / "source.jsonl", source, source_bad_lines(first_math))
    write_jsonl(DEMO / "parallel.jsonl", parallel_rows(random.Random(f"{SEED}-parallel")))
    write_jsonl(DEMO / "preference.jsonl", preference_rows(random.Random(f"{SEED}-preference")))


if __name__ == "__main__":
    main()

"""Procedural arithmetic word problems: a benchmark small models can learn on a CPU in minutes.

Problem `i` of a split depends only on (seed, split, i), so `--limit` never changes which
problems a run sees, and train/test are disjoint by construction (a hash bucket of the text).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from failtune.grading import Grade
from failtune.grading.numeric import grade_numeric
from failtune.tasks.base import Problem, Task
from failtune.tasks.gsm8k import MATH_STOP_AFTER, math_prompt

NAMES = [
    "Ava",
    "Ben",
    "Chloe",
    "Dan",
    "Ella",
    "Finn",
    "Grace",
    "Hugo",
    "Isla",
    "Jack",
    "Maya",
    "Noah",
    "Olivia",
    "Liam",
    "Sofia",
    "Omar",
    "Priya",
    "Ravi",
    "Lena",
    "Tom",
]
THINGS = [
    "apples",
    "marbles",
    "stickers",
    "books",
    "pencils",
    "cookies",
    "stamps",
    "shells",
    "coins",
    "cards",
    "balloons",
    "candies",
    "toy cars",
    "beads",
    "flowers",
]
CONTAINERS = ["boxes", "bags", "jars", "baskets", "packs", "crates"]
_TEST_BUCKETS = 5  # one text-hash bucket in five belongs to test, the rest to train

Made = tuple[str, str, int]  # question, worked solution, answer


def _add(r: random.Random, hi: int) -> Made:
    name, thing = r.choice(NAMES), r.choice(THINGS)
    a, b = r.randint(2, hi), r.randint(2, hi)
    q = (
        f"{name} has {a} {thing}. {name} gets {b} more {thing}. "
        f"How many {thing} does {name} have now?"
    )
    return q, f"{name} has {a} + {b} = {a + b} {thing}.", a + b


def _subtract(r: random.Random, hi: int) -> Made:
    name, friend, thing = *r.sample(NAMES, 2), r.choice(THINGS)
    a = r.randint(5, hi + 5)
    b = r.randint(1, a - 1)
    q = (
        f"{name} had {a} {thing} and gave {b} of them to {friend}. "
        f"How many {thing} does {name} have left?"
    )
    return q, f"{name} has {a} - {b} = {a - b} {thing} left.", a - b


def _multiply(r: random.Random, hi: int) -> Made:
    thing, box = r.choice(THINGS), r.choice(CONTAINERS)
    a, b = r.randint(2, max(3, hi // 4)), r.randint(2, 12)
    q = f"There are {a} {box} with {b} {thing} in each. How many {thing} are there in total?"
    return q, f"There are {a} × {b} = {a * b} {thing}.", a * b


def _two_step(r: random.Random, hi: int) -> Made:
    name, thing, box = r.choice(NAMES), r.choice(THINGS), r.choice(CONTAINERS)
    a, b = r.randint(2, max(3, hi // 5)), r.randint(2, 10)
    c = r.randint(1, a * b - 1)
    q = (
        f"{name} buys {a} {box} of {thing} with {b} {thing} in each, then gives away {c} {thing}. "
        f"How many {thing} does {name} have now?"
    )
    s = (
        f"{name} buys {a} × {b} = {a * b} {thing}. "
        f"After giving away {c}, {a * b} - {c} = {a * b - c} are left."
    )
    return q, s, a * b - c


KINDS: dict[str, Callable[[random.Random, int], Made]] = {
    "add": _add,
    "subtract": _subtract,
    "multiply": _multiply,
    "two_step": _two_step,
}


class Arith(Task):
    """Add, subtract, multiply and two-step word problems with integer answers."""

    name = "arith"
    category = "arith"
    splits = ("train", "test")
    # Worked solutions are ~25 tokens; a cap of 128 keeps every answer a model can get right
    # while a rambling base model does not hold a whole static batch for longer.
    default_max_new_tokens = 128
    stop_after = MATH_STOP_AFTER

    def __init__(self, seed: int = 0, size: int = 2000, max_operand: int = 60) -> None:
        self.seed, self.size, self.max_operand = seed, size, max_operand

    def load(self, split: str) -> list[Problem]:
        self.check_split(split)
        return [self._make(split, i) for i in range(self.size)]

    def grade(self, problem: Problem, completion: str, finish_reason: str | None) -> Grade:
        return grade_numeric(completion, problem.expected, finish_reason)

    def _make(self, split: str, index: int) -> Problem:
        want_test = split == "test"
        for attempt in range(1000):
            r = random.Random(f"arith:{self.seed}:{split}:{index}:{attempt}")
            kind = r.choice(sorted(KINDS))
            question, steps, answer = KINDS[kind](r, self.max_operand)
            bucket = int(hashlib.sha256(question.encode()).hexdigest(), 16) % _TEST_BUCKETS
            if (bucket == 0) == want_test:
                break
        return Problem(
            id=self.problem_id(split, index),
            task=self.name,
            split=split,
            prompt=math_prompt(question),
            expected=str(answer),
            solution=f"{steps}\nThe answer is {answer}.",
        )

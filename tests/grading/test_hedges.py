"""An answer that hedges between several values is never graded correct, by any grader.

A reward that accepts "18 or 20" teaches a model to hedge. Each reply below offers the gold
beside another value; each grader must refuse it whichever value comes last. A legitimately
multi-valued MATH answer ("x = 2 or x = 3" for the gold {2, 3}) is a set, not a hedge.
"""

from __future__ import annotations

import pytest

from failtune.grading.choice import grade_choice
from failtune.grading.math import grade_math
from failtune.grading.numeric import grade_numeric

JANET = "Janet's ducks lay 16 eggs. She eats 3 and bakes with 4, so she sells 16 - 3 - 4 = 9.\n"

NUMERIC_HEDGES = [
    "She makes 9 * 2 = 18 or 20 dollars, depending on the price.",
    JANET + "So she makes either $18 or $20 every day.",
    JANET + "The answer is 18 (or possibly 20).",
    JANET + "The answer is 18, or 20 if she also sells the eggs she bakes with.",
    JANET + "The answer is 18 -- or 20.",
    JANET + "The answer is 20 (alternatively 18).",
    JANET + "The answer is $\\boxed{18}$ or $\\boxed{20}$.",
    JANET + "She makes $\\boxed{20}$.\n\n$\\boxed{18}$",
    JANET + "The answer is \\boxed{18 \\text{ or } 20}.",
    JANET + "The answer is $\\boxed{18, 20}$.",
    JANET + "Selling the baking eggs too gives $\\boxed{20}$. Otherwise she makes $\\boxed{18}$.",
]


@pytest.mark.parametrize("reply", NUMERIC_HEDGES)
def test_numeric_grader_refuses_hedges(reply: str) -> None:
    grade = grade_numeric(reply, "18")
    assert not grade.correct and grade.reason == "no_answer", grade


@pytest.mark.parametrize(
    "reply",
    [
        "She makes $18 per day, or $126 per week.",  # the same answer in other units
        JANET + "She makes $\\boxed{18}$.\n\nChecking: 9 * 2 = 18, so $\\boxed{18}$.",
        JANET + "First try: $\\boxed{20}$. Wait, I made a mistake: 9 * 2 = 18, so $\\boxed{18}$.",
    ],
)
def test_numeric_restatements_and_corrections_are_no_hedge(reply: str) -> None:
    assert grade_numeric(reply, "18").correct


MATH_HEDGES = [
    "Solving, the answer is $\\boxed{18 \\text{ or } 20}$.",
    "The answer is either $20$ or $18$.",
    "So $x = \\boxed{20}$.\n\n$x = \\boxed{18}$",
    "Counting the empty set too gives $\\boxed{20}$; otherwise $\\boxed{18}$.",
    "The value is $\\boxed{18}$ or $\\boxed{20}$, depending on the convention.",
    "Hence $x = \\pm 18$, i.e. $\\boxed{\\pm 18}$.",
]


@pytest.mark.parametrize("reply", MATH_HEDGES)
def test_math_grader_refuses_hedges(reply: str) -> None:
    grade = grade_math(reply, "18")
    assert not grade.correct, grade


def test_a_multi_valued_math_answer_is_a_set() -> None:
    reply = "Factoring, $(x - 2)(x - 3) = 0$, so $\\boxed{x = 2 \\text{ or } x = 3}$."
    assert grade_math(reply, "2, 3").correct
    assert grade_math(reply, "\\{3, 2\\}").correct
    assert not grade_math(reply, "2").correct
    assert grade_math(reply, "2").reason == "ambiguous"
    assert not grade_math("So $\\boxed{x = 2}$.", "2, 3").correct  # a value missing


CHOICES = ["Paris", "London", "Berlin", "Rome"]
CHOICE_HEDGES = [
    "The answer is A or B or C.",
    "The answer is (A), (B) or (C).",
    "The answer is A (or maybe B).",
    "The answer is $\\boxed{A}$ or $\\boxed{B}$.",
    "I'd choose A or C.",
    "Answer: A or B",
    "Both A and B are correct.",
]


@pytest.mark.parametrize("reply", CHOICE_HEDGES)
@pytest.mark.parametrize("gold", [0, 1])
def test_choice_grader_refuses_hedges(reply: str, gold: int) -> None:
    assert not grade_choice(reply, CHOICES, gold).correct

"""The MATH grader's rules, each on solutions written the way strong models write them.

Every case names the rule it checks; each one was graded wrongly by the grader this one replaced
(which read the last expression math-verify found anywhere in the text).
"""

from __future__ import annotations

import random
import time
from typing import NamedTuple

import pytest

from failtune.grading import TRUNCATED
from failtune.grading.math import grade_math


class Case(NamedTuple):
    rule: str
    gold: str
    completion: str
    correct: bool
    reason: str


CASES = [
    # ---- final-answer markers other than a box --------------------------------------------
    Case(
        "prm800k-answer-heading",
        "5\\sqrt{2}",
        "I need the distance between $(1, 2)$ and $(6, 7)$.\n\n"
        "The horizontal change is $6 - 1 = 5$ and the vertical change is $7 - 2 = 5$.\n\n"
        "By the distance formula, the distance is $\\sqrt{5^2 + 5^2} = \\sqrt{50}$.\n\n"
        "I can simplify $\\sqrt{50} = \\sqrt{25 \\cdot 2} = 5\\sqrt{2}$.\n\n"
        "# Answer\n\n5\\sqrt{2}",
        True,
        "correct",
    ),
    Case(
        "prm800k-answer-heading-wrong",
        "5\\sqrt{2}",
        "The horizontal change is $5$ and the vertical change is $5$, so the distance is "
        "$5 + 5 = 10$ by adding the legs.\n\n# Answer\n\n10",
        False,
        "wrong_answer",
    ),
    Case(
        "bold-final-answer-heading",
        "\\frac{3}{4}",
        "## Step 1: Count the outcomes\nThere are $4$ equally likely outcomes.\n\n"
        "## Step 2: Count the favourable ones\nThree of them, $HT$, $TH$ and $HH$, contain at "
        "least one head.\n\n**Final Answer**\n\n$\\dfrac{3}{4}$\n\n"
        "(This agrees with $1 - \\frac{1}{4}$ from the complement, out of $4$ cases.)",
        True,
        "correct",
    ),
    Case(
        "bold-answer-colon",
        "\\text{Sunday}",
        "Counting forward $40$ days from a Tuesday: $40 = 5 \\cdot 7 + 5$, so we move $5$ days "
        "past Tuesday.\n\n**Answer:** Sunday\n\nCheck: $5 \\cdot 7 = 35$ days bring us back to "
        "Tuesday, and $5$ more days give Sunday.",
        True,
        "correct",
    ),
    Case(
        "the-answer-is-then-a-check",
        "6",
        "The divisors of $12$ are $1, 2, 3, 4, 6, 12$, so $12$ has $6$ of them. The answer is "
        "$6$.\n\nAs a check, $12 = 2^2 \\cdot 3$ gives $(2+1)(1+1) = 6$ divisors, and $1 + 2 + 3 "
        "+ 4 + 6 + 12 = 28$.",
        True,
        "correct",
    ),
    Case(
        "final-answer-heading-then-a-sentence",
        "252",
        "Each lattice path from $(0,0)$ to $(5,5)$ is a word of $10$ letters with $5$ R's, so "
        "we count the ways to place the R's.\n\n**Final Answer**\n\nThere are 252 lattice "
        "paths.\n\n(Each path is a word of $10$ letters, $5$ of them R.)",
        True,
        "correct",
    ),
    Case(
        "prm800k-answer-heading-unevaluated",
        "5760",
        "I can arrange the books among themselves in $5!$ ways and the magazines in $4!$ ways.\n\n"
        "The block of books can come first or second, which doubles the count.\n\n"
        "# Answer\n\n2 \\cdot 5! \\cdot 4!",
        True,
        "correct",
    ),
    Case(
        "choice-letter-with-its-value",
        "\\text{(C)}",
        "The sum of the interior angles is $(n - 2) \\cdot 180^\\circ = 1800^\\circ$, so $n = "
        "12$.\n\nThe answer is $\\boxed{\\textbf{(C)}\\ 12}$.",
        True,
        "correct",
    ),
    Case(
        "the-answer-is-plain-latex",
        "5\\sqrt{2}",
        "The diagonal of a square of side $5$ is $5$ times $\\sqrt{2}$, so the answer is "
        "5\\sqrt{2}, the length of the diagonal.",
        True,
        "correct",
    ),
    Case(
        "minerva-final-answer-line",
        "-\\frac{1}{3}",
        "Setting the slopes equal, $3m + 1 = 0$, so $m = -\\frac{1}{3}$.\n"
        "Final Answer: The final answer is $-\\frac{1}{3}$. I hope it is correct. "
        "(I checked it against $2$ other values.)",
        True,
        "correct",
    ),
    Case(
        "bold-reply-only",
        "\\text{yes}",
        "**Yes**",
        True,
        "correct",
    ),
    # ---- LaTeX spacing and sizing, unicode spaces ----------------------------------------
    Case(
        "spacing-inside-complex-answer",
        "3+4i",
        "Multiplying out, $(2+i)^2 = 4 + 4i + i^2 = 3 + 4i$.\n\n"
        "Therefore $\\boxed{z = 3 + 4\\,i}$.",
        True,
        "correct",
    ),
    Case(
        "sizing-around-a-point",
        "\\left( 3, \\frac{\\pi}{2} \\right)",
        "The point $(0, 3)$ lies on the positive $y$-axis, so $r = 3$ and $\\theta = "
        "\\frac{\\pi}{2}$.\n\nThe polar coordinates are $\\boxed{\\bigl(3,\\ \\tfrac{\\pi}{2}"
        "\\bigr)}$.",
        True,
        "correct",
    ),
    Case(
        "unicode-thin-space-thousands",
        "40,\\!000",
        "The greatest common factor is $2^6 \\cdot 5^4 = 64 \\cdot 625$, which is "
        "$\\boxed{40\u2009000}$.",
        True,
        "correct",
    ),
    Case(
        "non-breaking-space-in-answer",
        "x^2+7x+10",
        "Expanding $(x+2)(x+5)$ gives $x^2 + 5x + 2x + 10$, so the answer is "
        "$\\boxed{x^2\u00a0+\u00a07x\u00a0+\u00a010}$.",
        True,
        "correct",
    ),
    # ---- answers written as an equation ---------------------------------------------------
    Case(
        "assignment-answer",
        "6",
        "Since the vertex is at $x = -\\frac{b}{2a}$, we need $-\\frac{-12}{2 \\cdot 1} = 6$. "
        "Thus the answer is $k = 6$.",
        True,
        "correct",
    ),
    Case(
        "assignment-of-a-pair-then-a-check",
        "(2, -1)",
        "Subtracting the equations gives $x = 2$, and substituting back gives $y = -1$.\n\n"
        "**Final Answer:** $(x, y) = (2, -1)$ (one can check $2(2) + 3(-1) = 1$).",
        True,
        "correct",
    ),
    Case(
        "assignment-answer-wrong",
        "6",
        "Since $k^2 = 36$ and $k < 0$, the answer is $k = -6$.",
        False,
        "wrong_answer",
    ),
    # ---- several values -------------------------------------------------------------------
    Case(
        "two-roots-as-a-set",
        "2, 3",
        "Factoring, $x^2 - 5x + 6 = (x - 2)(x - 3) = 0$, so $x = 2$ or $x = 3$.\n\n"
        "The solutions are $\\boxed{x = 2 \\text{ or } x = 3}$.",
        True,
        "correct",
    ),
    Case(
        "two-roots-then-a-remark",
        "2, -3",
        "By Vieta's formulas the roots add up to $-1$ and multiply to $-6$. Trying the factor "
        "pairs of $-6$, the roots are $x = 2$ and $x = -3$ (the product $-6$ matches $c/a$).",
        True,
        "correct",
    ),
    Case(
        "two-roots-one-missing",
        "2, 3",
        "Factoring, $x^2 - 5x + 6 = (x - 2)(x - 3) = 0$. Only the larger root matters here, so "
        "$\\boxed{3}$.",
        False,
        "wrong_answer",
    ),
    Case(
        "two-angles-boxed-apart",
        "30^\\circ, 150^\\circ",
        "Since $\\sin \\theta = \\frac{1}{2}$ with $0^\\circ < \\theta < 180^\\circ$, the "
        "angle is $\\boxed{30^\\circ}$ or $\\boxed{150^\\circ}$.",
        True,
        "correct",
    ),
    Case(
        "letters-against-text-letters",
        "\\text{A, C}",
        "Option (A) has slope $2$ and passes through the origin; option (B) has slope "
        "$-2$; option (C) is $y = 2x$ again written as $2x - y = 0$.\n\n"
        "The lines are (A) and (C), so the answer is $\\boxed{\\text{(A)}, \\text{(C)}}$.",
        True,
        "correct",
    ),
    # ---- text answers ---------------------------------------------------------------------
    Case(
        "text-answer",
        "\\text{Evelyn}",
        "Evelyn runs $4.5$ miles in $1.25$ hours, an average speed of $3.6$ miles per hour, "
        "the largest of the five.\n\nThe final answer is Evelyn.",
        True,
        "correct",
    ),
    Case(
        "text-answer-wrong",
        "\\text{Evelyn}",
        "Carla covers $5.2$ miles in $2$ hours.\n\nThe final answer is $\\boxed{\\text{Carla}}$.",
        False,
        "wrong_answer",
    ),
    # ---- evaluated arithmetic -------------------------------------------------------------
    Case(
        "product-of-factorials",
        "5760",
        "Arrange the $5$ books in $5!$ ways and the $4$ magazines in $4!$ ways; the two groups "
        "can go in $2$ orders.\n\nTotal: $\\boxed{2 \\cdot 5!\\, \\cdot 4!}$ arrangements.",
        True,
        "correct",
    ),
    Case(
        "product-of-binomials",
        "560",
        "Choose $3$ of the $8$ seniors and $2$ of the $5$ juniors independently.\n\n"
        "The committee can be formed in $\\boxed{\\binom{8}{3}\\binom{5}{2}}$ ways.",
        True,
        "correct",
    ),
    Case(
        "binomial-expression",
        "56",
        "We choose $3$ of the $8$ toppings, so there are $\\binom{8}{3}$ pizzas. The answer is "
        "$\\boxed{\\dbinom{8}{3}}$.",
        True,
        "correct",
    ),
    # ---- no answer in prose that states none ---------------------------------------------
    Case(
        "negated-sentence-states-no-answer",
        "7",
        "We test whether $391$ is prime. It is odd, its digit sum is $13$, and it does not end "
        "in $0$ or $5$. Dividing, $391 = 17 \\cdot 23$.\n\nThus $391$ is not divisible by $7$.",
        False,
        "no_answer",
    ),
    Case(
        "question-states-no-answer",
        "12",
        "The perimeter of the square is $4 \\cdot 3 = 12$ units. But is the side really $3$?",
        False,
        "no_answer",
    ),
    # ---- hedges ---------------------------------------------------------------------------
    Case(
        "hedge-or-inside-a-box",
        "18",
        "She sells $16 - 3 - 4 = 9$ eggs at $\\$2$ each.\n\nThe answer is "
        "$\\boxed{18 \\text{ or } 20}$.",
        False,
        "ambiguous",
    ),
    Case(
        "hedge-two-different-boxes",
        "18",
        "Counting the eggs she sells gives $\\boxed{20}$.\n\n$\\boxed{18}$",
        False,
        "ambiguous",
    ),
    Case(
        "hedge-alternatively",
        "18",
        "If she also sells the eggs she bakes with, she earns $\\boxed{26}$ dollars; "
        "alternatively, selling only the $9$ spare eggs, she earns $9 \\cdot 2 = \\boxed{18}$.",
        False,
        "ambiguous",
    ),
    Case(
        "hedge-either-or-after-marker",
        "18",
        "She sells $9$ eggs at $\\$2$ each.\n\nThe answer is either $18$ or $20$.",
        False,
        "ambiguous",
    ),
    Case(
        "same-value-boxed-twice-is-no-hedge",
        "\\frac{639}{40}",
        "Expressed as a fraction, $d = 15\\frac{975}{1000} = \\boxed{15\\frac{39}{40}}$, or "
        "$\\boxed{\\frac{639}{40}}$ inches.",
        True,
        "correct",
    ),
    Case(
        "revised-box-after-working",
        "20",
        "First guess: $\\boxed{18}$. Let me verify: the ducks lay $16$ eggs, she eats $3$ and "
        "bakes with $4$, and she sells $16 - 3 - 4 = 9$... wait, the recipe uses $2$ eggs, so "
        "$16 - 3 - 2 = 11$ are left and $11 \\cdot 2 = 22$, minus the $\\$2$ fee is "
        "$\\boxed{20}$.",
        True,
        "correct",
    ),
    # ---- thinking blocks ------------------------------------------------------------------
    Case(
        "answer-after-thinking",
        "12",
        "<think>\nMaybe the answer is 10? No: 3 times 4 is 12.\n</think>\n\n"
        "The product is $3 \\cdot 4 = \\boxed{12}$.",
        True,
        "correct",
    ),
    Case(
        "thinking-never-closed",
        "12",
        "<think>\nLet me try: 3 times 4 is 12, so the answer is 12. But wait, let me check",
        False,
        "no_answer",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.rule)
def test_math_grader_rule(case: Case) -> None:
    grade = grade_math(case.completion, case.gold, "stop")
    assert (grade.correct, grade.reason) == (case.correct, case.reason), grade


def test_every_rule_has_a_right_and_a_refused_case() -> None:
    """The set is not lopsided: it holds correct answers and every kind of refusal."""
    reasons = {c.reason for c in CASES}
    assert {"correct", "wrong_answer", "no_answer", "ambiguous"} <= reasons
    assert len({c.rule for c in CASES}) == len(CASES)


def test_a_heading_answer_counts_before_the_cut() -> None:
    """ "# Answer" is an explicit marker: a cut text that already gave it keeps it."""
    text = "So the sum is $12$.\n\n# Answer\n\n12\n\nLet me double-check: $5 + 7$"
    assert grade_math(text, "12", TRUNCATED).correct
    assert grade_math("So far the sum is $12$ and then", "12", TRUNCATED).reason == "truncated"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("\\boxed{" * 14_000, id="unclosed-boxes"),
        pytest.param("\\boxed{1} or " * 8_000, id="joined-boxes"),
        pytest.param("\\[" * 50_000, id="unclosed-display-math"),
        pytest.param("\\(" * 50_000, id="unclosed-inline-math"),
        pytest.param("$a" * 50_000, id="dollars"),
        pytest.param("the answer is " * 8_000, id="marker-soup"),
        pytest.param("\\text{" * 30_000, id="unclosed-text"),
        pytest.param("Note: $\\boxed{1}$\n" * 5_000, id="notes"),
        pytest.param("We get $x = 1$. " * 6_000, id="sentences"),
    ],
)
def test_large_adversarial_input_is_fast(text: str) -> None:
    """100 KB of pathological text is read from its end, with every scan bounded."""
    grade_math("$\\boxed{1}$", "1")  # math-verify's first import is not the grader's time
    start = time.perf_counter()
    grade_math(text, "1", "stop")
    assert time.perf_counter() - start < 2.0


def test_random_garbage_never_raises() -> None:
    rng = random.Random(20240602)
    alphabet = "0123456789,./-+=^_{}()[]$\\%*#: \n\tabxiboxedfractextleftright\u00a0\u2009"
    tokens = [
        "\\boxed{",
        "}",
        "$",
        "\\frac",
        "{1}",
        "# Answer\n",
        "**Answer:**",
        " or ",
        "\\pm",
        "The answer is",
        "<think>",
        "</think>",
        "\\text{",
        "Note:",
        "\\begin{pmatrix}",
    ]
    for _ in range(400):
        if rng.random() < 0.5:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 300)))
        else:
            text = "".join(rng.choice(tokens) for _ in range(rng.randrange(0, 40)))
        grade = grade_math(text, rng.choice(["1", "\\frac{1}{2}", "2, 3", "\\text{east}"]))
        assert grade.reason in {"correct", "wrong_answer", "no_answer", "ambiguous"}

"""MATH-style answers (LaTeX: fractions, roots, intervals, sets, expressions) via math-verify.

math-verify reads the completion's final answer (``\\boxed{}`` first, then LaTeX or a plain
expression, the last one given) and compares it to the gold symbolically, so ``\\frac{1}{2}``
equals ``0.5``, ``\\{2,1\\}`` equals ``\\{1,2\\}`` and ``(x+1)^2`` equals ``x^2+2x+1``.
"""

from __future__ import annotations

from failtune.grading import TRUNCATED, Grade, cut_followup, truncated
from failtune.grading.text import marked_answer

MATH_FORMAT = "Solve the problem step by step, then give your final answer as \\boxed{<answer>}."


def grade_math(completion: str, expected: str, finish_reason: str | None = None) -> Grade:
    """Reasons: correct, wrong_answer, no_answer and truncated (see failtune.grading.truncated;
    the explicit markers are \\boxed{} and the text grader's "The answer is", "Answer:"...)."""
    from math_verify import parse, verify

    gold = parse(expected if "$" in expected or "\\boxed" in expected else f"${expected}$")
    if not gold:
        raise ValueError(f"cannot read the gold answer {expected!r} as math")
    marked = marked_answer(cut_followup(completion))
    cut = truncated(finish_reason, marked is not None)
    if cut is not None:
        return cut
    if marked is not None and finish_reason == TRUNCATED:
        completion = completion[: marked[1]]  # cut text: only what led up to its final answer
    answer = parse(completion)
    if not answer:
        return Grade(False, None, "no_answer")
    extracted = str(answer[-1])
    if verify(gold, answer):
        return Grade(True, extracted, "correct")
    return Grade(False, extracted, "wrong_answer")

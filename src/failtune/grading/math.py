"""MATH-style answers (LaTeX: fractions, roots, intervals, sets, expressions) via math-verify.

math-verify reads the completion's final answer (``\\boxed{}`` first, then LaTeX or a plain
expression, the last one given) and compares it to the gold symbolically, so ``\\frac{1}{2}``
equals ``0.5``, ``\\{2,1\\}`` equals ``\\{1,2\\}`` and ``(x+1)^2`` equals ``x^2+2x+1``.
"""

from __future__ import annotations

from failtune.grading import Grade

MATH_FORMAT = "Solve the problem step by step, then give your final answer as \\boxed{<answer>}."
_TRUNCATED = "length"


def grade_math(completion: str, expected: str, finish_reason: str | None = None) -> Grade:
    from math_verify import parse, verify

    gold = parse(expected if "$" in expected or "\\boxed" in expected else f"${expected}$")
    if not gold:
        raise ValueError(f"cannot read the gold answer {expected!r} as math")
    answer = parse(completion)
    if not answer:
        reason = "truncated" if finish_reason == _TRUNCATED else "no_answer"
        return Grade(False, None, reason)
    extracted = str(answer[-1])
    if verify(gold, answer):
        return Grade(True, extracted, "correct")
    return Grade(False, extracted, "wrong_answer")

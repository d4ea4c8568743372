"""MATH-style answers (LaTeX: fractions, roots, intervals, sets, expressions, text) graded as a
careful MATH grader grades them.

failtune.grading.math_reader finds the final answer of a solution (every common marker, several
boxed values, hedges); failtune.grading.latex removes typesetting and splits several values.
Two values are equal when their cleaned spellings are ("\\text{Devon}" and "Devon", "(C)" and
"C"), else when math-verify finds them equal symbolically or numerically (``\\frac{1}{2}`` and
``0.5``, ``5!\\cdot 3!`` and ``720``, ``(x+1)^2`` and ``x^2+2x+1``). An answer of several values
is compared as a set with a gold of several values ("x = 2 or x = 3" against "2, 3"); against a
gold of one value, several different values are a hedge and never correct ("18 or 20", two
different boxes), whichever of them is right.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

from failtune.grading import Grade, truncated
from failtune.grading.latex import as_choice_letter, clean, compact, split_values, strip_name
from failtune.grading.math_reader import Reading, read_answer

MATH_FORMAT = "Solve the problem step by step, then give your final answer as \\boxed{<answer>}."
# math-verify bounds each parse and comparison with signal.alarm, which only the main thread
# may use; elsewhere (reward functions in worker threads) it runs unbounded.
_TIMEOUT_SECONDS = 5
_MAX_VERIFIED_CHARS = 400
# "(C) 12": a choice letter followed by its value, as AMC answers are written.
_LEADING_CHOICE_RE = re.compile(r"\(\s*([A-Ea-e])\s*\)\s")
_WORDS_RE = re.compile(r"[A-Za-z]{2,}(?:\s+[A-Za-z]+)*")


def grade_math(completion: str, expected: str, finish_reason: str | None = None) -> Grade:
    """Reasons: correct, wrong_answer, ambiguous (several different answers offered, one of
    them right), no_answer and truncated (see failtune.grading.truncated; the explicit markers
    are the boxes and the headings and phrases of failtune.grading.math_reader)."""
    gold = values_of(expected)
    if not gold[0]:
        raise ValueError(f"cannot read the gold answer {expected!r} as math")
    reading = read_answer(completion)
    cut = truncated(finish_reason, reading is not None and reading.explicit)
    if cut is not None:
        return cut
    if reading is None or not values_of(reading.answer)[0]:
        return Grade(False, None, "no_answer")
    return _verdict(reading, gold[0])


def _verdict(reading: Reading, gold: list[str]) -> Grade:
    extracted = clean(reading.answer)
    offered = [reading.answer, *reading.rivals]
    if len(gold) > 1:  # several values asked for: every value offered is one of them
        offered = [", ".join(reversed(offered))]
    if all(_equivalent(a, gold) for a in offered):
        return Grade(True, extracted, "correct")
    values = [v for a in offered for v in values_of(a)[0]]
    hedged = len(gold) == 1 and any(_same(v, gold[0]) for v in values)
    return Grade(False, extracted, "ambiguous" if hedged else "wrong_answer")


def values_of(answer: str) -> tuple[list[str], bool]:
    """The cleaned values of an answer, each without its "x =" (see latex.split_values)."""
    values, alternatives = split_values(clean(answer))
    return [v for v in (strip_name(v) for v in values) if v], alternatives


def equivalent(answer: str, gold: str) -> bool:
    """Whether `answer` gives exactly the value(s) of `gold`."""
    return _equivalent(answer, values_of(gold)[0])


def _equivalent(answer: str, gold: list[str]) -> bool:
    values = values_of(answer)[0]
    if not values or not gold:
        return False
    if len(gold) == 1:
        if len(values) > 1 and _tuple_size(gold[0]) == len(values):
            return _same(f"({', '.join(values)})", gold[0])  # "p = 6, q = 31, r = -1"
        return all(_same(v, gold[0]) for v in values)
    if _verified(", ".join(gold), ", ".join(values)):
        return True
    values, gold = _distinct(values), _distinct(gold)
    return len(values) == len(gold) and all(any(_same(v, g) for g in gold) for v in values)


def _tuple_size(value: str) -> int:
    """How many entries an ordered tuple "(a, b, c)" has; 0 for anything else."""
    if not (value.startswith("(") and value.endswith(")")):
        return 0
    inner, _ = split_values(value[1:-1])
    return len(inner) if len(inner) > 1 else 0


def _distinct(values: list[str]) -> list[str]:
    kept: list[str] = []
    for v in values:
        if not any(_same(v, k) for k in kept):
            kept.append(v)
    return kept


def _same(value: str, gold: str) -> bool:
    """One value against one gold value: spelling, text, choice letter, then math-verify."""
    if compact(value) == compact(gold):
        return True
    if _WORDS_RE.fullmatch(value) or _WORDS_RE.fullmatch(gold):
        return value.casefold().split() == gold.casefold().split()  # text, never symbols
    size = _tuple_size(gold)
    if size and _tuple_size(value) == size:  # vectors and points, entry by entry
        entries = zip(split_values(value[1:-1])[0], split_values(gold[1:-1])[0], strict=True)
        if all(_same(v, g) for v, g in entries):
            return True
    letter = as_choice_letter(gold)
    if letter is not None and re.fullmatch(r"\(\s*[A-Za-z]\s*\)|[A-Z]", gold.strip()):
        lead = _LEADING_CHOICE_RE.match(value)
        return (as_choice_letter(value) or (lead.group(1).upper() if lead else None)) == letter
    return _verified(gold, value)


def _verified(gold: str, value: str) -> bool:
    from math_verify import verify

    if max(len(gold), len(value)) > _MAX_VERIFIED_CHARS:
        return False  # no final answer is this long; sympy could take seconds on it
    parsed_gold, parsed_value = _parsed(gold), _parsed(value)
    if not parsed_gold or not parsed_value:
        return False
    return bool(verify(list(parsed_gold), list(parsed_value), timeout_seconds=_timeout()))


@lru_cache(maxsize=8192)
def _parsed(value: str) -> tuple[object, ...]:
    from math_verify import LatexExtractionConfig, parse

    config = [LatexExtractionConfig()]
    return tuple(parse(f"${value}$", extraction_config=config, parsing_timeout=_timeout()))


def _timeout() -> int | None:
    return _TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None


def reference_answer(solution: str) -> str:
    """The answer a reference solution states, as it writes it: its last box, or the boxes that
    list several values ("$\\boxed{-2}$ and $\\boxed{1}$" -> "-2, 1"; two spellings of one value
    collapse to the last), or the value after a final marker ("Therefore, $6$ is our answer.")."""
    reading = read_answer(solution)
    if reading is None:
        raise ValueError("the solution states no final answer")
    offered = [*reversed(reading.rivals), reading.answer]
    if len(offered) == 1 and reading.parts:
        last = reading.parts[-1]
        if all(equivalent(p, last) for p in reading.parts):
            return last.strip()
    elif all(equivalent(a, reading.answer) for a in offered):
        return reading.answer.strip()
    return ", ".join(a.strip() for a in offered)

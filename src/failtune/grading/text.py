"""Exact-text and regular-expression answers (custom tasks: names, words, codes, dates).

The final answer is what follows the last explicit marker ("The answer is", "Answer:",
"Final answer:", ``\\boxed{}``) up to the end of its sentence or line; without a marker, the
last non-empty line. `exact` compares it to the gold case-insensitively with spacing, quotes,
markdown and a final period ignored; `regex` requires the gold pattern to match all of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from failtune.grading import Grade
from failtune.grading.numeric import _cut_followup

TEXT_FORMAT = 'Answer the question, then end your reply with "The answer is <answer>."'
_MARKER_RE = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*:|\banswer\s*:)\s*:?\s*|\\boxed\s*\{",
    re.IGNORECASE,
)
_TRUNCATED = "length"


def final_answer(completion: str) -> tuple[str | None, bool]:
    """(the final answer text or None, found after an explicit marker)."""
    text = _cut_followup(str(completion)).strip()
    markers = list(_MARKER_RE.finditer(text))
    for m in reversed(markers):
        rest = text[m.end() :]
        if m.group(0).lstrip().startswith("\\boxed"):
            depth, end = 1, 0
            while end < len(rest) and depth:
                depth += {"{": 1, "}": -1}.get(rest[end], 0)
                end += 1
            answer = rest[: end - 1] if depth == 0 else ""
        else:
            answer = re.split(r"\n|(?<=[^\s.])\.(?:\s|$)", rest, maxsplit=1)[0]
        if _normalise(answer):
            return answer.strip(), True
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1].strip() if lines else None), False


def _normalise(text: str) -> str:
    text = re.sub(r"[*_`$]|\\text\{([^{}]*)\}", r"\1", text)
    text = text.strip().strip("\"'“”‘’").strip().rstrip(".").strip()
    return re.sub(r"\s+", " ", text).casefold()


def _grade(completion: str, finish_reason: str | None, matches: Callable[[str], bool]) -> Grade:
    answer, via_marker = final_answer(completion)
    if finish_reason == _TRUNCATED and not via_marker:
        return Grade(False, answer, "truncated")
    if answer is None or not _normalise(answer):
        return Grade(False, None, "no_answer")
    correct = matches(answer)
    return Grade(correct, answer, "correct" if correct else "wrong_answer")


def grade_exact(completion: str, expected: str, finish_reason: str | None = None) -> Grade:
    return _grade(completion, finish_reason, lambda a: _normalise(a) == _normalise(expected))


def grade_regex(completion: str, pattern: str, finish_reason: str | None = None) -> Grade:
    """`pattern` must match the whole final answer (Python `re.fullmatch`, case-sensitive)."""
    compiled = re.compile(pattern)
    return _grade(
        completion, finish_reason, lambda a: bool(compiled.fullmatch(a.strip().rstrip(".")))
    )

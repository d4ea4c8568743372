"""Exact-text and regular-expression answers (custom tasks: names, words, codes, dates).

The final answer is what follows the last explicit marker ("The answer is", "Answer:",
"Final answer:", ``\\boxed{}``) up to the end of its sentence or line; without a marker, the
last non-empty line. `exact` compares it to the gold case-insensitively with spacing, quotes,
markdown and a final period ignored; `regex` requires the gold pattern to match all of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from failtune.grading import Grade, cut_followup, truncated

TEXT_FORMAT = 'Answer the question, then end your reply with "The answer is <answer>."'
_MARKER_RE = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*:|\banswer\s*:)\s*:?\s*|\\boxed\s*\{",
    re.IGNORECASE,
)


def final_answer(completion: str) -> tuple[str | None, bool]:
    """(the final answer text or None, found after an explicit marker)."""
    text = cut_followup(str(completion)).strip()
    marked = marked_answer(text)
    if marked is not None:
        return marked[0], True
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1].strip() if lines else None), False


def marked_answer(text: str) -> tuple[str, int] | None:
    """The answer after the last explicit marker that has one, and where it ends in `text`."""
    for m in reversed(list(_MARKER_RE.finditer(text))):
        rest = text[m.end() :]
        if m.group(0).lstrip().startswith("\\boxed"):
            depth, end = 1, 0
            while end < len(rest) and depth:
                depth += {"{": 1, "}": -1}.get(rest[end], 0)
                end += 1
            answer = rest[: end - 1] if depth == 0 else ""
            stop = m.end() + end
        else:
            answer = re.split(r"\n|(?<=[^\s.])\.(?:\s|$)", rest, maxsplit=1)[0]
            stop = m.end() + len(answer)
        if _normalise(answer):
            return answer.strip(), stop
    return None


def _normalise(text: str) -> str:
    text = re.sub(r"[*_`$]|\\text\{([^{}]*)\}", r"\1", text)
    text = text.strip().strip("\"'“”‘’").strip().rstrip(".").strip()
    return re.sub(r"\s+", " ", text).casefold()


def _grade(completion: str, finish_reason: str | None, matches: Callable[[str], bool]) -> Grade:
    answer, via_marker = final_answer(completion)
    cut = truncated(finish_reason, via_marker)
    if cut is not None:
        return cut
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

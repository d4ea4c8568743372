"""A judge's verdict read as a person reads it, in the forms judge models reply in."""

from __future__ import annotations

import pytest

from failtune.grading.verdicts import read_verdict


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("A", "A"),
        ("**B**", "B"),
        ("(A)", "A"),
        ("Answer: A", "A"),
        ("**Verdict:** T", "T"),
        ("Verdict: T", "T"),
        ("The better answer is A.", "A"),  # read by its first letter, this was a tie
        ("The answer is B.", "B"),
        ("A. It is correct and its reasoning is sound.", "A"),
        ("B\n\nAnswer B adds the eggs correctly.", "B"),
        ("Answer B is better: it reaches the right total.", "B"),
        ("A is correct, but B is better.", "B"),
        ("Both answers are correct, but B explains it better.\n\nB", "B"),
        ("Final verdict: [[A]]", "A"),
        ('{"verdict": "T"}', "T"),
        ("Tie", "T"),
        ("It's a tie.", "T"),
        ("Both answers are equally good.", "T"),
        ("Neither answer is better; both make the same mistake.", "T"),
    ],
)
def test_verdict_forms(reply: str, verdict: str) -> None:
    assert read_verdict(reply) == verdict


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "Hmm, both have merits; it is hard to say.",
        "A or B",
        "Verdict: A\nOn reflection, verdict: B",
        "The better answer is A. No wait, the better answer is B.",
    ],
)
def test_unreadable_replies(reply: str) -> None:
    assert read_verdict(reply) is None

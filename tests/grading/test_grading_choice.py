"""The choice reader on the formats the issue names, refusals, two letters and truncation."""

import pytest

from failtune.grading.choice import grade_choice, read_choice

CHOICES = ["Paris is big", "London fog", "Berlin wall", "Rome empire"]


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("The answer is (B).", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("Answer: B", "B"),
        ("**B**", "B"),
        ("The answer is London fog.", "B"),
        ("London fog", "B"),
        ("b) London fog", "B"),
        ("B is the answer.", "B"),
        ("I'd go with B.", "B"),
        ("Let me see. A is incorrect. B is incorrect. D is incorrect. Therefore C.", "C"),
        ("The answer is not A. It is B.", "B"),
        ("The answer is \\boxed{C}.", "C"),
        ("答案是 D", "D"),
        ("The answer is (A). Wait, actually the answer is (C).", "C"),
        ("Answer: (C)\n\nQuestion: What is 2+2?\nA. 3\nB. 4\nAnswer: B", "C"),
        ("The answer is (E).", "E"),
    ],
)
def test_reads_the_letter(text: str, letter: str) -> None:
    assert read_choice(text, CHOICES) == (letter, "")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I'm sorry, but I can't answer this question.", "no_answer"),
        ("The answer is a bit unclear to me.", "no_answer"),
        ("The answer is A or C.", "ambiguous"),
        ("Both (A) and (C) are correct.", "ambiguous"),
        ("The answer is (A).\n\nSo the answer is (D).", "ambiguous"),  # no correction cue
        ("The answer is (B) Berlin wall.", "ambiguous"),  # letter and text disagree
        ("", "no_answer"),
    ],
)
def test_unreadable_or_two_answers_are_wrong_with_a_reason(text: str, reason: str) -> None:
    assert read_choice(text, CHOICES) == (None, reason)
    assert grade_choice(text, CHOICES, 1).reason == reason


def test_grade_reasons() -> None:
    assert grade_choice("The answer is (B).", CHOICES, 1).reason == "correct"
    assert grade_choice("The answer is (C).", CHOICES, 1).reason == "wrong_answer"
    cut = grade_choice("Let me think about each option in turn", CHOICES, 1, "length")
    assert (cut.correct, cut.reason) == (False, "truncated")
    # An answer given before the length limit still counts.
    assert grade_choice("The answer is (B). Because", CHOICES, 1, "length").correct

"""One truncation rule for every grader, checked with the same answers on each of them.

Text cut by the token cap (finish_reason "length") is "truncated", with no answer read, unless
it had already stated its final answer after an explicit marker; the same text that ended on
its own is graded as usual.
"""

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from failtune.grading import TRUNCATED, Grade
from failtune.grading.math import grade_math
from failtune.grading.numeric import grade_numeric
from failtune.grading.text import grade_exact, grade_regex
from failtune.tasks.arith import Arith
from failtune.tasks.gsm8k import GSM8K
from failtune.tasks.mmlu import MMLU, _choices_of

# --- answer builders: the same shapes of reply, written around each grader's gold answer ------


def stated_then_cut(answer: str) -> str:
    """Reasoning, the final answer after a marker, then a double-check the cap cut short."""
    return (
        "Let me work through this step by step, checking each part.\n"
        f"The answer is {answer}.\n\n"
        "Let me double-check this by going over the steps once more: first"
    )


def looping(answer: str) -> str:
    """A reply stuck repeating a step that names the answer, cut mid-loop, no marker."""
    step = f"So the part we need is {answer} and we go back to the first step. "
    return "Let me work through this step by step. " + step * 8 + f"So the part we need is {answer}"


def cut_before_anything(answer: str) -> str:
    """Cut before the reply got anywhere."""
    return "Let me think about this carefully. First we need to figure out how"


@dataclass(frozen=True)
class Grader:
    name: str
    answer: str  # the gold answer as a reply writes it
    grade: Callable[[str, str | None], Grade]
    markers: tuple[str, ...]  # this grader's explicit final-answer markers, "{}" = the answer


def _gsm8k() -> Grader:
    task = GSM8K()
    problem = task.load("test")[0]
    return Grader(
        "gsm8k",
        problem.expected,
        lambda text, finish: task.grade(problem, text, finish),
        ("The answer is {}.", "#### {}", "Final answer: {}", "\\boxed{{{}}}"),
    )


def _arith() -> Grader:
    task = Arith(size=8)
    problem = task.load("test")[0]
    return Grader(
        "arith",
        problem.expected,
        lambda text, finish: task.grade(problem, text, finish),
        ("The answer is {}.", "#### {}"),
    )


def _mmlu() -> Grader:
    task = MMLU()
    problem = task.load("test")[0]
    _, gold = _choices_of(problem.id)
    return Grader(
        "mmlu",
        f"({'ABCD'[gold]})",
        lambda text, finish: task.grade(problem, text, finish),
        ("The answer is {}.", "Answer: {}", "{} is the correct answer.", "\\boxed{{{}}}"),
    )


GRADERS: dict[str, Callable[[], Grader]] = {
    "gsm8k": _gsm8k,
    "arith": _arith,
    "mmlu": _mmlu,
    "exact": lambda: Grader(
        "exact",
        "Canberra",
        lambda text, finish: grade_exact(text, "Canberra", finish),
        ("The answer is {}.", "Final answer: {}", "Answer: {}", "\\boxed{{{}}}"),
    ),
    "regex": lambda: Grader(
        "regex",
        "1969-07-20",
        lambda text, finish: grade_regex(text, r"\d{4}-07-20", finish),
        ("The answer is {}.", "Final answer: {}"),
    ),
    "math": lambda: Grader(
        "math",
        "$\\frac{1}{2}$",
        lambda text, finish: grade_math(text, "\\frac{1}{2}", finish),
        ("The answer is {}.", "Final answer: {}", "\\boxed{{{}}}"),
    ),
}


@pytest.fixture(params=list(GRADERS), scope="module")
def grader(request: pytest.FixtureRequest) -> Grader:
    return GRADERS[request.param]()


def test_answer_stated_before_the_cut_counts(grader: Grader) -> None:
    text = stated_then_cut(grader.answer)
    assert grader.grade(text, TRUNCATED).reason == "correct"
    assert grader.grade(text, "stop").reason == "correct"


def test_every_explicit_marker_of_a_grader_counts_before_the_cut(grader: Grader) -> None:
    for marker in grader.markers:
        text = f"Some working first.\n{marker.format(grader.answer)}\n\nNow let me check: the"
        assert grader.grade(text, TRUNCATED).correct, (grader.name, marker)


@pytest.mark.parametrize("build", [looping, cut_before_anything])
def test_cut_text_without_a_stated_answer_is_truncated(
    grader: Grader, build: Callable[[str], str]
) -> None:
    """Even when the text ends on the gold itself: that is where the cap fell, not an answer."""
    assert grader.grade(build(grader.answer), TRUNCATED) == Grade(False, None, "truncated")


def test_the_same_text_ended_on_its_own_is_graded_as_usual(grader: Grader) -> None:
    for text in (looping(grader.answer), cut_before_anything(grader.answer)):
        assert grader.grade(text, "stop").reason != "truncated"
        assert grader.grade(text, None).reason != "truncated"


def test_a_repeating_gsm8k_reply_cut_off_is_not_read_as_its_last_number() -> None:
    """A cut, looping reply used to be read as the answer "3" (the number the loop repeats)."""
    loop = "She eats 3 for breakfast every morning and bakes muffins with 4. "
    reply = "Janet's ducks lay 16 eggs per day. " + loop * 12 + "She eats 3"
    assert grade_numeric(reply, "18", TRUNCATED) == Grade(False, None, "truncated")
    assert grade_numeric(reply, "3", TRUNCATED) == Grade(False, None, "truncated")
    assert grade_numeric(reply, "3", "stop") == Grade(True, "3", "correct")  # ended: its answer


def test_a_letter_or_expression_met_mid_reasoning_is_not_an_answer() -> None:
    """Choice and math used to grade whatever a cut text ended on."""
    mmlu = _mmlu()
    walk = f"{mmlu.answer} looks plausible at first, but let me check each option in turn. The"
    assert mmlu.grade(walk, TRUNCATED) == Grade(False, None, "truncated")
    assert mmlu.grade(walk, "stop").reason == "correct"  # an opening letter is its answer
    half = "We halve it: x = \\frac{1}{2}, and then we still need to"
    assert grade_math(half, "\\frac{1}{2}", TRUNCATED) == Grade(False, None, "truncated")
    assert grade_math(half, "\\frac{1}{2}", "stop").correct

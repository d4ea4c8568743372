"""Custom task files (--task-file) with every grader, and math-verify on MATH-style answers."""

import json
from pathlib import Path

import pytest
from helpers import write_jsonl

from failtune.cli import main
from failtune.errors import FailtuneError
from failtune.grading.math import grade_math
from failtune.grading.text import final_answer, grade_exact, grade_regex
from failtune.tasks.custom import CustomTask

FIXTURES = Path(__file__).parents[1] / "data" / "math_style_answers.jsonl"


def _cases() -> list[dict]:
    return [json.loads(line) for line in FIXTURES.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["note"])
def test_math_grader_on_math_style_answers(case: dict) -> None:
    assert grade_math(case["completion"], case["gold"]).correct is case["correct"]


def test_math_grader_reasons() -> None:
    assert grade_math("I am not sure.", "\\frac{1}{2}").reason == "no_answer"
    assert grade_math("Let me think", "\\frac{1}{2}", "length").reason == "truncated"


def test_exact_and_regex_read_the_final_answer() -> None:
    assert final_answer("Thinking... The answer is Canberra.\n") == ("Canberra", True)
    assert grade_exact("The answer is **canberra**.", "Canberra").correct
    assert not grade_exact("The answer is Sydney.", "Canberra").correct
    assert grade_exact("Some words.\nCanberra", "Canberra").correct  # last line, no marker
    assert grade_regex("The answer is 1969-07-20.", r"\d{4}-07-20").correct
    assert not grade_regex("The answer is July 1969.", r"\d{4}-07-20").correct
    assert grade_exact("", "x").reason == "no_answer"


def test_custom_task_every_grader(tmp_path: Path) -> None:
    rows = {
        "numeric": [{"question": "What is 6 times 7?", "answer": 42}],
        "choice": [{"question": "Capital of France?", "choices": ["Rome", "Paris"], "answer": "B"}],
        "exact": [{"question": "Capital of Australia?", "answer": "Canberra"}],
        "regex": [{"question": "A date?", "answer": r"\d{4}", "solution": "The answer is 1969."}],
        "math": [{"question": "Half of one?", "answer": "\\frac{1}{2}", "solution": "1/2 is 0.5."}],
    }
    for grader, lines in rows.items():
        task = CustomTask(write_jsonl(tmp_path / f"{grader}.jsonl", lines), grader)
        (problem,) = task.load("test")
        assert problem.id == "custom/test/0"
        # Training output is the solution (with a final answer sentence the grader accepts).
        assert task.grade(problem, problem.solution, "stop").correct, (grader, problem.solution)
    choice = CustomTask(tmp_path / "choice.jsonl", "choice").load("test")[0]
    assert "A. Rome\nB. Paris" in choice.prompt and choice.solution == "The answer is (B) Paris."
    math = CustomTask(tmp_path / "math.jsonl", "math").load("test")[0]
    assert math.solution == "1/2 is 0.5.\nThe answer is $\\boxed{\\frac{1}{2}}$."


def test_custom_task_errors(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(FailtuneError, match='code answers need a "solution"'):
        CustomTask(path, "code").load("test")
    with pytest.raises(FailtuneError, match='needs "question" and "answer"'):
        CustomTask(write_jsonl(tmp_path / "bad.jsonl", [{"question": "q"}]), "exact").load("test")
    with pytest.raises(FailtuneError, match="not a letter"):
        CustomTask(
            write_jsonl(tmp_path / "c.jsonl", [{"question": "q", "answer": "Z"}]), "choice"
        ).load("test")


def test_task_file_through_the_cli(tmp_path: Path, capsys) -> None:
    rows = [{"question": f"What is {i} plus {i}?", "answer": 2 * i} for i in range(20)]
    path = write_jsonl(tmp_path / "sums.jsonl", rows)
    completions = write_jsonl(
        tmp_path / "out.jsonl",
        [{"id": f"custom/test/{i}", "completion": f"The answer is {2 * i}."} for i in range(20)],
    )
    args = ["--task-file", str(path), "--grader", "numeric", "--no-progress"]
    assert (
        main(
            [
                "extract",
                "--completions",
                str(completions),
                "--output-dir",
                str(tmp_path / "x"),
                *args,
            ]
        )
        == 0
    )
    assert "custom" in capsys.readouterr().out
    assert (
        main(
            [
                "extract",
                "--model-path",
                "x",
                "--output-dir",
                str(tmp_path / "y"),
                "--grader",
                "code",
                "--task-file",
                str(path),
            ]
        )
        == 2
    )
    assert 'need a "solution"' in capsys.readouterr().err


def test_code_grader_runs_the_answer_tests_in_the_sandbox(tmp_path: Path) -> None:
    row = {
        "question": "Write add(a, b) returning the sum.",
        "answer": "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n",
        "solution": "def add(a, b):\n    return a + b\n",
    }
    task = CustomTask(write_jsonl(tmp_path / "code.jsonl", [row]), "code")
    (problem,) = task.load("test")
    assert problem.solution == "```python\ndef add(a, b):\n    return a + b\n```"
    right, wrong, early = task.grade_many(
        [
            (problem, problem.solution, "stop"),
            (problem, "```python\ndef add(a, b):\n    return a - b\n```", "stop"),
            (
                problem,
                "```python\nimport sys\ndef add(a, b):\n    return 0\nsys.exit(0)\n```",
                "stop",
            ),
        ]
    )
    assert (right.correct, right.reason) == (True, "passed")
    assert not wrong.correct and wrong.reason.startswith("assertion_failed")
    assert (early.correct, early.reason) == (False, "exited_early")

"""A user's own benchmark: a JSONL file of questions with known answers.

Each line: `question`, `answer`, optional `solution` (the worked answer to train on) and, for
the choice grader, optional `choices` (a list; `answer` is then a letter, an index or the
choice's text). Ids are `custom/test/<0-based line index>`. The file has no train split, so
extraction and validation share it through the stable-hash holdout (failtune.tasks.holdout).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from failtune.errors import FailtuneError
from failtune.files import read_jsonl
from failtune.grading import Grade
from failtune.grading.choice import grade_choice, letters_for
from failtune.grading.code import (
    CodeTests,
    extract_code,
    grade_code_many,
    sandbox_record,
    shared_sandbox,
)
from failtune.grading.math import MATH_FORMAT, grade_math
from failtune.grading.numeric import grade_numeric
from failtune.grading.sandbox import Limits, Sandbox
from failtune.grading.text import TEXT_FORMAT, grade_exact, grade_regex
from failtune.tasks.base import Problem, Task
from failtune.tasks.code import CODE_FORMAT, CODE_STOP_AFTER, fenced
from failtune.tasks.gsm8k import MATH_STOP_AFTER, math_prompt
from failtune.tasks.mmlu import CHOICE_FORMAT, CHOICE_STOP_AFTER, choice_prompt, choice_solution

GRADERS = ("numeric", "choice", "exact", "regex", "math", "code")
_DEFAULT_LETTERS = 4  # a choice question without `choices` lists its options in the text


class CustomTask(Task):
    name = "custom"
    category = "custom"
    splits = ("test",)
    default_max_new_tokens = 320

    def __init__(
        self,
        path: str | Path | None = None,
        grader: str = "exact",
        allow_unsandboxed_code: bool = False,
    ) -> None:
        if path is None:
            raise FailtuneError("custom/... problems need --task-file (and --grader)")
        if grader not in GRADERS:
            raise FailtuneError(f"unknown --grader {grader!r} (choose from: {', '.join(GRADERS)})")
        self.path, self.grader = Path(path), grader
        self.allow_unsandboxed_code = allow_unsandboxed_code
        self.stop_after = {
            "numeric": MATH_STOP_AFTER,
            "choice": CHOICE_STOP_AFTER,
            "code": CODE_STOP_AFTER,
        }.get(grader)

    def data_files(self, split: str) -> list[Path]:
        return [self.path]

    def sandbox(self) -> dict[str, object] | None:
        if self.grader != "code":
            return None
        return sandbox_record(self._sandbox())

    def _sandbox(self) -> Sandbox:
        return shared_sandbox(None, Limits(), self.allow_unsandboxed_code)

    def load(self, split: str) -> list[Problem]:
        self.check_split(split)
        return list(self._problems)

    def grade(self, problem: Problem, completion: str, finish_reason: str | None) -> Grade:
        return self.grade_many([(problem, completion, finish_reason)])[0]

    def grade_many(self, items: Sequence[tuple[Problem, str, str | None]]) -> list[Grade]:
        if self.grader == "code":  # `answer` is test code, run after the program in the sandbox
            tests = [(c, CodeTests(tests=p.expected)) for p, c, _ in items]
            return grade_code_many(tests, self._sandbox())
        return [self._grade_fn(p)(c, f) for p, c, f in items]

    @cached_property
    def _rows(self) -> list[dict[str, Any]]:
        rows = list(read_jsonl(self.path))
        if not rows:
            raise FailtuneError(f"{self.path} holds no problems")
        for lineno, row in enumerate(rows, start=1):
            if not isinstance(row.get("question"), str) or "answer" not in row:
                raise FailtuneError(f'{self.path}: line {lineno} needs "question" and "answer"')
            choices = row.get("choices")
            if choices is not None and not (
                isinstance(choices, list) and all(isinstance(c, str) for c in choices)
            ):
                raise FailtuneError(
                    f'{self.path}: line {lineno}: "choices" must be a list of texts'
                )
            if self.grader in ("regex", "code") and not isinstance(row.get("solution"), str):
                raise FailtuneError(
                    f'{self.path}: line {lineno}: {self.grader} answers need a "solution" to '
                    "train on"
                )
        return rows

    @cached_property
    def _problems(self) -> list[Problem]:
        return [self._problem(i, row) for i, row in enumerate(self._rows)]

    def _problem(self, index: int, row: dict[str, Any]) -> Problem:
        question, answer = row["question"], row["answer"]
        if self.grader == "code":
            return Problem(
                id=self.problem_id("test", index),
                task=self.name,
                split="test",
                prompt=f"{question.strip()}\n\n{CODE_FORMAT}",
                expected=str(answer),
                solution=fenced(extract_code(row["solution"]) or row["solution"]),
            )
        if self.grader == "choice":
            choices = row.get("choices") or [""] * _DEFAULT_LETTERS
            gold = _choice_index(answer, choices, self.path, index)
            prompt = (
                choice_prompt(question, choices)
                if row.get("choices")
                else f"{question.strip()}\n\n{CHOICE_FORMAT}"
            )
            expected = letters_for(len(choices))[gold]
            final = choice_solution(choices, gold).replace(" .", ".")
        else:
            expected = str(answer)
            fmt = MATH_FORMAT if self.grader == "math" else TEXT_FORMAT
            prompt = (
                math_prompt(question)
                if self.grader == "numeric"
                else f"{question.strip()}\n\n{fmt}"
            )
            final = (
                f"The answer is $\\boxed{{{expected}}}$."
                if self.grader == "math"
                else f"The answer is {expected}."
            )
        problem = Problem(
            id=self.problem_id("test", index),
            task=self.name,
            split="test",
            prompt=prompt,
            expected=expected,
            solution=final,
        )
        given = row.get("solution")
        if isinstance(given, str) and given.strip():
            # The dataset's own solution, with the final sentence added if it lacks one the
            # grader reads as correct (so training teaches the answer format the prompt asks).
            solved = self._grade_fn(problem)(given, None).correct and (
                self.grader != "math" or "\\boxed" in given
            )
            text = (
                given.strip() if solved or self.grader == "regex" else f"{given.strip()}\n{final}"
            )
            problem = Problem(problem.id, self.name, "test", prompt, expected, text)
        return problem

    def _grade_fn(self, problem: Problem) -> Callable[[str, str | None], Grade]:
        row = self._rows[int(problem.id.rsplit("/", 1)[1])]
        if self.grader == "choice":
            choices = row.get("choices") or [""] * _DEFAULT_LETTERS
            gold = letters_for(len(choices)).index(problem.expected)
            return lambda text, finish: grade_choice(text, choices, gold, finish)
        fn = {
            "numeric": grade_numeric,
            "exact": grade_exact,
            "regex": grade_regex,
            "math": grade_math,
        }[self.grader]
        return lambda text, finish: fn(text, problem.expected, finish)


def _choice_index(answer: Any, choices: list[str], path: Path, index: int) -> int:
    letters = letters_for(len(choices))
    if isinstance(answer, int) and 0 <= answer < len(choices):
        return answer
    if isinstance(answer, str):
        text = answer.strip()
        if len(text) == 1 and text.upper() in letters:
            return letters.index(text.upper())
        if text in choices:
            return choices.index(text)
    raise FailtuneError(
        f"{path}: line {index + 1}: answer {answer!r} is not a letter, index or text of its choices"
    )

"""What the code tasks (HumanEval, MBPP) share: split mapping and sandboxed, parallel grading."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from failtune.errors import FailtuneError
from failtune.grading import Grade
from failtune.grading.code import CodeTests, grade_code_many, sandbox_record, shared_sandbox
from failtune.grading.sandbox import Limits, Sandbox
from failtune.tasks.base import Problem, Task

CODE_FORMAT = "Reply with the complete Python code in a ```python code block."
# Stop once a code block is closed (a bare fence line; the prompt asks for a ```python opening).
# Generation checks only the last few dozen tokens, so the rule must be local to the fence.
CODE_STOP_AFTER = r"\n```[ \t]*\n"


def fenced(code: str) -> str:
    return f"```python\n{code.strip()}\n```"


class CodeTask(Task):
    """A code benchmark whose requested split maps to the authors' splits it reads.

    Extraction asks for `train`: MBPP reads prompt+validation+train and HumanEval, which has
    no train part, reads nothing, so both test splits stay held out for validation;
    `include_test` adds them (the seed plan's "all of it", recorded in the manifest).
    """

    category = "code"
    maps_train_split = True
    default_max_new_tokens = 512
    stop_after = CODE_STOP_AFTER
    train_sources: tuple[str, ...] = ()
    data_file: Path

    def __init__(
        self,
        workers: int | None = None,
        include_test: bool = False,
        timeout: float = 20.0,
        allow_unsandboxed_code: bool = False,
    ) -> None:
        if workers is not None and workers < 1:
            raise FailtuneError("--workers must be a positive number")
        if timeout <= 0:
            raise FailtuneError("--sandbox-timeout must be a positive number of seconds")
        self.workers, self.include_test = workers, include_test
        self.limits = Limits(timeout=timeout)
        self.allow_unsandboxed_code = allow_unsandboxed_code

    def sources(self, split: str) -> tuple[str, ...]:
        self.check_split(split)
        if split == "train":
            return self.train_sources + (("test",) if self.include_test else ())
        return (split,)

    def check_split(self, split: str) -> None:
        if split != "train":
            super().check_split(split)

    def load(self, split: str) -> list[Problem]:
        return [p for source in self.sources(split) for p in self.load_source(source)]

    def rows(self) -> Mapping[str, tuple[Problem, CodeTests]]:
        """Every problem of the dataset with its tests, by id, in dataset order (cached)."""
        return _rows(type(self))

    @staticmethod
    def parse(row: dict[str, Any]) -> tuple[Problem, CodeTests]:
        """One line of the release file as a problem and its tests."""
        raise NotImplementedError

    def load_source(self, split: str) -> list[Problem]:
        """The problems of one of the authors' splits."""
        return [p for p, _ in self.rows().values() if p.split == split]

    def tests_for(self, problem: Problem) -> CodeTests:
        return self.rows()[problem.id][1]

    def data_files(self, split: str) -> list[Path]:
        return [self.data_file] if self.sources(split) else []

    def grade(self, problem: Problem, completion: str, finish_reason: str | None) -> Grade:
        return self.grade_many([(problem, completion, finish_reason)])[0]

    def sandbox(self) -> dict[str, object]:
        return sandbox_record(self._sandbox())

    def _sandbox(self) -> Sandbox:
        return shared_sandbox(self.workers, self.limits, self.allow_unsandboxed_code)

    def grade_many(self, items: Sequence[tuple[Problem, str, str | None]]) -> list[Grade]:
        return grade_code_many([(c, self.tests_for(p)) for p, c, _ in items], self._sandbox())


@cache
def _rows(task: type[CodeTask]) -> dict[str, tuple[Problem, CodeTests]]:
    opener = gzip.open if task.data_file.suffix == ".gz" else open
    with opener(task.data_file, "rt", encoding="utf-8") as f:
        pairs = [task.parse(json.loads(line)) for line in f if line.strip()]
    return {problem.id: (problem, tests) for problem, tests in pairs}

"""What every benchmark task provides: problems with gold answers and training solutions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from failtune.errors import FailtuneError
from failtune.grading import Grade

ANSWER_FORMAT = 'Solve the problem step by step, then end your reply with "The answer is <number>."'


@dataclass(frozen=True)
class Problem:
    """One benchmark item as posed to the model, with what grading and training need."""

    id: str  # "<task>/<split>/<key>", stable across releases of failtune
    task: str
    split: str
    prompt: str  # the user message exactly as posed; also the training instruction
    expected: str  # gold answer, as the dataset states it
    solution: str  # the dataset's own solution, cleaned, ending in the format `prompt` asks for
    # What the dataset says about the problem beyond its text, kept on each graded record and
    # broken down in summaries and reports (MATH: subject, level and the release's file path).
    tags: tuple[tuple[str, str], ...] = ()


class Task(ABC):
    """A benchmark: loads splits and grades completions against its gold answers."""

    name: str
    category: str
    splits: tuple[str, ...]
    default_max_new_tokens: int = 256
    # Generation may stop once the text matches this (the answer has been given).
    stop_after: str | None = None
    # The task maps a requested `train` split to its sources itself (code: MBPP's own splits),
    # so the stable-hash holdout of tasks without a train split does not apply to it.
    maps_train_split: bool = False

    @abstractmethod
    def load(self, split: str) -> list[Problem]: ...

    @abstractmethod
    def grade(self, problem: Problem, completion: str, finish_reason: str | None) -> Grade: ...

    def grade_many(self, items: Sequence[tuple[Problem, str, str | None]]) -> list[Grade]:
        """Grade a batch; tasks whose grading is slow (code runs in sandboxes) parallelise here."""
        return [self.grade(*item) for item in items]

    def data_files(self, split: str) -> list[Path]:
        """Files a split is read from, so the manifest can record their sha256."""
        return []

    def sandbox(self) -> dict[str, object] | None:
        """How the code this task's grading runs is isolated (None: it runs none). Starts the
        sandbox, so a machine without one is refused before a model loads."""
        return None

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise FailtuneError(
                f"task {self.name!r} has no split {split!r} (it has: {', '.join(self.splits)})"
            )

    def stratum(self, problem: Problem) -> str:
        """Group a holdout split is stratified by (tasks without a train split; MMLU: subject)."""
        return ""

    def choice_requests(self, problem: Problem) -> tuple[str, list[str]] | None:
        """(context, continuations) to score by log-likelihood instead of generating; None
        when the task generates (the default)."""
        return None

    def problem_id(self, split: str, key: int | str) -> str:
        return f"{self.name}/{split}/{key}"

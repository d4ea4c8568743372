"""MATH (Hendrycks et al., competition mathematics), shipped inside the package: 7,500 train /
5,000 test problems in seven subjects and five levels, and MATH-500, the 500 test problems
PRM800K holds out ("Let's Verify Step by Step").

- `competition_math` (task `hendrycks_math`): the release's own train and test splits. Ids are
  ``hendrycks_math/<split>/<0-based line>`` of the shipped files (ordered by subject, then file).
- `math500` (task `math500`): test = MATH-500 (ids ``math500/test/<position in its list>``),
  train = the other 12,000 problems (7,500 train, then the 4,500 test problems outside
  MATH-500, as PRM800K trains), so training on it never sees a MATH-500 problem.

The prompt asks for a boxed answer; the training target is the reference solution, which ends
in its boxed answer. The gold is the answer the solution states (failtune.grading.math
.reference_answer: its last box, or the boxes that list several values). Each record keeps the
problem's `subject`, `level` and `unique_id` (the release's file path, e.g.
``test/algebra/1.json``).
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

from failtune.grading import Grade
from failtune.grading.math import MATH_FORMAT, grade_math, reference_answer
from failtune.tasks.base import Problem, Task

DATA_DIR = Path(__file__).parent / "data" / "math"
MATH500_IDS = DATA_DIR / "math500_ids.txt"
# Stop once a boxed answer's line ends, unless the box is inside an unclosed thinking block.
BOXED_STOP_AFTER = (
    r"(?s)\A(?:(?!<think>).)*?\\boxed\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\}[^\n]*\n"
)
# Two train solutions end in an empty box; the value their own text states goes in it.
_EMPTY_BOXES = {"train/number_theory/7115.json": "0", "train/number_theory/7117.json": "0"}


def math_prompt(problem: str) -> str:
    return f"{problem.strip()}\n\n{MATH_FORMAT}"


class HendrycksMath(Task):
    name = "hendrycks_math"
    category = "competition_math"
    splits = ("train", "test")
    default_max_new_tokens = 1024
    stop_after = BOXED_STOP_AFTER

    def data_files(self, split: str) -> list[Path]:
        return [DATA_DIR / f"{split}.jsonl.gz"]

    def load(self, split: str) -> list[Problem]:
        self.check_split(split)
        return [_problem(self.name, split, i, row) for i, row in enumerate(_rows(split))]

    def grade(self, problem: Problem, completion: str, finish_reason: str | None) -> Grade:
        return grade_math(completion, problem.expected, finish_reason)


class Math500(HendrycksMath):
    name = "math500"
    category = "math500"

    def data_files(self, split: str) -> list[Path]:
        return [DATA_DIR / "test.jsonl.gz", MATH500_IDS] + (
            [DATA_DIR / "train.jsonl.gz"] if split == "train" else []
        )

    def load(self, split: str) -> list[Problem]:
        self.check_split(split)
        return [_problem(self.name, split, i, row) for i, row in enumerate(_math500(split))]


@cache
def _rows(split: str) -> tuple[dict, ...]:
    with gzip.open(DATA_DIR / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for row in rows:
        value = _EMPTY_BOXES.get(row["unique_id"])
        if value is not None:
            row["solution"] = row["solution"].replace("\\boxed{}", f"\\boxed{{{value}}}")
    return tuple(rows)


@cache
def _math500(split: str) -> tuple[dict, ...]:
    """MATH-500 in its own order (test), or every other MATH problem (train)."""
    ids = MATH500_IDS.read_text(encoding="utf-8").split()
    by_id = {row["unique_id"]: row for row in _rows("test")}
    if split == "test":
        return tuple(by_id[i] for i in ids)
    held = set(ids)
    return _rows("train") + tuple(r for r in _rows("test") if r["unique_id"] not in held)


@cache
def _gold(solution: str) -> str:
    return reference_answer(solution)


def _problem(task: str, split: str, index: int, row: dict) -> Problem:
    return Problem(
        id=f"{task}/{split}/{index}",
        task=task,
        split=split,
        prompt=math_prompt(row["problem"]),
        expected=_gold(row["solution"]),
        solution=row["solution"].strip(),
        tags=(("subject", row["type"]), ("level", row["level"]), ("unique_id", row["unique_id"])),
    )

"""MBPP (Google): 974 short Python tasks with three asserts each, in the authors' splits."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from failtune.grading.code import CodeTests
from failtune.tasks.base import Problem
from failtune.tasks.code import CODE_FORMAT, CodeTask, fenced

DATA_FILE = Path(__file__).parent / "data" / "mbpp" / "mbpp.jsonl"
# The authors' splits, by task_id (Austin et al. 2021, section 2.1).
SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


def mbpp_prompt(text: str, asserts: list[str]) -> str:
    tests = "\n".join(asserts)
    return f"{text.strip()}\nYour code should pass these tests:\n\n{tests}\n\n{CODE_FORMAT}"


def split_of(task_id: int) -> str:
    return next(name for name, (lo, hi) in SPLITS.items() if lo <= task_id <= hi)


class MBPP(CodeTask):
    name = "mbpp"
    splits = tuple(SPLITS)
    train_sources = ("prompt", "validation", "train")
    data_file = DATA_FILE

    def rows(self) -> Mapping[str, tuple[Problem, CodeTests]]:
        return _load()


@cache
def _load() -> dict[str, tuple[Problem, CodeTests]]:
    rows = {}
    with DATA_FILE.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            split = split_of(row["task_id"])
            tests = CodeTests(
                tests="\n".join(row["test_list"]) + "\n",
                setup=row["test_setup_code"].replace("\r\n", "\n"),
            )
            problem = Problem(
                id=f"mbpp/{split}/{row['task_id']}",
                task="mbpp",
                split=split,
                prompt=mbpp_prompt(row["text"], row["test_list"]),
                expected=tests.tests,
                solution=fenced(row["code"].replace("\r\n", "\n")),
            )
            rows[problem.id] = (problem, tests)
    return rows

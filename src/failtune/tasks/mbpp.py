"""MBPP (Google): 974 short Python tasks with three asserts each, in the authors' splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from failtune.grading.code import CodeTests
from failtune.tasks.base import Problem
from failtune.tasks.code import CODE_FORMAT, CodeTask, fenced

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
    data_file = Path(__file__).parent / "data" / "mbpp" / "mbpp.jsonl"

    @staticmethod
    def parse(row: dict[str, Any]) -> tuple[Problem, CodeTests]:
        split = split_of(row["task_id"])
        # The solution runs before the setup code: tasks 367 and 927 build objects from its classes.
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
        return problem, tests

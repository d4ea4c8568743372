"""HumanEval (OpenAI): 164 hand-written functions to complete, one split `test`."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from failtune.grading.code import CodeTests
from failtune.tasks.base import Problem
from failtune.tasks.code import CODE_FORMAT, CodeTask, fenced

DATA_FILE = Path(__file__).parent / "data" / "humaneval" / "HumanEval.jsonl.gz"


def humaneval_prompt(stub: str) -> str:
    return (
        "Complete the following Python function.\n\n"
        f"```python\n{stub.rstrip()}\n```\n\n"
        f"{CODE_FORMAT} Write the whole function, signature included."
    )


class HumanEval(CodeTask):
    name = "humaneval"
    splits = ("test",)
    data_file = DATA_FILE

    def rows(self) -> Mapping[str, tuple[Problem, CodeTests]]:
        return _load()


@cache
def _load() -> dict[str, tuple[Problem, CodeTests]]:
    rows = {}
    with gzip.open(DATA_FILE, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            number = row["task_id"].split("/")[1]
            stub = row["prompt"]
            tests = CodeTests(
                tests=f"{row['test']}\ncheck({row['entry_point']})\n",
                entry_point=row["entry_point"],
                prelude=stub if stub.endswith("\n") else stub + "\n",
            )
            problem = Problem(
                id=f"humaneval/test/{number}",
                task="humaneval",
                split="test",
                prompt=humaneval_prompt(stub),
                expected=tests.tests,
                solution=fenced(stub + row["canonical_solution"]),
            )
            rows[problem.id] = (problem, tests)
    return rows

"""HumanEval (OpenAI): 164 hand-written functions to complete, one split `test`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from failtune.grading.code import CodeTests
from failtune.tasks.base import Problem
from failtune.tasks.code import CODE_FORMAT, CodeTask, fenced


def humaneval_prompt(stub: str) -> str:
    return (
        "Complete the following Python function.\n\n"
        f"```python\n{stub.rstrip()}\n```\n\n"
        f"{CODE_FORMAT} Write the whole function, signature included."
    )


class HumanEval(CodeTask):
    name = "humaneval"
    splits = ("test",)
    data_file = Path(__file__).parent / "data" / "humaneval" / "HumanEval.jsonl.gz"

    @staticmethod
    def parse(row: dict[str, Any]) -> tuple[Problem, CodeTests]:
        stub = row["prompt"]
        tests = CodeTests(
            tests=f"{row['test']}\ncheck({row['entry_point']})\n",
            entry_point=row["entry_point"],
            prelude=stub if stub.endswith("\n") else stub + "\n",
        )
        problem = Problem(
            id=f"humaneval/test/{row['task_id'].split('/')[1]}",
            task="humaneval",
            split="test",
            prompt=humaneval_prompt(stub),
            expected=tests.tests,
            solution=fenced(stub + row["canonical_solution"]),
        )
        return problem, tests

"""GSM8K (OpenAI grade-school math), shipped inside the package: 7,473 train / 1,319 test."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from failtune.grading import Grade
from failtune.grading.numeric import grade_numeric
from failtune.tasks.base import ANSWER_FORMAT, Problem, Task

DATA_DIR = Path(__file__).parent / "data" / "gsm8k"
_CALCULATOR = re.compile(r"<<[^>]*>>")
# Stop once the model has stated its answer and moved on (a period then space, or a newline).
MATH_STOP_AFTER = r"(?i)the (?:final )?answer is[^\n]*?\d[^\n]*?(?:\.\s|\n)"


def math_prompt(question: str) -> str:
    return f"{question.strip()}\n\n{ANSWER_FORMAT}"


def gsm8k_solution(answer: str) -> tuple[str, str]:
    """Split a GSM8K answer into (cleaned reasoning ending "The answer is N.", gold N)."""
    body, _, gold = answer.rpartition("####")
    gold = gold.strip()
    steps = _CALCULATOR.sub("", body).strip()
    final = f"The answer is {gold.replace(',', '')}."
    return (f"{steps}\n{final}" if steps else final), gold


class GSM8K(Task):
    name = "gsm8k"
    category = "math"
    splits = ("train", "test")
    default_max_new_tokens = 320
    stop_after = MATH_STOP_AFTER

    def data_files(self, split: str) -> list[Path]:
        return [DATA_DIR / f"{split}.jsonl"]

    def load(self, split: str) -> list[Problem]:
        self.check_split(split)
        return list(_load(split))

    def grade(self, problem: Problem, completion: str, finish_reason: str | None) -> Grade:
        return grade_numeric(completion, problem.expected, finish_reason)


@cache
def _load(split: str) -> tuple[Problem, ...]:
    problems = []
    with (DATA_DIR / f"{split}.jsonl").open(encoding="utf-8") as f:
        for index, line in enumerate(f):
            row = json.loads(line)
            solution, gold = gsm8k_solution(row["answer"])
            problems.append(
                Problem(
                    id=f"gsm8k/{split}/{index}",
                    task="gsm8k",
                    split=split,
                    prompt=math_prompt(row["question"]),
                    expected=gold,
                    solution=solution,
                )
            )
    return tuple(problems)

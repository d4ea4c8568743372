"""Completions of every kind of task, for comparing each engine's reward with extract's verdicts.

The rewards' tests call each engine's reward on these very completions and compare with the
verdicts read back from extract's results.jsonl: one grading path, so they must agree. The set
mixes right, wrong, unanswered, cut and hostile answers for GSM8K (math), arith, MMLU (multiple
choice), a custom task graded by math-verify, and MBPP (code, 2-second sandbox timeout).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from helpers import GSM8K_TEST, read_jsonl, write_jsonl

from failtune.cli import main
from failtune.config.options import ExtractOptions
from failtune.tasks import task_by_name
from failtune.tasks.arith import Arith

SANDBOX_TIMEOUT = 2.0
CUT = "length"
EOS = 2  # SmolLM2's <|im_end|>
EOS_TEXT = "<|im_end|>"
CAP = 16  # the max completion length of the token ids made up for TRL's calls
MATH_ROWS = [
    {"question": "What is half of one?", "answer": "\\frac{1}{2}"},
    {"question": "Which x satisfy x^2 = 4?", "answer": "\\{-2, 2\\}"},
    {"question": "What is the square root of 8?", "answer": "2\\sqrt{2}"},
]


@dataclass(frozen=True)
class Case:
    id: str
    completion: str
    finish_reason: str = "stop"


def _fenced(code: str) -> str:
    return f"Here it is.\n```python\n{code}\n```"


def math_cases() -> list[Case]:
    g = [p.expected for p in GSM8K_TEST[:8]]
    return [
        Case("gsm8k/test/0", f"16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\nThe answer is ${g[0]}."),
        Case("gsm8k/test/1", f"So 2 + 1 = 3.\n**Final Answer:** \\boxed{{{g[1]}}}"),
        Case("gsm8k/test/2", "The profit is $70,000.00.\nThe answer is 75000."),
        Case("gsm8k/test/3", "I cannot solve this problem."),
        # stated with a marker, then cut: extract credits it, a reward never does
        Case("gsm8k/test/4", f"The answer is {g[4]}.\nLet me check this again by", CUT),
        Case("gsm8k/test/5", f"First, 3 * 4 = {g[5]} and then", CUT),
        Case(
            "gsm8k/test/6", f"The answer is {g[6]}.\n\nQuestion: what is 2 + 2?\nThe answer is 4."
        ),
        Case("gsm8k/test/7", f"The answer is {int(g[7].replace(',', '')) + 1}."),
    ]


def arith_cases() -> list[Case]:
    problems = Arith().load("test")[:4]
    return [
        Case(
            problems[0].id,
            f"Adding them, we get {problems[0].expected}.\nThe answer is {problems[0].expected}.",
        ),
        Case(problems[1].id, f"The answer is {int(problems[1].expected) + 2}."),
        Case(problems[2].id, f"The answer is {problems[2].expected}."),
        Case(problems[3].id, "Hmm."),
    ]


def choice_cases() -> list[Case]:
    problems = task_by_name("mmlu").load("test")[:4]
    wrong = "A" if problems[1].expected != "A" else "B"
    return [
        Case(problems[0].id, f"Thinking briefly.\nThe answer is ({problems[0].expected})."),
        Case(problems[1].id, f"The answer is ({wrong})."),
        Case(problems[2].id, f"**Answer: {problems[2].expected}**"),
        Case(problems[3].id, "None of these look right to me."),
    ]


def custom_cases() -> list[Case]:
    return [
        Case("custom/test/0", "Half of one is $\\boxed{0.5}$."),
        Case("custom/test/1", "So the solutions are $\\boxed{\\{2, -2\\}}$."),
        Case("custom/test/2", "The answer is $\\boxed{3}$."),
    ]


def code_cases(escape_target: Path) -> list[Case]:
    mbpp = {p.id: p for p in task_by_name("mbpp").load("test")}
    right = mbpp["mbpp/test/14"].solution.split("```python\n")[1].split("\n```")[0]
    return [
        Case("mbpp/test/14", mbpp["mbpp/test/14"].solution),
        Case("mbpp/test/15", _fenced("def split_lowerstring(text):\n    return []")),
        Case("mbpp/test/16", _fenced("while True:\n    pass\n" + right)),
        Case("mbpp/test/17", _fenced(f"open({str(escape_target)!r}, 'w').write('out')\n" + right)),
        Case("mbpp/test/18", _fenced("import os\nos._exit(0)\n" + right)),
        Case("mbpp/test/19", _fenced("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")),
        Case("mbpp/test/20", "def f(:\n    pass"),
    ]


@dataclass
class Graded:
    """The cases, the task options extract graded them with, and extract's records by id."""

    cases: list[Case]
    task_options: dict
    records: dict[str, dict]
    escape_target: Path

    def expected_reward(self, case: Case) -> float:
        record = self.records[case.id]
        return 1.0 if record["correct"] and record["finish_reason"] != CUT else 0.0


def grade_with_extract(folder: Path) -> Graded:
    """Every case graded once by `failtune extract --completions`, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    task_file = write_jsonl(folder / "math_task.jsonl", MATH_ROWS)
    escape = folder / "escaped.txt"
    cases = [
        *math_cases(),
        *arith_cases(),
        *choice_cases(),
        *custom_cases(),
        *code_cases(escape),
    ]
    completions = write_jsonl(
        folder / "completions.jsonl",
        [{"id": c.id, "completion": c.completion, "finish_reason": c.finish_reason} for c in cases],
    )
    out = folder / "extract"
    flags = ["--completions", str(completions), "--output_dir", str(out), "--no-progress"]
    flags += ["--categories", "math,arith,creativity,code,custom"]
    flags += ["--task-file", str(task_file), "--grader", "math"]
    flags += ["--sandbox-timeout", str(SANDBOX_TIMEOUT)]
    code = main(["extract", *flags])
    assert code == 0
    options = ExtractOptions(task_file=str(task_file), grader="math")
    options.sandbox_timeout = SANDBOX_TIMEOUT
    records = {r["id"]: r for r in read_jsonl(out / "results.jsonl")}
    assert set(records) == {c.id for c in cases}
    return Graded(cases, json.loads(json.dumps(options.task_options())), records, escape)

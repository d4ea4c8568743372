"""Audit the MATH grader against a careful human marker on hand-labelled long LaTeX solutions.

Each line of ``data/math_human_labels.jsonl`` is a solution to a real MATH-500 problem written in
the styles strong models use: PRM800K's ``# Answer`` heading, Llama's ``## Step`` and "The final
answer is: $\\boxed{}$", Qwen's numbered bold steps, o1's ``**Answer:**`` and ``**Final
Answer**``, Minerva's "Final Answer: The final answer is $x$. I hope it is correct.", thinking
blocks, and answers without a marker; right answers in every spelling, wrong ones, hedges,
self-corrections, follow-up questions, sign-offs. The label is the careful human's verdict on the
final answer; the grader must agree with every one of them.
"""

import json
from functools import cache
from pathlib import Path

from failtune.tasks.competition_math import Math500

LABELS = Path(__file__).parents[1] / "data" / "math_human_labels.jsonl"


@cache
def _cases() -> tuple[dict, ...]:
    with LABELS.open(encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


@cache
def _problems() -> dict:
    return {p.id: p for p in Math500().load("test")}


def test_audit_set_shape() -> None:
    """Big and varied enough to mean something: many problems, refusals of every kind."""
    cases = _cases()
    assert len(cases) >= 150
    assert len({case["id"] for case in cases}) >= 50
    share_correct = sum(case["human_correct"] for case in cases) / len(cases)
    assert 0.6 <= share_correct <= 0.8  # strong models solve most of MATH-500
    for case in cases:
        assert set(case) == {"id", "completion", "human_correct", "note"}
        assert case["id"] in _problems(), case["id"]
        assert isinstance(case["human_correct"], bool)


def test_grader_agrees_with_every_human_label() -> None:
    task, problems = Math500(), _problems()
    disagreements = []
    for case in _cases():
        grade = task.grade(problems[case["id"]], case["completion"], "stop")
        if grade.correct != case["human_correct"]:
            disagreements.append(
                f"{case['id']} human={case['human_correct']} read={grade.extracted!r} "
                f"({grade.reason}): {case['note']}"
            )
    assert not disagreements, "\n".join(disagreements)

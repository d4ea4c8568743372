"""Audit the GSM8K grader against a careful human marker on hand-labelled model completions.

Each line of ``data/gsm8k_human_labels.jsonl`` is a realistic completion for a real GSM8K test
problem, in one of the many formats models produce, with the verdict a careful human gives on
its FINAL answer. The grader must agree on at least 99.5 % of them.
"""

import json
from functools import cache
from pathlib import Path

from failtune.grading.numeric import grade_numeric
from failtune.tasks.gsm8k import GSM8K

LABELS = Path(__file__).parents[1] / "data" / "gsm8k_human_labels.jsonl"
MIN_AGREEMENT = 0.995


@cache
def _cases() -> tuple[dict, ...]:
    with LABELS.open(encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


@cache
def _gold_by_id() -> dict[str, str]:
    return {problem.id: problem.expected for problem in GSM8K().load("test")}


def test_audit_set_shape() -> None:
    """The set is big and varied enough to mean something, and not lopsided."""
    cases = _cases()
    assert len(cases) >= 250
    assert len({case["id"] for case in cases}) >= 60
    share_correct = sum(case["human_correct"] for case in cases) / len(cases)
    assert 0.4 <= share_correct <= 0.6
    for case in cases:
        assert set(case) == {"id", "completion", "human_correct", "note"}
        assert isinstance(case["human_correct"], bool)


def test_audit_ids_are_real_test_problems() -> None:
    """Every id names a GSM8K test problem, and its gold is the one after "####" in the data."""
    gold = _gold_by_id()
    rows = (GSM8K().data_files("test")[0]).read_text(encoding="utf-8").splitlines()
    for case in _cases():
        assert case["id"] in gold, case["id"]
        index = int(case["id"].rsplit("/", 1)[1])
        assert json.loads(rows[index])["answer"].rsplit("####", 1)[1].strip() == gold[case["id"]]


def test_grader_agrees_with_human_labels() -> None:
    """The grader's verdict matches the careful human's on at least 99.5 % of the audit set."""
    gold = _gold_by_id()
    cases = _cases()
    disagreements = []
    for case in cases:
        grade = grade_numeric(case["completion"], gold[case["id"]])
        if grade.correct != case["human_correct"]:
            disagreements.append(
                f"{case['id']} human={case['human_correct']} read={grade.extracted} "
                f"({grade.reason}): {case['note']}"
            )
    agreement = 1 - len(disagreements) / len(cases)
    report = "\n".join(disagreements)
    assert agreement >= MIN_AGREEMENT, f"agreement {agreement:.2%}:\n{report}"

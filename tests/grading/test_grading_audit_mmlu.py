"""Audit the MMLU choice grader against a careful human marker, through `extract --completions`.

Each line of ``data/mmlu_human_labels.jsonl`` is a completion for a real MMLU test problem (one
problem per line, ids ``mmlu/test/<line>``) in one of the many formats models produce: letters
in every dress, the choice's text instead of its letter, reasoning then a verdict, refusals,
two letters, self-corrections, contradictions. The label is a careful human's verdict; the
grader must agree on every one of them.
"""

import gzip
import json
from functools import cache
from pathlib import Path

from failtune.evaluation.extraction import extract
from failtune.tasks.mmlu import DATA_DIR

LABELS = Path(__file__).parents[1] / "data" / "mmlu_human_labels.jsonl"


@cache
def _cases() -> tuple[dict, ...]:
    with LABELS.open(encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def test_audit_set_shape() -> None:
    cases = _cases()
    assert len(cases) >= 300
    assert len({case["id"] for case in cases}) == len(cases)  # extract refuses repeated ids
    share_correct = sum(case["human_correct"] for case in cases) / len(cases)
    assert 0.4 <= share_correct <= 0.6
    with gzip.open(DATA_DIR / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        n_rows = sum(1 for _ in f)
    for case in cases:
        assert set(case) == {"id", "completion", "human_correct", "note"}
        assert 0 <= int(case["id"].removeprefix("mmlu/test/")) < n_rows


def test_extract_completions_agrees_with_every_human_label(tmp_path: Path) -> None:
    result = extract(completions=LABELS, output_dir=tmp_path, categories=None, show_progress=False)
    verdict = {r["id"]: r for r in result.records}
    disagreements = [
        f"{c['id']} human={c['human_correct']} read={verdict[c['id']]['extracted']} "
        f"({verdict[c['id']]['reason']}): {c['note']}"
        for c in _cases()
        if verdict[c["id"]]["correct"] != c["human_correct"]
    ]
    assert not disagreements, "\n".join(disagreements)
    assert result.summary["creativity"]["n"] == len(_cases())
    reasons = set(result.summary["creativity"]["failure_reasons"])
    assert {"wrong_answer", "no_answer", "ambiguous"} <= reasons

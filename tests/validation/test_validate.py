"""Validate from completions files with known counts; gates and validation.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import gsm8k_answers

from failtune.cli import main
from failtune.errors import FailtuneError
from failtune.validation.paired import parse_gate

answers = gsm8k_answers


def test_paired_counts_and_gates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = 40
    base_right = set(range(0, 10))  # base: 10/40
    cand_right = set(range(2, 30))  # candidate: 28/40; wins 20 (10..29), losses 2 (0, 1)
    base = answers(tmp_path / "base.jsonl", base_right, n)
    cand = answers(tmp_path / "cand.jsonl", cand_right, n)
    out = tmp_path / "val"
    code = main(
        [
            "validate",
            "--base-completions",
            str(base),
            "--candidate-completions",
            str(cand),
            "--output_dir",
            str(out),
            "--gate",
            "math.win_rate>=0.4",
            "--gate",
            "math.losses<10%",
            "--gate",
            "math.mcnemar_p<0.001",
        ]
    )
    assert code == 0
    data = json.loads((out / "validation.json").read_text())
    m = data["categories"]["math"]
    assert (m["n"], m["wins"], m["losses"], m["ties"]) == (40, 20, 2, 18)
    assert (m["ties_correct"], m["ties_wrong"]) == (8, 10)
    assert m["base_accuracy"] == pytest.approx(0.25)
    assert m["candidate_accuracy"] == pytest.approx(0.7)
    assert m["mcnemar_p"] == pytest.approx(2 * (1 + 22 + 231) / 2**22)
    low, high = m["delta_ci95"]
    assert low < 0.45 < high and low > 0.2
    assert [g["passed"] for g in data["gates"]] == [True, True, True]
    assert "math" in capsys.readouterr().out

    failing = main(
        [
            "validate",
            "--base-completions",
            str(base),
            "--candidate-completions",
            str(cand),
            "--output_dir",
            str(out),
            "--gate",
            "math.ties>=60%",
        ]
    )
    assert failing == 1
    assert json.loads((out / "validation.json").read_text())["gates"][0]["passed"] is False


def test_gate_parsing() -> None:
    g = parse_gate("math.ties>=60%")
    assert (g.category, g.metric, g.op, g.threshold) == ("math", "tie_rate", ">=", 0.6)
    assert parse_gate("overall.mcnemar_p<0.05").metric == "mcnemar_p"
    with pytest.raises(FailtuneError):
        parse_gate("math.wins")


def test_unknown_gate_metric_is_a_user_error(tmp_path: Path) -> None:
    base = answers(tmp_path / "b.jsonl", {0}, 3)
    from failtune.validation.paired import validate

    with pytest.raises(FailtuneError, match="unknown metric 'accuracy'"):
        validate(
            base_completions=base,
            candidate_completions=base,
            output_dir=tmp_path / "v",
            gates=["math.accuracy>0.5"],
        )
    with pytest.raises(FailtuneError, match="names category 'code'"):
        validate(
            base_completions=base,
            candidate_completions=base,
            output_dir=tmp_path / "v",
            gates=["code.wins>0.5"],
        )


def test_a_grpo_prompt_dataset_is_checked_for_overlap_like_training_files(
    tmp_path: Path,
) -> None:
    from failtune.rewards.datasets import write_prompt_dataset
    from failtune.tasks.arith import Arith
    from failtune.validation.forgetting import TrainingInfo

    task = Arith(size=8)
    problems = task.load("train")[:3]
    path = write_prompt_dataset([(task, p) for p in problems], tmp_path / "grpo_prompts.jsonl")
    sft = tmp_path / "arith_training_ready.jsonl"
    sft.write_text(json.dumps({"instruction": "What is 2 + 2?", "output": "4"}) + "\n")
    info = TrainingInfo(files=[path, sft])
    assert list(info.instructions()) == [p.prompt for p in problems] + ["What is 2 + 2?"]

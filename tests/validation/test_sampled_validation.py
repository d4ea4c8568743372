"""Validation with K samples per problem: pass@k per side and the paired change in success rate."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ScriptedBackend
from helpers import GSM8K_TEST

from failtune.files import read_json
from failtune.validation.forgetting import TrainingInfo
from failtune.validation.paired import validate
from failtune.validation.stats import paired_rates

PROBLEMS = GSM8K_TEST[:4]
GOLD = {p.prompt: p.expected for p in PROBLEMS}
INDEX = {p.id: i for i, p in enumerate(PROBLEMS)}


def side(extra: int) -> ScriptedBackend:
    """Problem i: samples 0 … i+extra-1 of 4 right; greedy always wrong."""

    def sampled(prompt: str, key: str, s: int) -> str:
        gold = int(GOLD[prompt])
        answer = gold if s < INDEX[key] + extra else gold + 100
        return f"{gold} + 0 = {answer}.\nThe answer is {answer}."

    return ScriptedBackend(lambda p: "The answer is -1.", sample=sampled, model=f"m{extra}")


def sampled_validation(tmp_path: Path):
    """Base: problem i's samples 0 … i-1 right; candidate: one more right on each problem."""
    return validate(
        side(0),
        side(1),
        categories="math",
        limit=4,
        samples=4,
        temperature=0.8,
        output_dir=str(tmp_path / "v"),
        training=TrainingInfo(categories=["math"]),
        show_progress=False,
    )


def test_sampled_validation_pairs_success_rates(tmp_path: Path) -> None:
    sampled_validation(tmp_path)
    sampled = read_json(tmp_path / "v" / "validation.json")["categories"]["math"]["sampled"]
    rates = sampled["success_rate"]
    assert sampled["samples"] == 4 and rates["n"] == 4
    assert rates["base_rate"] == pytest.approx((0 + 1 + 2 + 3) / 16)
    assert rates["candidate_rate"] == pytest.approx((1 + 2 + 3 + 4) / 16)
    assert rates["delta"] == pytest.approx(0.25)
    # all four differences are +0.25: only the all-plus and all-minus sign flips are as extreme
    assert rates["p"] == pytest.approx(2 / 16, abs=0.02)
    assert sampled["base_pass_at_k"]["1"]["estimate"] == pytest.approx(6 / 16)
    assert sampled["candidate_pass_at_k"]["4"]["estimate"] == pytest.approx(1.0)


def test_paired_rates_no_change_is_not_significant() -> None:
    rates = paired_rates([0.1, 0.5, 0.9, 0.3] * 10, [0.1, 0.5, 0.9, 0.3] * 10)
    assert rates["delta"] == 0 and rates["p"] == 1.0
    shifted = paired_rates([0.2] * 30, [0.3] * 30)
    assert shifted["delta"] == pytest.approx(0.1) and shifted["p"] < 0.001
    assert shifted["ci_low"] == pytest.approx(0.1) == pytest.approx(shifted["ci_high"])


def test_the_terminal_shows_the_sampled_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from failtune.reporting.terminal import print_validation

    result = sampled_validation(tmp_path)
    print_validation(result)
    text = " ".join(capsys.readouterr().out.split())
    assert "math, 4 samples per problem: success rate 37.5% → 62.5%, Δ +25.0%" in text

"""Experiment tracking: report_to reaches TRL; a run's validation joins the same TensorBoard run."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from helpers import tiny_config
from transformers.integrations import integration_utils

from failtune.cli import main
from failtune.errors import FailtuneError
from failtune.training.tracking import parse_report_to, summary_metrics


def require_tensorboard() -> None:
    """The dev extra installs TensorBoard: under CI its absence is a failure, not a skip."""
    if importlib.util.find_spec("tensorboard") is None:
        message = "TensorBoard missing: pip install -e '.[dev]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of every event file in `folder`, read with TensorBoard's own reader."""
    require_tensorboard()
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    mux = EventMultiplexer().AddRunsFromDirectory(str(folder)).Reload()
    found: dict[str, list[tuple[int, float]]] = {}
    for run in mux.Runs():
        for tag in mux.GetAccumulator(run).Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in mux.Scalars(run, tag))
    return found


def test_report_to_names_are_checked_before_anything_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse_report_to("none") == [] and parse_report_to(None) == []
    with pytest.raises(FailtuneError, match="unknown tracker 'tensorbord'"):
        parse_report_to("tensorbord")
    monkeypatch.setattr(integration_utils, "is_wandb_available", lambda: False)
    with pytest.raises(FailtuneError, match="needs the wandb package: pip install wandb"):
        parse_report_to(["wandb"])


def test_summary_metrics_flatten_tables_gates_and_cost() -> None:
    validation = {
        "categories": {
            "math": {"n": 10, "delta": 0.2, "delta_ci95": [0.1, 0.3], "p": float("nan")}
        },
        "gates": [{"expr": "math.wins>=16%", "value": 0.2, "passed": True}],
    }
    metrics = summary_metrics(validation, {"total_seconds": 12.5, "machine_usd": None})
    assert metrics == {
        "validation/math/n": 10.0,
        "validation/math/delta": 0.2,
        "gates/math.wins>=16%": 1.0,
        "gates/all_passed": 1.0,
        "cost/total_seconds": 12.5,
    }


def test_run_writes_training_and_validation_to_one_tensorboard_run(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    require_tensorboard()
    config = tiny_config(tmp_path, tiny_model_dir)
    config.write_text(config.read_text().replace("rounds = 2", "rounds = 1"))
    args = ["run", str(config), "--no-progress", "--set", "train.report_to=tensorboard"]
    args += ["--gpu-hourly-usd", "2"]
    assert main(args) == 0
    run = tmp_path / "run"
    found = scalars(run / "round-1" / "adapter" / "tensorboard")
    state = json.loads((run / "run_state.json").read_text())
    steps = state["steps"]["round-1/train"]["steps"]
    assert [s for s, _ in found["train/loss"]] == list(range(1, steps + 1))
    validation = json.loads((run / "round-1" / "validate" / "validation.json").read_text())
    arith = validation["categories"]["arith"]
    assert found["validation/arith/n"] == [(steps, arith["n"])]
    [(step, accuracy)] = found["validation/arith/candidate_accuracy"]
    assert step == steps and accuracy == pytest.approx(arith["candidate_accuracy"])
    assert found["gates/arith.losses<=50%"] == [(steps, 1.0)]
    total = sum(state["steps"][n]["seconds"] for n in state["steps"])
    assert found["cost/total_seconds"][0][1] == pytest.approx(total, rel=1e-5)
    assert found["cost/machine_usd"][0][1] == pytest.approx(total / 3600 * 2, rel=1e-5)
    manifest = json.loads((run / "round-1" / "adapter" / "manifest.json").read_text())
    assert manifest["args"]["report_to"] == "tensorboard"

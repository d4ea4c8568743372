"""The plan declares a run's steps once; every kind has its input hash, work and price; a
step's recorded time is the sum of its attempts."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from failtune.pipeline.estimate import PRICES
from failtune.pipeline.plan import KINDS, build_plan, recorded_plan
from failtune.pipeline.state import RunState
from failtune.pipeline.steps import INPUTS, WORK


def test_one_round_in_run_order() -> None:
    plan = build_plan(Path("run"), "m", 1, None)
    assert [(s.name, s.kind, s.folder) for s in plan.steps] == [
        ("round-1/extract", "extract", "round-1/extract"),
        ("baseline", "baseline", "baseline"),
        ("round-1/train", "train", "round-1/adapter"),
        ("round-1/validate", "validate", "round-1/validate"),
    ]
    assert plan["round-1/train"].outputs == [
        "round-1/adapter/adapter_config.json",
        "round-1/adapter/adapter_model.safetensors",
    ]
    assert plan.adapter_step(1).name == "round-1/train"


def test_rounds_chain_models_and_merge_all_but_the_last() -> None:
    plan = build_plan(Path("out"), "base", 2, None)
    second = plan["round-2/extract"]
    assert second.model == str(Path("out") / "round-1" / "adapter" / "merged")
    assert second.inputs == ("round-1/train",)  # its hash takes the train step's
    assert plan["round-1/train"].merge and not plan["round-2/train"].merge
    assert "round-1/adapter/merged/config.json" in plan["round-1/train"].outputs
    assert plan["round-2/validate"].model == "base"  # always against the base's answers
    assert [s.name for s in plan.steps].count("baseline") == 1


def test_a_sweep_trains_per_rate_then_chooses_before_the_baseline() -> None:
    plan = build_plan(Path("run"), "m", 1, [1e-4, 3e-4])
    assert [s.name for s in plan.steps] == [
        "round-1/extract",
        "round-1/train-lr-1e-04",
        "round-1/train-lr-3e-04",
        "round-1/select",
        "baseline",
        "round-1/validate",
    ]
    select = plan["round-1/select"]
    assert select.inputs == ("round-1/train-lr-1e-04", "round-1/train-lr-3e-04")
    assert select.owns == ["round-1/select", "round-1/adapter"]
    assert plan["round-1/train-lr-3e-04"].folder == "round-1/sweep/lr-3e-04"
    assert plan.adapter_step(1) is select
    assert plan.kind_of("round-1/select") == "select" and plan.kind_of("elsewhere") is None


def test_a_recorded_config_gives_the_same_plan() -> None:
    config = {"model": "m", "rounds": 2, "train": {"learning_rate": [3e-4, 1e-4]}}
    assert recorded_plan(Path("r"), config) == build_plan(Path("r"), "m", 2, [1e-4, 3e-4])


def test_every_kind_has_its_input_hash_work_and_price() -> None:
    assert set(KINDS) == set(INPUTS) == set(WORK) == set(PRICES)


def _state(tmp_path: Path) -> RunState:
    return RunState(tmp_path / "run_state.json", {"model": "m"})


def test_an_interrupted_attempt_adds_its_time(tmp_path: Path) -> None:
    state = _state(tmp_path)
    with pytest.raises(KeyboardInterrupt), state.attempt("s", "h1", []):
        time.sleep(0.05)
        raise KeyboardInterrupt
    first = state.steps["s"]["attempt_seconds"]
    assert first >= 0.05
    resumed = _state(tmp_path)  # the next `failtune run` reads it back
    with resumed.attempt("s", "h1", []):
        pass
    record = resumed.finish("s", {"x": 1}, 2.0)
    assert record["seconds"] == pytest.approx(first + 2.0, abs=0.01)
    assert record["status"] == "done" and record["x"] == 1
    assert json.loads((tmp_path / "run_state.json").read_text())["steps"]["s"] == record


def test_a_killed_attempt_counts_until_its_last_write(tmp_path: Path) -> None:
    """SIGKILL leaves no time to count: the attempt lasted until the newest file it wrote."""
    folder = tmp_path / "step"
    folder.mkdir()
    started = datetime.now(timezone.utc) - timedelta(seconds=100)
    written = folder / "results.jsonl"
    written.write_text("{}\n")
    os.utime(written, (started.timestamp() + 40, started.timestamp() + 40))
    os.utime(folder, (started.timestamp() + 1, started.timestamp() + 1))
    state = _state(tmp_path)
    state.steps["s"] = {"hash": "h", "status": "running", "started": started.isoformat()}
    with state.attempt("s", "h", [folder]):
        pass
    assert state.finish("s", {}, 1.0)["seconds"] == pytest.approx(41.0, abs=1.0)


def test_changed_inputs_start_the_time_over(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.steps["s"] = {"hash": "old", "status": "running", "started": "2020-01-01T00:00:00+00:00"}
    with state.attempt("s", "new", []):
        pass
    assert state.finish("s", {}, 3.0)["seconds"] == 3.0


def test_targets_step_and_training_from_the_base() -> None:
    plan = build_plan(Path("r"), "base", 2, None, retargets=True, from_base=True)
    names = [s.name for s in plan.steps]
    assert names[:4] == ["round-1/extract", "round-1/targets", "baseline", "round-1/train"]
    assert plan["round-1/train"].inputs == ("round-1/targets",)
    assert plan["round-1/targets"].inputs == ("round-1/extract",)
    # round 2 samples on round 1's model but trains a fresh adapter on the base
    assert plan["round-2/extract"].model == str(Path("r") / "round-1/adapter/merged")
    assert plan["round-2/train"].model == "base"
    stacked = build_plan(Path("r"), "base", 2, None)
    assert stacked["round-2/train"].model == str(Path("r") / "round-1/adapter/merged")
    assert "round-1/targets" not in [s.name for s in stacked.steps]
    config = {"model": "base", "rounds": 2, "retrain_from_base": True}
    config |= {"train": {"learning_rate": 2e-4}, "extract": {"targets": "self"}}
    assert recorded_plan(Path("r"), config) == plan


def test_a_method_per_round_sft_then_grpo() -> None:
    config = {"model": "base", "rounds": 2, "extract": {"targets": "auto"}}
    config |= {"train": {"learning_rate": 2e-4, "method": ["sft", "grpo"]}}
    plan = recorded_plan(Path("r"), config)
    sft, grpo = plan["round-1/train"], plan["round-2/train"]
    assert (sft.method, sft.merge, sft.inputs) == ("sft", True, ("round-1/targets",))
    # GRPO starts from the SFT model and reads the extract's records (no targets step)
    assert (grpo.method, grpo.merge, grpo.inputs) == ("grpo", False, ("round-2/extract",))
    assert grpo.model == str(Path("r") / "round-1/adapter/merged")
    assert "round-2/targets" not in [s.name for s in plan.steps]
    one = recorded_plan(Path("r"), config | {"train": {"learning_rate": 2e-4, "method": "grpo"}})
    assert [s.method for s in one.steps if s.kind == "train"] == ["grpo", "grpo"]

"""GRPO: bad input refused before a model loads, plumbing and resume on a tiny random model, and a
short real run of SmolLM2-135M on arith whose logged metrics are real values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import require_smollm2
from helpers import read_jsonl, write_jsonl

from failtune.errors import FailtuneError
from failtune.rewards.datasets import write_prompt_dataset
from failtune.tasks.arith import Arith
from failtune.training.grpo import train_grpo

NO_MODEL = "/nonexistent/model"  # loading it would fail with "model not found"
ARITH = {"arith": {"size": 8}}


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    task = Arith(size=8)
    return write_prompt_dataset([(task, p) for p in task.load("train")[:4]], tmp_path / "p.jsonl")


def _row(path: Path) -> dict:
    return read_jsonl(path)[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_generations": 1}, "--num-generations must be at least 2"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"report_to": "nosuch"}, "unknown tracker"),
    ],
)
def test_bad_options_are_refused_before_the_model_loads(
    prompts: Path, change: dict, message: str
) -> None:
    with pytest.raises(FailtuneError, match=message):
        train_grpo(NO_MODEL, prompts, task_options=ARITH, **change)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"ground_truth": ""}, "has no ground truth to reward against"),
        ({"id": "arith/train/999"}, "no problem with id"),
        ({"ground_truth": "12345"}, "write the dataset again"),
        ({"task": "gsm8k"}, "belongs to task 'arith'"),
    ],
)
def test_bad_datasets_are_refused_before_the_model_loads(
    prompts: Path, tmp_path: Path, edit: dict, message: str
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{**_row(prompts), **edit}])
    with pytest.raises(FailtuneError, match=message):
        train_grpo(NO_MODEL, path, task_options=ARITH)


def test_plumbing_and_resume_on_a_tiny_model(
    prompts: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    out = tmp_path / "grpo"
    settings = {"num_generations": 2, "batch_size": 1, "max_completion_length": 8}
    settings |= {"save_steps": 1, "task_options": ARITH, "show_progress": False}
    first = train_grpo(str(tiny_model_dir), prompts, out, max_steps=2, **settings)
    assert first.metrics["steps"] == 2
    assert [r["step"] for r in read_jsonl(first.metrics_file)] == [1, 2]
    assert (out / "adapter_config.json").is_file()
    assert json.loads((out / "failtune_train.json").read_text())["method"] == "grpo"
    logged = [h for h in first.metrics["log_history"] if "reward" in h]
    assert all("rewards/failtune/mean" in h for h in logged)  # failtune's reward was the one
    # Steps 1 and 2 are kept, not run again; step 3 is added once.
    again = train_grpo(str(tiny_model_dir), prompts, out, max_steps=3, merge=True, **settings)
    assert again.metrics["steps"] == 3
    # merged for a run's next round: a plain model of the base's shape, no adapter in it
    merged = json.loads((out / "merged" / "config.json").read_text())
    assert (
        merged["hidden_size"]
        == json.loads((tiny_model_dir / "config.json").read_text())["hidden_size"]
    )
    assert not (out / "merged" / "adapter_config.json").exists()
    assert (out / "merged" / "model.safetensors").is_file()
    assert [r["step"] for r in read_jsonl(again.metrics_file)] == [1, 2, 3]
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-3",
    ]


@pytest.mark.model
def test_short_real_grpo_run_logs_real_metrics(prompts: Path, tmp_path: Path) -> None:
    """SmolLM2-135M-Instruct, two GRPO steps on arith: every logged figure is a number in its
    range, and the completions are the model's own (not all cut, not empty)."""
    require_smollm2()
    cap = 48
    result = train_grpo(
        "builtin:smollm2",
        prompts,
        tmp_path / "grpo",
        max_steps=2,
        num_generations=4,
        batch_size=1,
        max_completion_length=cap,
        task_options=ARITH,
        show_progress=False,
    )
    rows = read_jsonl(result.metrics_file)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        for key in ("mean_reward", "zero_std_share", "truncation_rate"):
            assert 0.0 <= row[key] <= 1.0, (key, row)
        assert 0 < row["mean_completion_length"] <= cap
        assert math.isfinite(row["loss"]) and row["step_seconds"] > 0
        assert row["learning_rate"] > 0


def test_two_processes_share_each_group(
    prompts: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Two gloo processes, each answering one of a group's two answers: the steps, the metrics
    and the adapter are written once, by the main process."""
    out = tmp_path / "grpo2"
    settings = {"num_generations": 2, "batch_size": 1, "max_completion_length": 8}
    result = train_grpo(
        str(tiny_model_dir),
        prompts,
        out,
        max_steps=2,
        num_processes=2,
        task_options=ARITH,
        show_progress=False,
        **settings,
    )
    assert result.model is None  # trained in the launched processes: the adapter is on disk
    assert result.metrics["steps"] == 2 and result.prompts == 4
    assert [r["step"] for r in read_jsonl(result.metrics_file)] == [1, 2]
    assert (out / "adapter_model.safetensors").is_file() and (out / "launch.log").is_file()
    assert not (out / ".saving").exists()
    checkpoint = out / "checkpoints" / "checkpoint-2"
    assert {p.name for p in checkpoint.glob("rng_state*")} == {"rng_state_0.pth", "rng_state_1.pth"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["args"]["num_processes"] == 2


def test_the_launched_grpo_processes_get_the_same_options() -> None:
    from failtune.cli import build_parser, grpo_options
    from failtune.config.options import GRPOOptions
    from failtune.training.launch import launch_command

    o = GRPOOptions(num_generations=4, learning_rate=3e-6, beta=0.04, num_processes=2)
    cmd = launch_command("m", "d", Path("o"), o)
    argv = cmd[cmd.index("failtune.cli") + 1 :]
    args = build_parser().parse_args(argv)
    args.argv = argv
    assert args.method == "grpo" and grpo_options(args) == o

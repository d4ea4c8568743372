"""Training on several processes (failtune.training.launch): two real gloo processes on the CPU
train the same run as one, only the main process writes, a killed run resumes, and a launch the
machine or accelerate cannot carry out is refused before anything starts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import arith_training_file
from safetensors.torch import load_file
from test_bad_input import assert_one_clean_line, run_cli

from failtune.config.options import TrainOptions, to_flags
from failtune.training.sft import train

# 12 examples, global batch 4: 3 optimizer steps; a checkpoint after each. Without dropout,
# whose masks come from each process's own random stream, the runs must agree.
SETTINGS = {
    "batch_size": 4,
    "num_train_epochs": 1.0,
    "save_steps": 1,
    "seed": 0,
    "lora_dropout": 0.0,
}


def _losses(out: Path) -> list[float]:
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


def _weights(out: Path) -> dict:
    return load_file(str(out / "adapter_model.safetensors"))


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if "checkpoints" not in p.parts)


@pytest.fixture(scope="module")
def runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same training on one process and on two (launched by `train` itself)."""
    root = tmp_path_factory.mktemp("ddp")
    data = arith_training_file(root / "arith_training_ready.jsonl", n=12)
    found = {}
    for processes in (1, 2):
        out = root / f"p{processes}"
        train(
            str(tiny_model_dir),
            data,
            out,
            num_processes=processes,
            show_progress=False,
            **SETTINGS,
        )
        found[str(processes)] = out
    found["data"] = data
    return found


def test_two_processes_train_the_same_run_as_one(runs: dict[str, Path]) -> None:
    one, two = runs["1"], runs["2"]
    m1 = json.loads((one / "manifest.json").read_text())
    m2 = json.loads((two / "manifest.json").read_text())
    assert m1["processes"] == {
        "world_size": 1,
        "per_process_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "global_batch_size": 4,
    }
    assert m2["processes"] == {
        "world_size": 2,
        "per_process_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "global_batch_size": 4,
    }
    assert m1["counts"] == m2["counts"] == {"examples": 12, "steps": 3}
    # Each optimizer step sees the same 4 examples (2 per process): the losses agree step by
    # step, not just on average.
    assert len(_losses(two)) == 3
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-4)
    w1, w2 = _weights(one), _weights(two)
    assert w1.keys() == w2.keys()
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-5


def test_only_the_main_process_writes(runs: dict[str, Path]) -> None:
    two = runs["2"]
    # One adapter, one record; launch.log is the launchers' own output, kept for a failure.
    assert _files(two) == sorted([*_files(runs["1"]), "launch.log"])
    assert not (two / ".saving").exists()
    checkpoint = two / "checkpoints" / "checkpoint-3"
    # The trainer keeps each process's random state, so a resumed run continues both streams.
    assert {p.name for p in checkpoint.glob("rng_state*")} == {"rng_state_0.pth", "rng_state_1.pth"}


def test_two_processes_resume_from_a_checkpoint(
    runs: dict[str, Path], tiny_model_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    """A run killed after step 2: the final checkpoint and the adapter are gone."""
    out = tmp_path / "resumed"
    shutil.copytree(runs["2"] / "checkpoints", out / "checkpoints")
    shutil.rmtree(out / "checkpoints" / "checkpoint-3")
    capfd.readouterr()
    result = train(
        str(tiny_model_dir), runs["data"], out, num_processes=2, show_progress=False, **SETTINGS
    )
    assert "resuming training from" in capfd.readouterr().err
    assert result.metrics["steps"] == 3
    assert result.model is None  # trained in the launched processes: the adapter is on disk
    assert _losses(out) == pytest.approx(_losses(runs["2"]), rel=1e-4)
    w, w2 = _weights(out), _weights(runs["2"])
    assert max((w[k] - w2[k]).abs().max().item() for k in w) < 1e-5


def test_the_launched_processes_get_the_same_options() -> None:
    from failtune.cli import build_parser
    from failtune.config.options import from_args

    o = TrainOptions(
        learning_rate=3e-4, padding_free=False, replay="r.jsonl", num_processes=2, merge=True
    )
    argv = ["train", "--model_name", "m", "--dataset_path", "d", "--output_dir", "o"]
    assert from_args(TrainOptions, build_parser().parse_args([*argv, *to_flags(o)])) == o


# --- refused before anything starts ---

TRAIN = ["train", "--model_name", "builtin:smollm2", "--output_dir", "out", "--no-progress"]


def _config(tmp_path: Path, train: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(
        f'model = "builtin:smollm2"\noutput_dir = "{tmp_path / "run"}"\n'
        f'[extract]\ncategories = "arith"\nlimit = 2\n[train]\n{train}\n'
    )
    return str(path)


BAD = {
    "too-many-processes": (
        ["--num_processes", "4096"],
        "num_processes = 4096",
        r"num_processes is 4096, but \d+ (CPU core|GPU)\(s\) on this machine allow at most",
    ),
    "batch-not-divisible": (
        ["--num_processes", "2", "--batch_size", "3"],
        "num_processes = 2\nbatch_size = 3",
        r"batch_size 3 is the global batch and must divide evenly over 2 processes",
    ),
    "config-asks-too-many": (
        ["--accelerate_config", "many.yaml"],
        'accelerate_config = "many.yaml"',
        r"num_processes is 4096, but \d+ (CPU core|GPU)\(s\) on this machine allow at most",
    ),
    "config-missing": (
        ["--accelerate_config", "none.yaml"],
        'accelerate_config = "none.yaml"',
        r"accelerate.config names none\.yaml, which does not exist",
    ),
    "config-not-yaml": (
        ["--accelerate_config", "broken.yaml"],
        'accelerate_config = "broken.yaml"',
        r"accelerate config broken\.yaml cannot be read by accelerate \(while parsing",
    ),
    "config-not-json": (
        ["--accelerate_config", "broken.json"],
        'accelerate_config = "broken.json"',
        r"accelerate config broken\.json cannot be read by accelerate \(Expecting value",
    ),
    "config-not-accelerate": (
        ["--accelerate_config", "other.yaml"],
        'accelerate_config = "other.yaml"',
        r"cannot be read by accelerate \(A `distributed_type` must be specified",
    ),
}


@pytest.mark.parametrize("where", ["train", "run"])
@pytest.mark.parametrize("case", list(BAD))
def test_a_launch_that_cannot_happen_is_one_line_and_writes_nothing(
    where: str,
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.yaml").write_text("num_processes: [2\n")
    (tmp_path / "broken.json").write_text('{"num_processes": ')
    (tmp_path / "other.yaml").write_text("learning_rate: 1e-4\n")
    (tmp_path / "many.yaml").write_text(
        "distributed_type: MULTI_CPU\nnum_processes: 4096\nnum_machines: 1\nuse_cpu: true\n"
    )
    data = arith_training_file(tmp_path / "d.jsonl", n=2)
    flags, keys, expect = BAD[case]
    if where == "train":
        argv = [*TRAIN, "--dataset_path", str(data), *flags]
    else:
        argv = ["run", _config(tmp_path, keys), "--no-progress"]
    before = sorted(tmp_path.rglob("*"))
    code, err = run_cli(argv, capfd)
    assert code == 2
    assert_one_clean_line(code, err, expect)
    assert sorted(tmp_path.rglob("*")) == before


def test_a_run_launches_its_train_step_on_two_processes(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from helpers import tiny_config

    from failtune.cli import main

    config = str(tiny_config(tmp_path, tiny_model_dir))
    assert main(["run", config, "--no-progress", "--set", "train.num_processes=2"]) == 0
    assert "training on 2 processes through accelerate launch" in capsys.readouterr().err
    run = tmp_path / "run"
    state = json.loads((run / "run_state.json").read_text())
    assert state["steps"]["round-1/train"]["steps"] == 2  # 6 failures, global batch 4
    assert state["steps"]["round-1/validate"]["status"] == "done"
    adapter = run / "round-1" / "adapter"
    manifest = json.loads((adapter / "manifest.json").read_text())
    assert manifest["processes"]["world_size"] == 2
    assert manifest["processes"]["global_batch_size"] == 4
    assert (adapter / "merged" / "config.json").is_file()  # a second round would start from it
    # How many processes share the work does not change what is trained: nothing is redone.
    assert main(["run", config, "--no-progress"]) == 0
    again = json.loads((run / "run_state.json").read_text())
    assert (
        again["steps"]["round-1/train"]["finished"] == state["steps"]["round-1/train"]["finished"]
    )

"""Options declared once (failtune.config.options): the CLI, the run config, the Python API and the
manifests all follow the declaration, and bad values are caught whole before any work starts."""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from failtune.cli import build_parser, main
from failtune.config import options
from failtune.config.options import (
    SECTIONS,
    ExtractOptions,
    TrainOptions,
    ValidateOptions,
    from_args,
    option,
    section_fields,
)
from failtune.errors import FailtuneError
from failtune.evaluation.extraction import extract
from failtune.pipeline.config import resolve_config
from failtune.tasks.arith import Arith
from failtune.training.sft import train
from failtune.validation.paired import validate

HUB_ID = "org/some-model"  # resolves as a hub id without a download


@dataclass
class _WithNewOption(TrainOptions):
    warmup_note: int = option(7, "an option added for this test", low=1)


def _training_file(path: Path, n: int = 8) -> Path:
    rows = [{"instruction": p.prompt, "output": p.solution} for p in Arith(size=n).load("train")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_new_train_option_is_one_field(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(SECTIONS, "train", _WithNewOption)
    data = _training_file(tmp_path / "arith_training_ready.jsonl")
    out = tmp_path / "adapter"
    required = ["--model_name", str(tiny_model_dir), "--dataset_path", str(data)]
    required += ["--output_dir", str(out)]

    # The CLI has the flag, in both spellings, with its default and its range.
    args = build_parser().parse_args(["train", *required, "--warmup-note", "5"])
    assert args.warmup_note == 5
    assert build_parser().parse_args(["train", *required, "--warmup_note", "4"]).warmup_note == 4
    assert build_parser().parse_args(["train", *required]).warmup_note == 7

    # The run config has the key in [train], and --set reaches it; its range is checked.
    config = resolve_config({"model": HUB_ID, "train": {"warmup_note": 3}})
    assert config.train.warmup_note == 3
    assert resolve_config({"model": HUB_ID}, {"train.warmup_note": 9}).train.warmup_note == 9
    with pytest.raises(FailtuneError, match=r"\[train\] warmup_note must be at least 1, got 0"):
        resolve_config({"model": HUB_ID, "train": {"warmup_note": 0}})

    # failtune train records it in the manifest.
    argv = ["train", *required, "--warmup-note", "5", "--num_train_epochs", "1"]
    assert main([*argv, "--batch-size", "4", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["args"]["warmup_note"] == 5
    assert manifest["args"]["batch_size"] == 4 and manifest["args"]["save_steps"] == 50


BAD_CONFIG = """
model = "{tmp}/no-such-model"
output_dir = "{tmp}/run"
colour = "blue"
[extract]
categories = "math,astrology"
[train]
num_train_epochs = "two"
lora_dropout = 1.5
replay = "{tmp}/no-replay.jsonl"
[tasks.custom]
path = "{tmp}/no-tasks.jsonl"
[validate]
categories = "arith"
split = "dev"
gates = ["arith.wins>>16%", "math.delta>0", "arith.speed>1"]
"""


def test_a_bad_config_lists_every_problem_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG.format(tmp=tmp_path))
    t0 = time.perf_counter()
    assert main(["run", str(path), "--no-progress"]) == 2
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    expected = [
        "unknown config key 'colour'",
        "[train] num_train_epochs must be a number, got 'two'",
        "[train] lora_dropout must be at least 0 and below 1, got 1.5",
        f"[train] replay names {tmp_path}/no-replay.jsonl, which does not exist",
        f"[tasks.custom] path names {tmp_path}/no-tasks.jsonl, which does not exist",
        "[extract]: unknown category 'astrology'",
        "[validate]: task 'arith' has no split 'dev'",
        "cannot read gate 'arith.wins>>16%'",
        "gate 'math.delta>0' names category 'math', but only arith will be validated",
        "gate 'arith.speed>1': unknown metric 'speed'",
        f"model: model not found: {tmp_path}/no-such-model",
    ]
    for sentence in expected:
        assert sentence in err, sentence
    assert f"has {len(expected)} problems" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert seconds < 10


def test_bad_flags_are_listed_together_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = [
        "train",
        "--model_name",
        "./nope",
        "--dataset_path",
        "x.jsonl",
        "--output_dir",
        str(out),
    ]
    assert main([*argv, "--lora-dropout", "1", "--replay", "missing.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "--lora-dropout must be at least 0 and below 1, got 1.0" in err
    assert "--replay names missing.jsonl, which does not exist" in err
    assert "--model-name: model not found: ./nope" in err

    argv = ["extract", "--model-path", HUB_ID, "--output-dir", str(out), "--categories", "poetry"]
    assert main([*argv, "--holdout-fraction", "2", "--task-file", "none.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "--holdout-fraction must be at least 0 and at most 1, got 2.0" in err
    assert "--task-file names none.jsonl, which does not exist" in err
    assert "--categories: unknown category 'poetry'" in err

    argv = ["validate", "--base", HUB_ID, "--candidate", HUB_ID, "--categories", "arith"]
    assert main([*argv, "--gate", "judge.wins>0.5", "--gate", "math.delta>0"]) == 2
    err = capsys.readouterr().err
    assert "gate 'judge.wins>0.5' reads the judge, but no judge is configured" in err
    assert "gate 'math.delta>0' names category 'math'" in err

    # Completions files bring their own categories: a gate on arith is not refused up front.
    argv = ["validate", "--base-completions", "b.jsonl", "--candidate-completions", "c.jsonl"]
    assert main([*argv, "--gate", "arith.delta>0", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--base-completions names b.jsonl, which does not exist" in err
    assert "names category" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("command", "cls", "argv"),
    [
        ("extract", ExtractOptions, ["--output_dir", "o"]),
        ("validate", ValidateOptions, []),
        ("train", TrainOptions, ["--model_name", "m", "--dataset_path", "d", "--output_dir", "o"]),
    ],
)
def test_cli_defaults_are_the_declared_ones(command: str, cls: type, argv: list[str]) -> None:
    assert from_args(cls, build_parser().parse_args([command, *argv])) == cls()


def test_run_config_defaults_are_the_declared_ones() -> None:
    config = resolve_config({"model": HUB_ID})
    assert {"model", "output_dir", "rounds", "seed"} <= set(config.as_dict())
    for section, cls in SECTIONS.items():
        for f in section_fields(cls):
            if f.name != "categories":  # resolved: math, and validate takes extract's
                assert config.table(section)[f.name] == getattr(cls(), f.name), (section, f.name)
    assert config.extract.categories == config.validate.categories == "math"
    assert config.train.save_steps == TrainOptions().save_steps == 50


@pytest.mark.parametrize(
    ("function", "cls"),
    [(extract, ExtractOptions), (train, TrainOptions), (validate, ValidateOptions)],
)
def test_the_api_declares_no_option_of_its_own(function, cls: type) -> None:
    """The API's defaults are the declared ones: no parameter repeats an option."""
    parameters = set(inspect.signature(function).parameters)
    assert not parameters & {f.name for f in dataclasses.fields(cls)}
    assert "options" in parameters and "overrides" in parameters


def test_api_keywords_are_checked_like_flags(tmp_path: Path) -> None:
    with pytest.raises(FailtuneError, match="--lora-r must be at least 1, got 0"):
        train("m", tmp_path / "x.jsonl", tmp_path / "a", lora_r=0)
    with pytest.raises(TypeError, match="unknown option"):
        train("m", tmp_path / "x.jsonl", tmp_path / "a", lora_rank=8)


def test_every_option_has_help_and_its_default_passes_its_own_checks() -> None:
    for cls in (ExtractOptions, TrainOptions, options.RunValidateOptions, options.RunOptions):
        assert all(f.metadata["help"] for f in dataclasses.fields(cls))
        assert options.check_values(cls, options.defaults(cls, run_only=True), "x") == []
        assert options.value_problems(cls()) == []

"""The learning-rate sweep of `failtune run`: config checks, the choice, and that the test split
is read only after it; on a tiny random model and scripted answers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import ScriptedBackend
from helpers import read_jsonl

from failtune.cli import main
from failtune.config.options import TrainOptions
from failtune.errors import FailtuneError
from failtune.evaluation import records as evaluation
from failtune.model_loading import resolve_model
from failtune.pipeline.config import load_config, parse_override, resolve_config
from failtune.pipeline.engines import Engines
from failtune.pipeline.plan import STATE, lr_name
from failtune.pipeline.runner import run_pipeline
from failtune.pipeline.state import RunState
from failtune.pipeline.sweep import choose
from failtune.reporting.report import write_report
from failtune.tasks.arith import Arith
from failtune.training.sft import train

HUB_ID = "org/some-model"  # resolves as a hub id without a download
RATES = [1e-3, 1e-2]


def sweep_config(tmp_path: Path, model: Path | str, **train: Any) -> Path:
    """20 arith problems per split: extract takes train 0-5, the sweep chooses on train 14-19,
    validation uses test 0-5."""
    rows = "".join(f"{k} = {json.dumps(v)}\n" for k, v in train.items())
    path = tmp_path / "sweep.toml"
    path.write_text(
        f'model = "{model}"\noutput_dir = "{tmp_path / "run"}"\nbackend = "hf"\n'
        "[tasks.arith]\nsize = 20\n"
        '[extract]\ncategories = "arith"\nlimit = 6\nmax_new_tokens = 8\nbatch_size = 4\n'
        f"[train]\nlearning_rate = {RATES}\nselection_size = 6\nnum_train_epochs = 1\n"
        f"batch_size = 4\nsave_steps = 1\n{rows}"
        "[validate]\nlimit = 6\nmax_new_tokens = 8\nbatch_size = 4\n"
    )
    return path


# ---- the config -------------------------------------------------------------------------


def test_a_list_of_rates_is_a_sweep_in_the_file_and_in_set() -> None:
    gsm8k = {"model": HUB_ID, "extract": {"limit": 1000}}  # train problems 1-1000, then 7274+
    config = resolve_config({**gsm8k, "train": {"learning_rate": [1e-4, 3e-4]}})
    assert config.train.learning_rate == [1e-4, 3e-4]
    assert config.train.selection_size == 200
    # YAML reads 1e-4 as a number (PyYAML alone would make it the string "1e-4").
    assert parse_override("train.learning_rate=1e-4") == ("train.learning_rate", 1e-4)
    key, value = parse_override("train.learning_rate=[1e-4,3e-4]")
    assert resolve_config(gsm8k, {key: value}).train.learning_rate == [1e-4, 3e-4]
    assert resolve_config({"model": HUB_ID}).train.learning_rate == 2e-4


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        (["fast", 1e-4], r"\[train\] learning_rate must be a number or a list of numbers"),
        ([1e-4, 0], r"\[train\] learning_rate must be above 0, got 0"),
        ([1e-4], "a sweep needs at least 2 different values"),
        ([1e-4, 1e-4], "a sweep needs at least 2 different values"),
    ],
)
def test_bad_rates_are_one_sentence(rates: list[Any], message: str) -> None:
    with pytest.raises(FailtuneError, match=message):
        resolve_config(
            {"model": HUB_ID, "extract": {"limit": 10}, "train": {"learning_rate": rates}}
        )


def test_train_takes_one_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FailtuneError, match="--learning-rate takes one value here"):
        train("m", tmp_path / "x.jsonl", tmp_path / "a", learning_rate=[1e-4, 2e-4])
    assert TrainOptions().learning_rate == 2e-4


@pytest.mark.parametrize(
    ("extract", "validate", "message"),
    [
        # No limit: extraction takes the whole split, selection problems included.
        (
            "",
            "",
            r"\[extract\] has no limit, which reaches into the learning-rate sweep's "
            r"selection problems \(the last 6 of arith's 20 train problems\): set \[extract\] "
            r"limit to at most 14",
        ),
        ("limit = 15\n", "", r"\[extract\] limit = 15, which reaches into"),
        (
            "limit = 6\n",
            'split = "train"\nlimit = 15\n',
            r"\[validate\] takes the first 15 of arith's 20 train problems, which include",
        ),
    ],
)
def test_selection_overlapping_extract_or_validation_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extract: str, validate: str, message: str
) -> None:
    path = tmp_path / "overlap.toml"
    path.write_text(
        f'model = "{HUB_ID}"\noutput_dir = "{tmp_path / "run"}"\n[tasks.arith]\nsize = 20\n'
        f'[extract]\ncategories = "arith"\n{extract}'
        "[train]\nlearning_rate = [1e-4, 3e-4]\nselection_size = 6\n"
        f"[validate]\n{validate}"
    )
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("failtune: error:") == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_extraction_may_stop_right_before_the_selection_problems() -> None:
    config = {
        "model": HUB_ID,
        "tasks": {"arith": {"size": 20}},
        "extract": {"categories": "arith", "limit": 14},
        "train": {"learning_rate": [1e-4, 3e-4], "selection_size": 6},
    }
    assert resolve_config(config).extract.limit == 14


def test_the_choice_is_the_most_accurate_ties_to_the_smaller_rate() -> None:
    base = [False, False, True, False]
    outcome = choose(
        base,
        {3e-4: [True, True, True, False], 1e-4: [True, False, True, True], 1e-3: [False] * 4},
        {lr: {"final_loss": 1.0, "steps": 2} for lr in (1e-4, 3e-4, 1e-3)},
    )
    assert outcome["chosen"] == 1e-4  # 1e-4 and 3e-4 both 75 %
    rows = {c["learning_rate"]: c for c in outcome["candidates"]}
    assert [c["learning_rate"] for c in outcome["candidates"]] == [1e-4, 3e-4, 1e-3]
    assert rows[3e-4]["accuracy"] == 0.75 and rows[3e-4]["base_accuracy"] == 0.25
    assert rows[3e-4]["delta"] == 0.5 and rows[3e-4]["wins"] == 2 and rows[3e-4]["losses"] == 0
    assert rows[1e-3]["delta"] == -0.25 and rows[1e-3]["losses"] == 1
    assert lr_name(2e-4) == "lr-2e-04" and lr_name(1.5e-4) == "lr-0.00015"


# ---- runs -------------------------------------------------------------------------------


class ReadLog:
    """Which split of which task is read, and when the select step's result is recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        split_problems, load, save = evaluation.split_problems, Arith.load, RunState.save

        def logged_split(task: Any, split: str, *args: Any) -> Any:
            self.events.append((task.name, split))
            return split_problems(task, split, *args)

        def logged_load(task: Arith, split: str) -> Any:
            self.events.append((task.name, split))
            return load(task, split)

        def logged_save(state: RunState) -> None:
            step = state.steps.get("round-1/select", {})
            if step.get("status") == "done" and ("select", "recorded") not in self.events:
                self.events.append(("select", "recorded"))
            save(state)

        monkeypatch.setattr(evaluation, "split_problems", logged_split)
        monkeypatch.setattr(Arith, "load", logged_load)
        monkeypatch.setattr(RunState, "save", logged_save)

    def assert_no_test_read_before_the_choice(self) -> None:
        test_reads = [i for i, (_, split) in enumerate(self.events) if split == "test"]
        chosen = self.events.index(("select", "recorded"))
        assert test_reads, "validation never read the test split"
        assert chosen < test_reads[0], f"test split read before the choice: {self.events}"


def test_a_sweep_chooses_before_reading_the_test_split_and_resumes(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from failtune.training import sft as train_module

    reads = ReadLog(monkeypatch)
    config = resolve_config(load_config(sweep_config(tmp_path, tiny_model_dir)))
    run = tmp_path / "run"
    real_train = train_module.train

    def killed_at_the_second_rate(*args: Any, **kw: Any) -> Any:
        if kw["options"].learning_rate == RATES[1]:
            raise KeyboardInterrupt
        return real_train(*args, **kw)

    monkeypatch.setattr(train_module, "train", killed_at_the_second_rate)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, show_progress=False)
    assert not any(split == "test" for _, split in reads.events)
    first = json.loads((run / STATE).read_text())["steps"]
    assert first["round-1/train-lr-1e-03"]["status"] == "done"
    assert first["round-1/train-lr-1e-02"]["status"] == "running"

    monkeypatch.setattr(train_module, "train", real_train)
    capsys.readouterr()
    run_pipeline(config, show_progress=False)
    log = capsys.readouterr().err
    assert "round-1/train-lr-1e-03: inputs unchanged and outputs present, skipped" in log
    assert "round-1/train-lr-1e-02: resuming" in log
    reads.assert_no_test_read_before_the_choice()

    state = json.loads((run / STATE).read_text())
    steps = state["steps"]
    assert list(steps) == [
        "round-1/extract",
        "round-1/train-lr-1e-03",
        "round-1/train-lr-1e-02",
        "round-1/select",
        "baseline",
        "round-1/validate",
    ]
    assert (
        steps["round-1/train-lr-1e-03"]["finished"] == first["round-1/train-lr-1e-03"]["finished"]
    )
    # The tiny random model answers nothing right: a tie, so the smaller rate is kept.
    select = steps["round-1/select"]
    assert select["chosen"] == 1e-3
    assert [c["learning_rate"] for c in select["candidates"]] == RATES
    assert all(c["accuracy"] == 0.0 and c["n"] == 6 for c in select["candidates"])
    assert all(c["steps"] == 2 and c["final_loss"] > 0 for c in select["candidates"])
    chosen = run / "round-1" / "sweep" / "lr-1e-03" / "adapter_model.safetensors"
    adapter = run / "round-1" / "adapter" / "adapter_model.safetensors"
    assert adapter.read_bytes() == chosen.read_bytes()
    assert not (run / "round-1" / "adapter" / "checkpoints").exists()

    # Selection problems: the last 6 of arith train, disjoint from extraction and validation.
    extracted = {r["id"] for r in read_jsonl(run / "round-1" / "extract" / "results.jsonl")}
    selected = [r["id"] for r in read_jsonl(run / "round-1" / "select" / "base" / "results.jsonl")]
    validated = {r["id"] for r in read_jsonl(run / "baseline" / "results.jsonl")}
    train_ids = [p.id for p in Arith(size=20).load("train")]
    assert sorted(selected) == sorted(train_ids[14:])
    assert extracted == set(train_ids[:6])
    assert not set(selected) & (extracted | validated)
    trained_on = {
        r["instruction"]
        for r in read_jsonl(run / "round-1" / "extract" / "arith_training_ready.jsonl")
    }
    selection_prompts = {
        r["prompt"] for r in read_jsonl(run / "round-1" / "select" / "base" / "results.jsonl")
    }
    assert len(trained_on) == 6 and not trained_on & selection_prompts
    for lr in RATES:
        graded = read_jsonl(run / "round-1" / "select" / lr_name(lr) / "results.jsonl")
        assert sorted(r["id"] for r in graded) == sorted(selected)

    validation = json.loads((run / "round-1" / "validate" / "validation.json").read_text())
    record = validation["learning_rate_sweep"]
    assert record["chosen"] == 1e-3 and record["candidates"] == select["candidates"]
    assert record["selection"]["split"] == "train"
    assert record["selection"]["tasks"] == {
        "arith": {"n": 6, "first": train_ids[14], "last": train_ids[19]}
    }
    write_report(run)
    report = (run / "report" / "report.md").read_text()
    assert "## Learning-rate sweep" in report
    assert "| **0.001 (chosen)** | 0.0% (base 0.0%)" in report and "| 0.01 | 0.0%" in report


def test_the_most_accurate_candidate_is_chosen_and_validated(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scripted answers make each candidate's selection accuracy known: 1e-3 answers every
    selection problem, 1e-4 half, 1e-2 none, the base none."""
    arith = Arith(size=20)
    expected = {p.prompt: p.expected for s in ("train", "test") for p in arith.load(s)}
    selection = [p.prompt for p in arith.load("train")[14:]]
    right_share = {"lr-1e-04": 0.5, "lr-1e-03": 1.0, "lr-1e-02": 0.0}
    base_label = resolve_model(str(tiny_model_dir)).label  # what validation opens as the base

    def answering(share: float, name: str) -> ScriptedBackend:
        right = set(selection[: round(share * len(selection))])

        def answer(prompt: str) -> str:
            good = prompt in right or share == 1.0
            return f"The answer is {expected[prompt]}." if good else "No idea."

        return ScriptedBackend(answer, model=name)

    monkeypatch.setattr(
        Engines, "backend", lambda engines, model, options: answering(0.0, base_label)
    )
    monkeypatch.setattr(
        Engines,
        "candidate",
        lambda engines, adapter, options: answering(
            right_share.get(adapter.name, 1.0), adapter.name
        ),
    )  # round-1/adapter, validated, is the chosen 1e-3's copy
    path = sweep_config(tmp_path, tiny_model_dir, report_to="tensorboard")
    path.write_text(
        path.read_text().replace(f"learning_rate = {RATES}", "learning_rate = [1e-2, 1e-4, 1e-3]")
    )
    result = run_pipeline(resolve_config(load_config(path)), show_progress=False)
    select = result.state["steps"]["round-1/select"]
    scores = {c["learning_rate"]: c["accuracy"] for c in select["candidates"]}
    assert scores == {1e-4: 0.5, 1e-3: 1.0, 1e-2: 0.0}
    assert select["chosen"] == 1e-3
    best = next(c for c in select["candidates"] if c["learning_rate"] == 1e-3)
    assert best["wins"] == 6 and best["delta"] == 1.0 and best["mcnemar_p"] < 0.05
    run = tmp_path / "run"
    chosen = run / "round-1" / "sweep" / "lr-1e-03" / "adapter_model.safetensors"
    assert (run / "round-1" / "adapter" / "adapter_model.safetensors").read_bytes() == (
        chosen.read_bytes()
    )
    validation = json.loads((run / "round-1" / "validate" / "validation.json").read_text())
    assert validation["learning_rate_sweep"]["chosen"] == 1e-3
    assert validation["categories"]["arith"]["candidate_accuracy"] == 1.0

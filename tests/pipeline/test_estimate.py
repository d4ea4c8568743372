"""`failtune run --estimate`: the sample, the schedule it replays, the arithmetic, the CLI."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from failtune.backends import GenParams
from failtune.backends.hf import HFBackend
from failtune.backends.rolling import schedule
from failtune.cli import main
from failtune.evaluation.records import load_problems
from failtune.pipeline import estimate
from failtune.pipeline.config import load_config, resolve_config
from failtune.pipeline.plan import build_plan
from failtune.pipeline.timing import (
    GenSample,
    StepCosts,
    extrapolate,
    fit_costs,
    spread,
    training_plan,
)

ROOT = Path(__file__).resolve().parents[2]


def test_spread_covers_the_split_evenly_and_is_seeded() -> None:
    picked = spread(200, 32, seed=0)
    assert len(picked) == len(set(picked)) == 32
    gaps = {b - a for a, b in itertools.pairwise(picked)}
    assert gaps <= {6, 7} and picked[0] < 7 and picked[-1] >= 193
    assert spread(200, 32, seed=0) == picked and spread(200, 32, seed=1) != picked
    assert spread(20, 32, seed=0) == list(range(20))


def test_schedule_is_the_decoders_own(tiny_model_dir: Path) -> None:
    """The steps `schedule` counts are the model calls the rolling batch really makes."""
    backend = HFBackend.load(str(tiny_model_dir), batch_size=3, device="cpu")
    prompts = [f"Count to {i} " + "and more " * (i % 4) for i in range(11)]
    calls: list[tuple[int, int]] = []
    hook = backend.model.register_forward_pre_hook(
        lambda m, a, kw: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    answers: dict[int, Any] = {}
    for batch in backend.stream(prompts, GenParams(max_new_tokens=9)):
        answers.update(batch)
    hook.remove()
    made = [
        answers[i].completion_tokens + (answers[i].finish_reason == "stop")
        for i in backend.order(prompts)
    ]
    decodes, prefills = backend.schedule(made)
    assert decodes == [rows for rows, width in calls if width == 1]
    assert prefills == [rows for rows, width in calls if width > 1]
    assert sum(prefills) == 11 and sum(decodes) == sum(made) - 11


def test_a_full_batch_costs_fewer_steps_per_answer_than_a_draining_one() -> None:
    decodes, prefills = schedule([10, 2, 10, 2], slots=4)
    assert decodes == [4] + [2] * 8 and prefills == [4]  # two slots idle while two finish
    many, refills = schedule([10, 2] * 20, slots=4)
    assert sum(refills) == 40 and sum(many) == 40 * 5  # every token but the first decoded
    # Refills keep the batch full: 1.3 steps per answer instead of 2.25.
    assert len(many) / 40 < 0.6 * len(decodes) / 4


class _Plain:
    """A backend that answers in the given order, one chunk, like HFBackend's schedule."""

    def __init__(self, slots: int) -> None:
        self.batch_size = slots

    def order(self, prompts: list[str]) -> list[int]:
        return list(range(len(prompts)))

    def schedule(self, generated: list[int]) -> tuple[list[int], list[int]]:
        return schedule(generated, self.batch_size)


def _sample(problems: list, lengths: list[int], costs: StepCosts, slots: int) -> GenSample:
    """A sample whose every model call took exactly what `costs` says."""
    decodes, prefills = schedule(lengths, slots)
    calls = [(rows, 20, rows * costs.per_prefill) for rows in prefills]
    calls += [(rows, 1, costs.fixed + costs.per_row * rows) for rows in decodes]
    records = [{"completion_tokens": n, "finish_reason": "length"} for n in lengths]
    return GenSample(problems, records, costs.seconds(decodes, prefills), calls)


def test_extrapolation_prices_the_full_schedule_with_the_measured_costs() -> None:
    problems = load_problems("arith", "train", 40, {"arith": {"size": 40}})
    costs = StepCosts(fixed=0.05, per_row=0.01, per_prefill=0.002)
    lengths = [3 if i % 2 else 30 for i in range(40)]
    sample = _sample(problems[:4], lengths[:4], costs, slots=4)  # one batch, as the estimate
    fitted = fit_costs(sample.calls)
    assert fitted.fixed == pytest.approx(0.05) and fitted.per_row == pytest.approx(0.01)
    assert fitted.per_prefill == pytest.approx(0.002)
    full = extrapolate(_Plain(4), sample, problems, lengths)
    assert full == pytest.approx(costs.seconds(*schedule(lengths, 4)))
    # Twice the measured time (a slower machine) is twice the estimate.
    sample.seconds *= 2
    assert extrapolate(_Plain(4), sample, problems, lengths) == pytest.approx(2 * full)
    # By problems alone, the draining sample would have over-priced the full split by 46 %.
    assert sample.seconds / 2 * 40 / 4 > full * 1.4


def test_training_steps_follow_the_failure_rate_and_the_trainers_arithmetic() -> None:
    config = resolve_config(load_config(ROOT / "examples" / "demo.toml"))
    problems = load_problems("arith", "train", 64, config.tasks)
    sample_records = [{"correct": i % 8 == 0} for i in range(32)]  # 7 of 8 fail
    sample = GenSample(problems[::2], sample_records, 1.0, [])
    plan = training_plan(config, problems, sample)
    assert plan["failure_rates"] == {"arith": 28 / 32}
    assert plan["examples"] == 56  # the demo's measured count
    assert plan["steps"] == 14  # 56 / 8 per step, 2 epochs: the demo's measured steps
    longer = dataclasses.replace(config.train, gradient_accumulation_steps=3, num_train_epochs=1.5)
    config = dataclasses.replace(config, train=longer)
    assert training_plan(config, problems, sample)["steps"] == math.ceil(1.5 * 3)


def test_cli_estimate_prints_the_table_and_writes_nothing(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = tmp_path / "run"
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'model = "{tiny_model_dir}"\noutput_dir = "{run}"\nbackend = "hf"\n'
        "[tasks.arith]\nsize = 40\n"
        '[extract]\ncategories = "arith"\nlimit = 40\nmax_new_tokens = 6\nbatch_size = 4\n'
        "[train]\nbatch_size = 2\nsave_steps = 2\n"
        "[validate]\nlimit = 40\nmax_new_tokens = 6\nbatch_size = 4\n"
    )
    seen: dict[str, Any] = {}
    real = estimate.estimate_run

    def kept(*a: Any, **kw: Any) -> Any:
        seen["estimate"] = real(*a, **kw)
        return seen["estimate"]

    monkeypatch.setattr(estimate, "estimate_run", kept)
    assert main(["run", str(config), "--estimate", "--gpu-hourly-usd", "3.6"]) == 0
    out = capsys.readouterr().out
    est = seen["estimate"]
    names = ["round-1/extract", "baseline", "round-1/train", "round-1/validate"]
    assert [s.name for s in est.steps] == names
    for name in [*names, "total", "assumptions:", "$3.6 per hour"]:
        assert name in out
    # 3.6 $/h is a thousandth of a dollar per second.
    assert f"${est.total_seconds / 1000:.2f}" in out
    assert "32 of 40 problems" not in out  # the sample's size is stated in the assumptions
    assert "32 problems in" in out
    assert not run.exists()
    assert est.measured["train_per_step"] > 0 and est.measured["load"] > 0


def test_estimate_with_a_broken_config_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('model = "builtin:smollm2"\n[train]\nlearning_rate = "fast"\n')
    assert main(["run", str(config), "--estimate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("failtune: error:") and "learning_rate" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "failtune-run").exists()


def test_a_learning_rate_sweep_trains_per_rate_and_adds_the_choice() -> None:
    sample = GenSample([], [], 1.0, [])
    in_memory = SimpleNamespace(model=object())
    trained = estimate.TrainSample(per_step=2.0, fixed=5.0, steps=2, source="", result=in_memory)
    m = estimate._Measured(10.0, sample, sample, trained, sample, 30.0, 40.0, 20.0, [], 7.0, 3.0)
    training = {"examples": 56, "steps": 14}
    swept = build_plan(Path("run"), "m", 2, [1e-4, 3e-4, 5e-4])
    steps = {
        s.name: s.seconds
        for s in estimate.price_steps(swept, m, training)
        if s.name.startswith("round-1") or s.name == "baseline"
    }
    assert list(steps) == [
        "round-1/extract",
        "round-1/train-lr-1e-04",
        "round-1/train-lr-3e-04",
        "round-1/train-lr-5e-04",
        "round-1/select",
        "baseline",
        "round-1/validate",
    ]
    assert steps["round-1/train-lr-3e-04"] == 5.0 + 14 * 2.0
    assert steps["round-1/select"] == 4 * 10.0 + 7.0 + 3 * 3.0  # loads, base, candidates
    assert steps["round-1/validate"] == 20.0 + 10.0  # the chosen adapter is opened again
    once = build_plan(Path("run"), "m", 2, None)
    single = {s.name: s.seconds for s in estimate.price_steps(once, m, training)[4:]}
    assert list(single) == ["round-2/extract", "round-2/train", "round-2/validate"]
    assert single["round-2/validate"] == 20.0  # last round: the trained model is in memory


def test_grpo_rounds_are_priced_by_grpo_steps() -> None:
    config = resolve_config(load_config(ROOT / "examples" / "demo.toml"))
    problems = load_problems("arith", "train", 64, config.tasks)
    sample = GenSample(problems[::2], [{"correct": i % 8 == 0} for i in range(32)], 1.0, [])
    training = training_plan(config, problems, sample)
    assert training["failures"] == 56 and training["grpo_steps"] == 28  # 2 prompts per step
    capped = dataclasses.replace(config, grpo=dataclasses.replace(config.grpo, max_steps=5))
    assert training_plan(capped, problems, sample)["grpo_steps"] == 5
    empty = GenSample([], [], 1.0, [])
    sft = estimate.TrainSample(2.0, 5.0, 2, "", SimpleNamespace(model=object()))
    grpo = estimate.TrainSample(30.0, 8.0, 2, "", SimpleNamespace(model=object()))
    m = estimate._Measured(10.0, empty, empty, sft, empty, 30.0, 40.0, 20.0, [], grpo=grpo)
    plan = build_plan(Path("run"), "m", 2, None, methods=["sft", "grpo"])
    priced = {s.name: s for s in estimate.price_steps(plan, m, training)}
    assert priced["round-1/train"].seconds == 5.0 + 14 * 2.0
    assert priced["round-2/train"].seconds == 8.0 + 28 * 30.0
    assert priced["round-2/train"].how.startswith("GRPO")


def test_cli_estimate_times_grpo_when_a_round_uses_it(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'model = "{tiny_model_dir}"\noutput_dir = "{tmp_path / "run"}"\nbackend = "hf"\n'
        "[tasks.arith]\nsize = 40\n"
        '[extract]\ncategories = "arith"\nlimit = 40\nmax_new_tokens = 6\nbatch_size = 4\n'
        '[train]\nmethod = "grpo"\nbatch_size = 2\n'
        "[grpo]\nnum_generations = 2\nbatch_size = 1\nmax_completion_length = 6\n"
        "[validate]\nlimit = 40\nmax_new_tokens = 6\nbatch_size = 4\n"
    )
    assert main(["run", str(config), "--estimate"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"round-1/train .* GRPO: at most \d+ failures as prompts", out)
    assert re.search(r"GRPO: 2 optimizer steps timed on .* s per step", out)
    assert not (tmp_path / "run").exists()

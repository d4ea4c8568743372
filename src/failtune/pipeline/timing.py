"""Timing a sample of a run's steps on this machine, and extrapolating it to the whole step.

- generation: the sample's decoding steps are timed one by one and fitted as
  `fixed + per_row × rows` per step (plus a cost per prefilled prompt); the full split's steps
  are counted with the rolling batch's own schedule (backends.rolling.schedule), because a small
  sample drains its batch where a long split keeps it full: scaling by problems or tokens
  alone over-prices large splits (measured on the demo: see the README);
- training: a few optimizer steps on real training rows, priced per step; the number of
  examples comes from the sample's failure rate, the steps from the trainer's own arithmetic;
  GRPO likewise, a few of its steps (generation included) on the sample's failures as prompts.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failtune.config.options import GenerationOptions, TrainOptions
from failtune.config.run import RunConfig
from failtune.evaluation.records import evaluate
from failtune.evaluation.training_data import REPLAY_SUFFIX, TRAINING_SUFFIX, write_training_files
from failtune.files import atomic_write_jsonl, read_jsonl
from failtune.pipeline.plan import candidates
from failtune.rewards.datasets import write_prompt_dataset
from failtune.tasks import Problem, Task
from failtune.training import grpo, sft
from failtune.training.mixing import mix_examples

TRAIN_STEPS = 2  # optimizer steps timed (the demo checkpoints every 2: its rate is kept)

Pairs = list[tuple[Task, Problem]]


@dataclass
class GenSample:
    """One generation step run on a sample: its records, wall time and timed model calls."""

    problems: Pairs
    records: list[dict[str, Any]]
    seconds: float
    calls: list[tuple[int, int, float]]  # (rows, input width, seconds until the next call)


@dataclass
class StepCosts:
    """Seconds of one decoding step (`fixed + per_row × rows`) and of one prefilled prompt."""

    fixed: float
    per_row: float
    per_prefill: float

    def seconds(self, decodes: Sequence[int], prefills: Sequence[int]) -> float:
        return (
            len(decodes) * self.fixed
            + self.per_row * sum(decodes)
            + self.per_prefill * sum(prefills)
        )


def spread(n_total: int, n: int, seed: int) -> list[int]:
    """`n` indices evenly spaced over `n_total`, from a seeded offset: the sample covers the
    whole task (early and late problems differ in length in most benchmarks)."""
    if n >= n_total:
        return list(range(n_total))
    gap = n_total / n
    offset = random.Random(seed).random() * gap
    return [int(offset + i * gap) for i in range(n)]


def fit_costs(calls: Sequence[tuple[int, int, float]]) -> StepCosts:
    """Least squares over the timed decoding steps; prefills priced per prompt.

    A fit a noisy machine bends below zero falls back to seconds proportional to rows.
    """
    decodes = [(rows, s) for rows, width, s in calls if width == 1]
    prefill_rows = sum(rows for rows, width, _ in calls if width > 1)
    per_prefill = sum(s for _, width, s in calls if width > 1) / max(1, prefill_rows)
    if not decodes:
        return StepCosts(0.0, 0.0, per_prefill)
    n = len(decodes)
    mean_r = sum(r for r, _ in decodes) / n
    mean_s = sum(s for _, s in decodes) / n
    var = sum((r - mean_r) ** 2 for r, _ in decodes)
    slope = sum((r - mean_r) * (s - mean_s) for r, s in decodes) / var if var else 0.0
    fixed = mean_s - slope * mean_r
    if slope < 0 or fixed < 0:
        return StepCosts(0.0, mean_s / mean_r, per_prefill)
    return StepCosts(fixed, slope, per_prefill)


def generated_tokens(record: Mapping[str, Any]) -> int:
    """Tokens the decoder made for a record: the kept ones, plus the end-of-turn one dropped."""
    return max(1, (record["completion_tokens"] or 0) + (record["finish_reason"] == "stop"))


def full_lengths(problems: Pairs, sample: GenSample) -> list[int]:
    """Each problem's answer length, taken from the sample problem nearest it in its task."""
    per_task: dict[str, list[int]] = {}
    for (task, _), record in zip(sample.problems, sample.records, strict=True):
        per_task.setdefault(task.name, []).append(generated_tokens(record))
    every = [n for lengths in per_task.values() for n in lengths]
    counts: dict[str, int] = {}
    for task, _ in problems:
        counts[task.name] = counts.get(task.name, 0) + 1
    seen: dict[str, int] = {}
    lengths = []
    for task, _ in problems:
        k = seen.get(task.name, 0)
        seen[task.name] = k + 1
        own = per_task.get(task.name, every)
        lengths.append(own[k * len(own) // counts[task.name]])
    return lengths


def decode_schedule(
    backend: Any, problems: Pairs, lengths: Sequence[int]
) -> tuple[list[int], list[int]]:
    """The decoding and prefill steps `evaluate` runs: task by task, in the backend's order."""
    groups: dict[str, list[int]] = {}
    for i, (task, _) in enumerate(problems):
        groups.setdefault(task.name, []).append(i)
    decodes: list[int] = []
    prefills: list[int] = []
    for members in groups.values():
        order = backend.order([problems[i][1].prompt for i in members])
        d, p = backend.schedule([lengths[members[j]] for j in order])
        decodes += d
        prefills += p
    return decodes, prefills


def extrapolate(backend: Any, sample: GenSample, problems: Pairs, lengths: Sequence[int]) -> float:
    """Seconds to generate `lengths` tokens for `problems`, from the timed sample.

    The fitted step costs price both the sample's own schedule and the full one; their ratio
    scales the sample's measured wall time, so grading and other per-step work come along.
    Backends without a step schedule (vLLM, a server) scale by generated tokens instead.
    """
    own = [generated_tokens(r) for r in sample.records]
    if not hasattr(backend, "schedule") or not sample.calls:
        return sample.seconds * sum(lengths) / max(1, sum(own))
    costs = fit_costs(sample.calls)
    priced = costs.seconds(*decode_schedule(backend, sample.problems, own))
    if priced <= 0:
        return sample.seconds * len(problems) / len(sample.problems)
    return sample.seconds * costs.seconds(*decode_schedule(backend, problems, lengths)) / priced


def timed_evaluate(
    backend: Any,
    problems: Pairs,
    out_dir: Path,
    section: GenerationOptions,
    label: str,
) -> GenSample:
    """`evaluate` as the step runs it, each model call timed (to the next call, so the stop
    checks and grading between calls count too)."""
    marks: list[tuple[float, int, int]] = []

    def mark(module: Any, args: Any, kwargs: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        marks.append((time.perf_counter(), *ids.shape[:2]))

    model = getattr(backend, "model", None)
    hook = model.register_forward_pre_hook(mark, with_kwargs=True) if model is not None else None
    t0 = time.perf_counter()
    try:
        records = evaluate(
            problems,
            out_dir,
            backend=backend,
            max_new_tokens=section.max_new_tokens,
            stop=tuple(section.stop),
            resume=False,
            show_progress=False,
            label=label,
        )
    finally:
        if hook is not None:
            hook.remove()
    end = time.perf_counter()
    ends = [t for t, _, _ in marks[1:]] + [end] * bool(marks)  # vLLM: no model calls seen
    calls = [(rows, width, e - t) for (t, rows, width), e in zip(marks, ends, strict=True)]
    return GenSample(problems, records, end - t0, calls)


@dataclass
class TrainSample:
    per_step: float  # seconds per optimizer step (checkpoints saved meanwhile included)
    fixed: float  # seconds outside the steps: model load, data preparation, saving
    steps: int
    source: str
    result: Any = field(repr=False)


def training_rows(sample: GenSample, folder: Path, need: int) -> tuple[Path, str]:
    """`need` training rows as the extract step writes them: the sample's failures first, then
    the reference solutions of problems it solved; repeated when the sample holds fewer."""
    write_training_files(sample.problems, sample.records, folder)
    failed = [r for p in sorted(folder.glob(f"*{TRAINING_SUFFIX}")) for r in read_jsonl(p)]
    solved = [r for p in sorted(folder.glob(f"*{REPLAY_SUFFIX}")) for r in read_jsonl(p)]
    rows = (failed + solved)[:need]
    used_failed = min(len(failed), need)
    source = f"{used_failed} failures of the extract sample"
    if len(rows) > used_failed:
        source += f" and {len(rows) - used_failed} reference solutions of problems it solved"
    while len(rows) < need:
        rows += rows[: need - len(rows)]
        source += ", repeated"
    path = folder / "estimate_train.jsonl"
    atomic_write_jsonl(path, rows)
    return path, source


def train_options(config: RunConfig) -> TrainOptions:
    """The train step's options, with one learning rate (a sweep's smallest)."""
    rates = candidates(config.train.learning_rate)
    rate = rates[0] if rates else config.train.learning_rate
    return dataclasses.replace(config.train, learning_rate=rate, method="sft")


def time_training(config: RunConfig, sample: GenSample, folder: Path) -> TrainSample:
    """`train` itself for TRAIN_STEPS optimizer steps, with the run's options (batch, gradient
    accumulation, padding-free, LoRA, checkpoints) except epochs (one) and replay (none)."""
    opts = train_options(config)
    need = TRAIN_STEPS * opts.batch_size * opts.gradient_accumulation_steps
    path, source = training_rows(sample, folder, need)
    timed = dataclasses.replace(opts, num_train_epochs=1.0, replay=None, report_to="none")
    result = sft.train(
        config.run.model, path, folder / "adapter", options=timed, show_progress=False
    )
    runtime, steps = result.metrics["train_runtime"], result.metrics["steps"]
    return TrainSample(runtime / steps, result.seconds - runtime, steps, source, result)


def time_grpo(config: RunConfig, sample: GenSample, folder: Path) -> TrainSample:
    """GRPO itself for TRAIN_STEPS optimizer steps with the run's [grpo] options, on the
    sample's failures as prompts (then problems it solved, when it failed fewer)."""
    o = config.grpo
    graded = list(zip(sample.problems, sample.records, strict=True))
    failed = [p for p, r in graded if not r["correct"]]
    solved = [p for p, r in graded if r["correct"]]
    prompts = (failed + solved)[: TRAIN_STEPS * o.batch_size]
    source = f"{min(len(failed), len(prompts))} failures of the extract sample as prompts"
    path = write_prompt_dataset(prompts, folder / "estimate_prompts.jsonl")
    timed = dataclasses.replace(o, max_steps=TRAIN_STEPS, report_to="none", num_processes=1)
    result = grpo.train_grpo(
        config.run.model,
        path,
        folder / "grpo",
        timed,
        task_options=config.tasks,
        show_progress=False,
    )
    runtime, steps = result.metrics["train_runtime"], result.metrics["steps"]
    return TrainSample(runtime / steps, result.seconds - runtime, steps, source, result)


def grpo_steps(config: RunConfig, failures: int) -> int:
    """GRPO's optimizer steps on `failures` prompts (an upper bound: with samples, it trains
    only on the failures within reach)."""
    o = config.grpo
    return o.max_steps or math.ceil(o.num_train_epochs * failures / o.batch_size)


def training_plan(config: RunConfig, problems: Pairs, sample: GenSample) -> dict:
    """Examples and optimizer steps of the real train step: each category's failure rate in the
    sample times its extract problems, mixed and replayed as `train` mixes them."""
    opts = train_options(config)
    failed: dict[str, list[bool]] = {}
    for (task, _), record in zip(sample.problems, sample.records, strict=True):
        failed.setdefault(task.category, []).append(not record["correct"])
    totals: dict[str, int] = {}
    for task, _ in problems:
        totals[task.category] = totals.get(task.category, 0) + 1
    per_file: dict[Path, list[dict[str, str]]] = {
        Path(f"{c}{TRAINING_SUFFIX}"): [{}] * round(sum(f) / len(f) * totals[c])
        for c, f in failed.items()
    }
    replay = next(iter(sft.read_training_files(opts.replay).values())) if opts.replay else None
    examples = len(mix_examples(per_file, opts.mix, replay, opts.replay_ratio, opts.seed)[0])
    batches = math.ceil(examples / opts.batch_size)
    accum = opts.gradient_accumulation_steps
    per_epoch = max(batches // accum + int(batches % accum > 0), 1)
    rates = {c: sum(f) / len(f) for c, f in failed.items()}
    failures = sum(round(rates[c] * totals[c]) for c in rates)
    return {
        "failure_rates": rates,
        "failures": failures,
        "grpo_steps": grpo_steps(config, failures),
        "examples": examples,
        "steps": math.ceil(opts.num_train_epochs * per_epoch) if examples else 0,
        "options": opts,
    }


def solution_lengths(tokenizer: Any, problems: Pairs, section: GenerationOptions) -> list[int]:
    """The trained model's assumed answer lengths: its training outputs' (the reference
    solutions'), plus the end-of-turn token, within the token cap."""
    lengths = []
    for task, problem in problems:
        cap = section.max_new_tokens or task.default_max_new_tokens
        n = len(tokenizer(problem.solution, add_special_tokens=False).input_ids) + 1
        lengths.append(min(cap, n))
    return lengths

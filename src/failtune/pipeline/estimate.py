"""`failtune run CONFIG --estimate`: time a sample of every step here, price the whole run.

Before renting a machine for hours, a user wants the budget table: time (and cost) per step.
The estimate runs the run's own step code (the same model loading, backend, batch sizes, token
caps and training options) on a small sample, then extrapolates:

- generation: the sample's decoding steps are timed one by one and fitted as
  `fixed + per_row × rows` per step (plus a cost per prefilled prompt); the full split's steps
  are counted with the rolling batch's own schedule (backends.rolling.schedule), because a small
  sample drains its batch where a long split keeps it full: scaling by problems or tokens
  alone over-prices large splits (measured on the demo: see the README);
- training: a few optimizer steps on real training rows, priced per step; the number of
  examples comes from the sample's failure rate, the steps from the trainer's own arithmetic.

Nothing is written into the run folder (the sample works in a temporary folder that is
deleted): the estimate is printed, so it can never be mistaken for, or disturb, a run's state.
"""

from __future__ import annotations

import dataclasses
import math
import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failtune.config.options import GenerationOptions, TrainOptions
from failtune.config.run import RunConfig
from failtune.console import note
from failtune.evaluation.extraction import REPLAY_SUFFIX, TRAINING_SUFFIX, write_training_files
from failtune.evaluation.records import evaluate, load_problems
from failtune.files import atomic_write_jsonl, read_jsonl
from failtune.pipeline import sweep
from failtune.pipeline.engines import open_backend
from failtune.pipeline.plan import Plan, Step, candidates
from failtune.pipeline.runner import run_plan
from failtune.tasks import Problem, Task
from failtune.training import sft
from failtune.training.mixing import mix_examples

SAMPLE = 32  # problems per generation step at least; more when a batch holds more
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


@dataclass
class StepEstimate:
    name: str
    seconds: float
    how: str


@dataclass
class Estimate:
    steps: list[StepEstimate]
    assumptions: list[str]
    gpu_hourly_usd: float | None
    own_seconds: float = 0.0
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    def usd(self, seconds: float) -> float | None:
        return None if self.gpu_hourly_usd is None else seconds / 3600 * self.gpu_hourly_usd


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


def plan(backend: Any, problems: Pairs, lengths: Sequence[int]) -> tuple[list[int], list[int]]:
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
    priced = costs.seconds(*plan(backend, sample.problems, own))
    if priced <= 0:
        return sample.seconds * len(problems) / len(sample.problems)
    return sample.seconds * costs.seconds(*plan(backend, problems, lengths)) / priced


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
    return dataclasses.replace(config.train, learning_rate=rates[0]) if rates else config.train


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
    return {
        "failure_rates": rates,
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


def _sample(
    backend: Any, problems: Pairs, section: GenerationOptions, seed: int, out: Path, label: str
) -> GenSample:
    n = min(len(problems), max(SAMPLE, section.batch_size))
    note(f"estimate: {label}: timing {n} of {len(problems)} problems")
    chosen = [problems[i] for i in spread(len(problems), n, seed)]
    return timed_evaluate(backend, chosen, out, section, label)


@dataclass
class _Measured:
    """Everything the estimate measured on this machine, before extrapolating."""

    load: float
    extract: GenSample
    baseline: GenSample
    train: TrainSample
    candidate: GenSample
    extract_seconds: float
    baseline_seconds: float
    validate_seconds: float
    candidate_lengths: list[int]
    # A learning-rate sweep's select step: the base, then each candidate (without its load).
    select_base: float = 0.0
    select_candidate: float = 0.0


def measure(config: RunConfig, extract_all: Pairs, held_out: Pairs, tmp: Path) -> _Measured:
    """Run every step's own code on samples: the base model generates (extract, baseline),
    trains a few steps, and the trained model in memory answers the held-out sample."""
    from failtune.backends.hf import HFBackend
    from failtune.backends.vllm import close_engine

    ex, val, seed = config.extract, config.validate, config.run.seed
    t0 = time.perf_counter()
    backend = open_backend(config.run.model, ex)
    load = time.perf_counter() - t0
    ex_sample = _sample(backend, extract_all, ex, seed, tmp / "extract", "extract")
    extract_s = extrapolate(backend, ex_sample, extract_all, full_lengths(extract_all, ex_sample))
    if isinstance(backend, HFBackend):  # vLLM sizes its own batches
        backend.batch_size = val.batch_size
    base_sample = _sample(backend, held_out, val, seed, tmp / "baseline", "baseline")
    baseline_s = extrapolate(backend, base_sample, held_out, full_lengths(held_out, base_sample))
    sweeping = candidates(config.train.learning_rate) is not None
    select = sweep.selection_problems(config) if sweeping else []
    select_base = extrapolate(backend, ex_sample, select, full_lengths(select, ex_sample))
    del backend  # as the run does: generation weights are freed before training
    close_engine()
    note(f"estimate: train: timing {TRAIN_STEPS} optimizer steps")
    trained = time_training(config, ex_sample, tmp / "train")
    # As the run's validation: the trained model in memory, or (trained by launched processes)
    # the adapter opened from disk.
    if trained.result.model is not None:
        candidate = HFBackend(
            trained.result.model, trained.result.tokenizer, batch_size=val.batch_size
        )
    else:
        candidate = HFBackend.load(str(trained.result.output_dir), batch_size=val.batch_size)
    # Half the baseline sample: only the trained model's step costs are wanted here (its answer
    # lengths are assumed), and the estimate has to stay short.
    half = base_sample.problems[::2]
    note(f"estimate: validate: timing {len(half)} problems on the trained model")
    cand_sample = timed_evaluate(candidate, half, tmp / "candidate", val, "validate")
    candidate_lengths = solution_lengths(candidate.tokenizer, held_out, val)
    validate_s = extrapolate(candidate, cand_sample, held_out, candidate_lengths)
    return _Measured(
        load,
        ex_sample,
        base_sample,
        trained,
        cand_sample,
        extract_s,
        baseline_s,
        validate_s,
        candidate_lengths,
        select_base,
        extrapolate(
            candidate, cand_sample, select, solution_lengths(candidate.tokenizer, select, val)
        ),
    )


def estimate_run(config: RunConfig, *, gpu_hourly_usd: float | None = None) -> Estimate:
    """Time a sample of each step of `config` on this machine and price every step of its plan.

    Writes nothing outside a temporary folder, which is deleted.
    """
    t0 = time.perf_counter()
    ex, val = config.extract, config.validate
    extract_all = load_problems(ex.categories, ex.split, ex.limit, config.tasks)
    held_out = load_problems(val.categories, val.split, val.limit, config.tasks)
    with tempfile.TemporaryDirectory(prefix="failtune-estimate-") as tmp:
        m = measure(config, extract_all, held_out, Path(tmp))
    training = training_plan(config, extract_all, m.extract)
    est = Estimate(price_steps(run_plan(config), m, training), [], gpu_hourly_usd)
    est.assumptions = assumptions(config, m, training, est)
    est.measured = {"load": m.load, "train_per_step": m.train.per_step, **training}
    est.own_seconds = time.perf_counter() - t0
    return est


# ---- the price of each kind of step (failtune.pipeline.plan.KINDS), from what was measured ----


def _price_extract(
    step: Step, m: _Measured, training: Mapping[str, Any], plan: Plan
) -> StepEstimate:
    return StepEstimate(step.name, m.load + m.extract_seconds, _gen_how(m.extract))


def _price_baseline(
    step: Step, m: _Measured, training: Mapping[str, Any], plan: Plan
) -> StepEstimate:
    return StepEstimate(step.name, m.baseline_seconds, _gen_how(m.baseline))


def _price_train(step: Step, m: _Measured, training: Mapping[str, Any], plan: Plan) -> StepEstimate:
    how = f"{training['examples']} examples, {training['steps']} optimizer steps"
    return StepEstimate(step.name, m.train.fixed + training["steps"] * m.train.per_step, how)


def _price_select(
    step: Step, m: _Measured, training: Mapping[str, Any], plan: Plan
) -> StepEstimate:
    """The round's model and each candidate answer the selection problems, each loaded."""
    n = len(step.inputs)
    seconds = (n + 1) * m.load + m.select_base + n * m.select_candidate
    return StepEstimate(step.name, seconds, f"base + {n} candidates")


def _price_validate(
    step: Step, m: _Measured, training: Mapping[str, Any], plan: Plan
) -> StepEstimate:
    """The candidate side only; only a single, unmerged training in this process leaves the
    candidate in memory, every other candidate is loaded."""
    made_by = plan.adapter_step(step.round or 1)
    in_memory = made_by.kind == "train" and not made_by.merge and m.train.result.model is not None
    reload = 0.0 if in_memory else m.load
    return StepEstimate(step.name, m.validate_seconds + reload, "candidate side only")


def price_steps(plan: Plan, m: _Measured, training: Mapping[str, Any]) -> list[StepEstimate]:
    """Every step of the plan, priced by its kind from what was measured."""
    return [PRICES[step.kind](step, m, training, plan) for step in plan.steps]


Price = Callable[[Step, _Measured, Mapping[str, Any], Plan], StepEstimate]
PRICES: dict[str, Price] = {
    "extract": _price_extract,
    "baseline": _price_baseline,
    "train": _price_train,
    "select": _price_select,
    "validate": _price_validate,
}


def _gen_how(sample: GenSample) -> str:
    return f"{len(sample.problems)} problems timed"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _rate(sample: GenSample) -> str:
    tokens = sum(generated_tokens(r) for r in sample.records)
    costs = fit_costs(sample.calls)
    step = (
        f"; a decoding step took {costs.fixed * 1000:.0f} ms + {costs.per_row * 1000:.1f} ms per "
        "row"
        if sample.calls
        else ""
    )
    return (
        f"{len(sample.problems)} problems in {sample.seconds:.1f} s, "
        f"{tokens / sample.seconds:.0f} generated tokens/s, "
        f"{_mean([generated_tokens(r) for r in sample.records]):.0f} tokens per answer{step}"
    )


def assumptions(
    config: RunConfig, m: _Measured, training: Mapping[str, Any], est: Estimate
) -> list[str]:
    """What every figure rests on, in the order of the table."""
    opts = training["options"]
    rates = ", ".join(f"{c} {r:.0%}" for c, r in training["failure_rates"].items())
    base_len = _mean([generated_tokens(r) for r in m.baseline.records])
    price = est.gpu_hourly_usd
    rolling = bool(m.extract.calls)  # transformers' steps were timed; vLLM's are its own
    how = (
        "replays the rolling batch's schedule for the whole split with the step costs fitted "
        "on the sample"
        if rolling
        else "scales the sample's time (the run's engine) by generated tokens"
    )
    candidate = "" if rolling else " (timed with transformers; the run serves it with vLLM)"
    return [
        f"Samples are evenly spaced over each split (seed {config.run.seed}); extrapolation "
        f"{how}, answer lengths taken from the nearest sample problem.",
        f"Model load: {m.load:.1f} s, counted once per process that loads it (extract; the "
        "train step loads again, inside its timed fixed part).",
        f"Extract sample: {_rate(m.extract)}.",
        f"Baseline sample: {_rate(m.baseline)}.",
        f"Failure rate from the extract sample: {rates} → {training['examples']} training "
        f"examples (one per failure, mix {opts.mix}"
        + (f", replay {opts.replay_ratio:g}" if opts.replay else "")
        + f") → {training['steps']} optimizer steps ({opts.num_train_epochs:g} epochs, batch "
        f"{opts.batch_size} × {opts.gradient_accumulation_steps} accumulated, padding-free "
        f"{'on' if opts.padding_free else 'off'}).",
        f"Training: {m.train.steps} optimizer steps timed on {m.train.source}: "
        f"{m.train.per_step:.1f} s per step (checkpoints every {opts.save_steps} steps "
        f"included as far as the sample reached one), {m.train.fixed:.1f} s outside the steps "
        "(load, data preparation, saving).",
        f"Validate generates only the candidate side (the base side is the baseline, copied): "
        f"the trained model in memory{candidate} answered the held-out sample at "
        f"{_rate(m.candidate)}; its "
        f"answers are assumed as long as the reference solutions it is trained on "
        f"({_mean(m.candidate_lengths):.0f} tokens, against {base_len:.0f} for the base).",
        f"Rounds: {config.run.rounds}, each priced like the first; the run stops early when a "
        "round fails its gates or gains nothing significant, and later rounds fail less, so "
        "later rounds are an upper bound.",
        "Not measured: merging between rounds, validation statistics and the report (seconds), "
        "downloading the model (assumed cached), other load on this machine.",
        "Cost: "
        + (
            f"${price:g} per hour (--gpu-hourly-usd) × the estimated hours."
            if price is not None
            else "give --gpu-hourly-usd to price the hours."
        ),
    ]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_estimate(est: Estimate) -> str:
    """The budget table, then the assumptions it rests on."""
    priced = est.gpu_hourly_usd is not None
    width = max(len(s.name) for s in [*est.steps, StepEstimate("total", 0, "")])
    lines = [f"{'step':<{width}}  {'time':>9}" + ("  {:>9}".format("cost") if priced else "")]
    rows = [(s.name, s.seconds, s.how) for s in est.steps]
    rows.append(("total", est.total_seconds, ""))
    for name, seconds, how in rows:
        usd = est.usd(seconds)
        cost = f"  {'$' + format(usd, '.2f'):>9}" if usd is not None else ""
        lines.append(f"{name:<{width}}  {_duration(seconds):>9}{cost}  {how}".rstrip())
    lines.append("")
    lines.append("assumptions:")
    lines += [f"- {a}" for a in est.assumptions]
    lines.append(f"(this estimate took {est.own_seconds:.0f} s)")
    return "\n".join(lines)

"""`failtune run CONFIG --estimate`: time a sample of every step here, price the whole run.

Before renting a machine for hours, a user wants the budget table: time (and cost) per step.
The estimate runs the run's own step code (the same model loading, backend, batch sizes, token
caps and training options) on a small sample, then extrapolates (failtune.pipeline.timing) and
prices every step of the run's plan by its kind (PRICES).

Nothing is written into the run folder (the sample works in a temporary folder that is
deleted): the estimate is printed, so it can never be mistaken for, or disturb, a run's state.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failtune.config.options import GenerationOptions
from failtune.config.run import RunConfig
from failtune.console import note
from failtune.evaluation.records import load_problems
from failtune.pipeline import sweep
from failtune.pipeline.engines import open_backend
from failtune.pipeline.plan import Plan, Step, candidates
from failtune.pipeline.runner import run_plan
from failtune.pipeline.timing import (
    TRAIN_STEPS,
    GenSample,
    Pairs,
    TrainSample,
    extrapolate,
    fit_costs,
    full_lengths,
    generated_tokens,
    solution_lengths,
    spread,
    time_grpo,
    time_training,
    timed_evaluate,
    training_plan,
)

SAMPLE = 32  # problems per generation step at least; more when a batch holds more


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
    extract_samples: int = 0  # [extract] samples per problem besides the greedy answer
    rationalizes: bool = False  # [extract] targets ask for rationales
    validate_samples: int = 0  # [validate] samples per problem, of each side
    grpo: TrainSample | None = None  # GRPO's steps, when a round trains with it


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
    grpo_timed = None
    if any(s.method == "grpo" for s in run_plan(config).steps):
        note(f"estimate: GRPO: timing {TRAIN_STEPS} optimizer steps")
        grpo_timed = time_grpo(config, ex_sample, tmp / "grpo")
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
        ex.samples or 0,
        ex.targets in ("rationalized", "auto"),
        val.samples or 0,
        grpo_timed,
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
    """Greedy answers as timed; K samples per problem priced as K more greedy passes (they
    decode as many tokens, if sampled answers are about as long)."""
    k = m.extract_samples
    how = _gen_how(m.extract) + (f", + {k} samples per problem as {k} passes" if k else "")
    return StepEstimate(step.name, m.load + m.extract_seconds * (1 + k), how)


def _price_targets(
    step: Step, m: _Measured, training: Mapping[str, Any], plan: Plan
) -> StepEstimate:
    """Rationales: at most one greedy answer per failure (the share timed in extract's sample)."""
    if not m.rationalizes:
        return StepEstimate(step.name, 0.0, "from the extract's records, no generation")
    failing = 1 - _mean([float(r["correct"]) for r in m.extract.records])
    return StepEstimate(
        step.name, m.extract_seconds * failing, f"a rationale per failure ({failing:.0%})"
    )


def _price_baseline(
    step: Step, m: _Measured, training: Mapping[str, Any], plan: Plan
) -> StepEstimate:
    k = m.validate_samples
    how = _gen_how(m.baseline) + (f", + {k} samples per problem as {k} passes" if k else "")
    return StepEstimate(step.name, m.baseline_seconds * (1 + k), how)


def _price_train(step: Step, m: _Measured, training: Mapping[str, Any], plan: Plan) -> StepEstimate:
    if step.method == "grpo" and m.grpo is not None:
        steps = training["grpo_steps"]
        how = f"GRPO: at most {training['failures']} failures as prompts, {steps} optimizer steps"
        return StepEstimate(step.name, m.grpo.fixed + steps * m.grpo.per_step, how)
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
    k = m.validate_samples
    how = "candidate side only" + (f", + {k} samples per problem as {k} passes" if k else "")
    return StepEstimate(step.name, m.validate_seconds * (1 + k) + reload, how)


def price_steps(plan: Plan, m: _Measured, training: Mapping[str, Any]) -> list[StepEstimate]:
    """Every step of the plan, priced by its kind from what was measured."""
    return [PRICES[step.kind](step, m, training, plan) for step in plan.steps]


Price = Callable[[Step, _Measured, Mapping[str, Any], Plan], StepEstimate]
PRICES: dict[str, Price] = {
    "extract": _price_extract,
    "targets": _price_targets,
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
        *_grpo_assumption(config, m, training),
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


def _grpo_assumption(config: RunConfig, m: _Measured, training: Mapping[str, Any]) -> list[str]:
    if m.grpo is None:
        return []
    o = config.grpo
    return [
        f"GRPO: {m.grpo.steps} optimizer steps timed on {m.grpo.source} ({o.batch_size} "
        f"prompts × {o.num_generations} answers per step, generation and grading included): "
        f"{m.grpo.per_step:.1f} s per step, {m.grpo.fixed:.1f} s outside the steps; "
        f"{training['grpo_steps']} steps priced "
        + (
            f"(max_steps {o.max_steps})."
            if o.max_steps
            else f"for every failure as a prompt ({o.num_train_epochs:g} epochs): an upper "
            "bound, since with samples GRPO trains only on the failures within reach."
        )
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

"""The work of each kind of `failtune run` step, and what its input hash reads.

The plan (failtune.pipeline.plan) says which steps a run has; the runner hashes each step's
inputs with INPUTS[kind], skips it when nothing changed, and otherwise calls WORK[kind]. Each
work function gets its step and the run's context (the typed config, the plan, the engines,
the records of finished steps) and returns what the run state records about it, including the
engine that generated (`engine`), which is in no step's input hash.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failtune.config.options import ExtractOptions, defaults
from failtune.config.run import RunConfig
from failtune.console import note
from failtune.evaluation.extraction import extract
from failtune.evaluation.records import RESULTS, RESULTS_SOURCE, evaluate, load_problems, sample
from failtune.evaluation.training_data import TRAINING_SUFFIX, retarget
from failtune.files import atomic_write_json, sha256_file
from failtune.pipeline import sweep
from failtune.pipeline.cost import token_counts
from failtune.pipeline.engines import Engines
from failtune.pipeline.plan import BASELINE, Plan, Step, adapter_folder
from failtune.tasks import Problem, Task
from failtune.training import grpo, sft
from failtune.training.tracking import without_trackers
from failtune.validation.forgetting import training_info
from failtune.validation.paired import validate

ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass
class Context:
    """What a step may use: not the run's state file, only the records of finished steps."""

    config: RunConfig
    plan: Plan
    engines: Engines
    done: Mapping[str, Mapping[str, Any]]
    show_progress: bool

    def problems(self, section: str) -> list[tuple[Task, Problem]]:
        """The problems of [extract] or [validate]."""
        o = getattr(self.config, section)
        return load_problems(o.categories, o.split, o.limit, self.config.tasks)


def _file_hashes(paths: list[Path]) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(paths)}


# Keys added after run folders existed: hashed only when set, so those folders are not redone.
_LATER_KEYS = {
    name: default
    for name, default in defaults(ExtractOptions).items()
    if name in ("samples", "temperature", "top_p", "top_k", "sample_seed", "targets", "per_problem")
} | {"method": "sft"}
# What the targets step reads of [extract]; the extract step's hash leaves them out, so a change
# of targets redoes only the targets step, keeping the samples.
_TARGET_KEYS = ("targets", "per_problem")


def _hashed(section: Mapping[str, Any], leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """A table as its hash reads it: later keys only when not at their defaults."""
    return {
        k: v
        for k, v in section.items()
        if k not in leave_out and not (k in _LATER_KEYS and v == _LATER_KEYS[k])
    }


def _generation_keys(section: Mapping[str, Any]) -> dict[str, Any]:
    """The keys that change what a model generates (gates do not)."""
    keys = ("categories", "split", "limit", "batch_size", "max_new_tokens", "stop")
    sampling = ("samples", "temperature", "top_p", "top_k", "sample_seed")
    return {k: section[k] for k in keys} | _hashed({k: section[k] for k in sampling})


# ---- input hashes: what each kind reads (unchanged, so existing run folders are not redone) ----


def extract_inputs(step: Step, ctx: Context) -> dict[str, Any]:
    problems = ctx.problems("extract")
    data_files = sorted({f for t, p in problems for f in t.data_files(p.split)})
    upstream = ctx.done[step.inputs[0]]["hash"] if step.inputs else None
    return {
        "section": _hashed(ctx.config.table("extract"), _TARGET_KEYS),
        "tasks": ctx.config.tasks,
        "model": step.model,
        "upstream": upstream,
        "data": _file_hashes(data_files),
    }


def targets_inputs(step: Step, ctx: Context) -> dict[str, Any]:
    ex = ctx.config.table("extract")
    return {
        "targets": {k: ex[k] for k in _TARGET_KEYS},
        "generation": {k: ex[k] for k in ("max_new_tokens", "stop")},  # of the rationales
        "model": step.model,
        "extract": ctx.done[step.inputs[0]]["hash"],
    }


def baseline_inputs(step: Step, ctx: Context) -> dict[str, Any]:
    section = _generation_keys(ctx.config.table("validate"))
    return {"section": section, "tasks": ctx.config.tasks, "model": step.model}


def train_inputs(step: Step, ctx: Context) -> dict[str, Any]:
    # selection_size is the select step's input, not training's: a run that trains once hashes
    # what it always did.
    section = {k: v for k, v in ctx.config.table("train").items() if k != "selection_size"}
    section["method"] = step.method  # this round's, of a method per round
    if step.learning_rate is not None:
        section["learning_rate"] = step.learning_rate
    grpo = step.method == "grpo"
    section = _hashed(section) | (
        {"grpo": without_trackers(ctx.config.table("grpo"))} if grpo else {}
    )
    extracted = ctx.plan.path(ctx.plan[step.inputs[0]])
    if grpo:  # its prompts are the extract's failures within reach
        return {
            "section": without_trackers(section),
            "model": step.model,
            "seed": ctx.config.run.seed,
            "data": _file_hashes([extracted / RESULTS]),
        }
    return {
        "section": without_trackers(section),
        "model": step.model,
        "seed": ctx.config.run.seed,
        "merge": step.merge,
        "data": _file_hashes(sorted(extracted.glob(f"*{TRAINING_SUFFIX}"))),
    }


def select_inputs(step: Step, ctx: Context) -> dict[str, Any]:
    ex, val = ctx.config.table("extract"), ctx.config.table("validate")
    trained = [ctx.plan[name] for name in step.inputs]
    return {
        "extract": {k: ex[k] for k in ("categories", "split")},
        "selection_size": ctx.config.train.selection_size,
        "generation": {k: val[k] for k in ("batch_size", "max_new_tokens", "stop")},
        "tasks": ctx.config.tasks,
        "model": step.model,
        "candidates": {
            str(t.learning_rate): sha256_file(ctx.plan.path(t) / ADAPTER_WEIGHTS) for t in trained
        },
    }


def validate_inputs(step: Step, ctx: Context) -> dict[str, Any]:
    adapter = ctx.plan.path(adapter_folder(step.round or 1))
    return {
        "section": _hashed(ctx.config.table("validate")),
        "tasks": ctx.config.tasks,
        "base": sha256_file(ctx.plan.path(BASELINE) / RESULTS),
        "adapter": sha256_file(adapter / ADAPTER_WEIGHTS),
    }


# ---- the work ------------------------------------------------------------------------------


def extract_work(step: Step, ctx: Context) -> dict[str, Any]:
    ex = ctx.config.extract
    backend = ctx.engines.backend(step.model, ex)
    retargeted = bool(ctx.plan.in_round(step.round or 1, "targets"))
    result = extract(
        step.model,
        ctx.plan.path(step),
        # a targets step makes the training files: extract keeps the reference ones
        options=dataclasses.replace(ex, targets="reference") if retargeted else ex,
        model=backend,
        task_options=ctx.config.tasks,
        show_progress=ctx.show_progress,
    )
    return {
        "summary": result.summary,
        "failures": sum(s["n"] - s["correct"] for s in result.summary.values()),
        **token_counts(step.model, result.records),
        "engine": backend.info.record(),
    }


def targets_work(step: Step, ctx: Context) -> dict[str, Any]:
    """The round's training files under [extract] targets, from its extract's records; the
    model is asked only for rationales (rationalized, auto)."""
    ex = ctx.config.extract
    asks = ex.targets in ("rationalized", "auto")
    found = retarget(
        ctx.plan.path(ctx.plan[step.inputs[0]]),
        ctx.plan.path(step),
        ex,
        ctx.engines.backend(step.model, ex) if asks else None,
        ctx.config.tasks,
        show_progress=ctx.show_progress,
    )
    return {"targets": found.counts(), "reach": found.reach_summary()}


def baseline_work(step: Step, ctx: Context) -> dict[str, Any]:
    """The base model graded once on the held-out problems; every round compares with it."""
    val = ctx.config.validate
    backend = ctx.engines.backend(step.model, val)
    problems = ctx.problems("validate")
    records = _graded(ctx, backend, problems, ctx.plan.path(step), "base", sampled=True)
    return {
        "accuracy": sum(r["correct"] for r in records) / len(records),
        "engine": backend.info.record(),
    }


def _graded(
    ctx: Context,
    backend: Any,
    problems: list[tuple[Task, Problem]],
    out: Path,
    label: str,
    *,
    sampled: bool = False,
) -> list[dict[str, Any]]:
    """Answers with [validate]'s generation settings (baseline and the select step's); with
    `sampled`, [validate]'s samples too."""
    val = ctx.config.validate
    generation = {"max_new_tokens": val.max_new_tokens, "stop": tuple(val.stop)}
    records = evaluate(
        problems, out, backend=backend, show_progress=ctx.show_progress, label=label, **generation
    )
    sampling = val.sampling()
    if sampling and sampled:  # the baseline's samples, which validation pairs with
        sample(
            problems,
            out,
            backend,
            sampling,
            show_progress=ctx.show_progress,
            label="base samples",
            **generation,
        )
    return records


def train_work(step: Step, ctx: Context) -> dict[str, Any]:
    """Train on the round's failures; merged into a plain model when another round follows."""
    if step.method == "grpo":
        return _grpo_work(step, ctx)
    rate = step.learning_rate if step.learning_rate is not None else ctx.config.train.learning_rate
    options = dataclasses.replace(
        ctx.config.train, merge=step.merge, learning_rate=rate, method=step.method
    )
    adapter = ctx.plan.path(step)
    # Weights opened for generation are not needed again in this round: free them for training.
    ctx.engines.release(f"training {step.folder}")
    extracted = ctx.plan.path(ctx.plan[step.inputs[0]]).resolve()
    result = sft.train(
        step.model,
        extracted / f"*{TRAINING_SUFFIX}",
        adapter,
        options=options,
        show_progress=ctx.show_progress,  # its bar joins the run's live view
    )
    # Trained in this process (not in launched ones) and not a sweep's candidate, whose model
    # stays unloaded (the choice and validation open adapters anew): kept for validation.
    if result.model is not None and step.learning_rate is None:
        ctx.engines.trained[adapter] = result
    # HF's train_loss averages only the steps run by the last process; the log history is kept
    # in checkpoints, so the last logged loss is the same whether or not training was resumed.
    losses = [h["loss"] for h in result.metrics.get("log_history", []) if "loss" in h]
    return {
        "examples": result.examples,
        "steps": result.metrics.get("steps"),
        "last_logged_loss": losses[-1] if losses else None,
    }


def _grpo_work(step: Step, ctx: Context) -> dict[str, Any]:
    """GRPO on the extract's failures within reach (all of them without samples); merged into a
    plain model when another round follows."""
    ctx.engines.release(f"training {step.folder}")
    adapter = ctx.plan.path(step)
    prompts = grpo.prompt_dataset_for(
        ctx.plan.path(ctx.plan[step.inputs[0]]), adapter, ctx.config.tasks
    )
    result = grpo.train_grpo(
        step.model,
        prompts,
        adapter,
        options=ctx.config.grpo,
        task_options=ctx.config.tasks,
        show_progress=ctx.show_progress,
        merge=step.merge,
    )
    rewards = [h["reward"] for h in result.metrics.get("log_history", []) if "reward" in h]
    return {
        "method": "grpo",
        "prompts": result.prompts,
        "steps": result.metrics.get("steps"),
        "last_mean_reward": rewards[-1] if rewards else None,
    }


def select_work(step: Step, ctx: Context) -> dict[str, Any]:
    """The round's model and each candidate answer the selection problems; the most accurate
    candidate is copied to the round's adapter, where validation and the next round find it."""
    problems = sweep.selection_problems(ctx.config)
    out, val = ctx.plan.path(step), ctx.config.validate
    opened = ctx.engines.backend(step.model, val)
    base = [r["correct"] for r in _graded(ctx, opened, problems, out / "base", "select: base")]
    trained = {ctx.plan[n].learning_rate: ctx.plan[n] for n in step.inputs}
    scores = {}
    for lr, t in trained.items():
        folder = ctx.plan.path(t)
        backend = ctx.engines.candidate(folder, val)
        records = _graded(ctx, backend, problems, out / folder.name, f"select: {folder.name}")
        scores[lr] = [r["correct"] for r in records]
    training = {
        lr: {
            "final_loss": ctx.done[t.name].get("last_logged_loss"),
            "steps": ctx.done[t.name].get("steps"),
        }
        for lr, t in trained.items()
    }
    outcome = {
        "selection": sweep.describe(problems, ctx.config.extract.split),
        **sweep.choose(base, scores, training),
    }
    adapter = ctx.plan.path(adapter_folder(step.round or 1))
    shutil.rmtree(adapter, ignore_errors=True)
    ignore = shutil.ignore_patterns("checkpoints")  # optimizer states: not part of the adapter
    shutil.copytree(ctx.plan.path(trained[outcome["chosen"]]), adapter, ignore=ignore)
    atomic_write_json(out / sweep.SELECTION, outcome)
    note(
        f"round {step.round}: learning rate {outcome['chosen']:g} chosen on the selection problems"
    )
    return outcome


def validate_work(step: Step, ctx: Context) -> dict[str, Any]:
    """The round's adapter against the baseline's answers, knowing what the adapter was trained
    on: its categories are marked trained (the others are forgetting checks), and its training
    files are checked for overlap with the held-out prompts (an exact match is refused)."""
    vdir, baseline = ctx.plan.path(step), ctx.plan.path(BASELINE)
    base_copy = vdir / "base"
    base_copy.mkdir(parents=True, exist_ok=True)
    for name in (RESULTS, RESULTS_SOURCE):
        shutil.copyfile(baseline / name, base_copy / name)
    options = dataclasses.replace(ctx.config.validate, output_dir=str(vdir))
    adapter = ctx.plan.path(adapter_folder(step.round or 1))
    trained = training_info(adapter)
    opened = ctx.engines.candidate(adapter, options)  # opened only now: the adapter exists
    result = validate(
        # Its answers are the baseline's; a server knows the model by the name it serves.
        ctx.engines.backend(step.model, options) if options.backend == "openai" else step.model,
        opened,
        options=options,
        task_options=ctx.config.tasks,
        training=trained,
        show_progress=ctx.show_progress,
    )
    return {"passed": result.passed, "engine": opened.info.record()}


Work = Callable[[Step, Context], dict[str, Any]]
INPUTS: dict[str, Work] = {
    "extract": extract_inputs,
    "targets": targets_inputs,
    "baseline": baseline_inputs,
    "train": train_inputs,
    "select": select_inputs,
    "validate": validate_inputs,
}
WORK: dict[str, Work] = {
    "extract": extract_work,
    "targets": targets_work,
    "baseline": baseline_work,
    "train": train_work,
    "select": select_work,
    "validate": validate_work,
}

"""`failtune run CONFIG`: the plan's steps, in order, resumable, in rounds.

Each step records a hash of its inputs (its config table, the sha256 of its input files, the
model) in run_state.json. A rerun skips a step whose hash is unchanged and whose outputs exist,
resumes one that was interrupted (the steps themselves resume: graded ids, training
checkpoints), and redoes one whose inputs changed. Round r > 1 extracts on the previous round's
model and trains again; the run stops early when a gate fails or the gain over the previous
round is not significant. The steps are declared in `plan`, their work in `steps`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failtune.config.run import RunConfig
from failtune.console import live_view, note
from failtune.evaluation.records import RESULTS
from failtune.files import output_folder
from failtune.manifest import now
from failtune.pipeline.engines import Engines, served_base
from failtune.pipeline.plan import STATE, Plan, Step, recorded_plan
from failtune.pipeline.rounds import record_round
from failtune.pipeline.state import RunState, input_hash
from failtune.pipeline.steps import INPUTS, WORK, Context
from failtune.validation.paired import VALIDATION


@dataclass
class RunResult:
    output_dir: Path
    state: dict[str, Any]
    final_validation: Path | None
    seconds: dict[str, float] = field(default_factory=dict)
    plan: Plan | None = None

    @property
    def passed(self) -> bool:
        rounds = self.state.get("rounds", [])
        return bool(rounds) and rounds[-1]["gates_passed"]


def run_plan(config: RunConfig) -> Plan:
    """The plan of a run config, in its output folder."""
    return recorded_plan(output_folder(config.run.output_dir), config.as_dict())


def run_pipeline(config: RunConfig, *, show_progress: bool = True) -> RunResult:
    """Run (or resume) every round of `config`; returns the state written to run_state.json."""
    served = served_base(config.validate, config.run.served_model, config.train.lora_r)
    plan = run_plan(config)
    plan.dir.mkdir(parents=True, exist_ok=True)
    state = RunState(plan.dir / STATE, config.as_dict())
    ctx = Context(config, plan, Engines(served), state.steps, show_progress)
    try:
        with live_view(show_progress) as view:
            progress = view.add_task("run", total=len(plan.steps), info="")
            final = _run_steps(ctx, state, view, progress)
    finally:
        ctx.engines.release()
    state.data["finished"] = now()
    state.save()
    seconds = {name: rec.get("seconds", 0.0) for name, rec in state.steps.items()}
    return RunResult(plan.dir, state.data, final, seconds, plan)


def _run_steps(ctx: Context, state: RunState, view: Any, progress: Any) -> Path | None:
    """The plan's steps until a round ends the run; the last round's validation.json."""
    previous: Path | None = None  # the previous round's candidate results (None: the base)
    final: Path | None = None
    for step in ctx.plan.steps:
        if step.round is not None:
            view.update(progress, description=f"run · round {step.round}/{ctx.config.run.rounds}")
        run_step(step, ctx, state)
        view.advance(progress)
        if step.kind != "validate":
            continue
        final = ctx.plan.path(step) / VALIDATION
        go_on = record_round(ctx.config, ctx.plan, state.data, step, previous)
        state.save()
        if not go_on:
            break
        previous = ctx.plan.path(step) / "candidate" / RESULTS
    return final


def run_step(step: Step, ctx: Context, state: RunState) -> Mapping[str, Any]:
    """Do one step unless its recorded input hash matches and its outputs exist."""
    digest = input_hash(**INPUTS[step.kind](step, ctx))
    owned = [ctx.plan.path(p) for p in step.owns]
    if state.is_done(step.name, digest, [ctx.plan.path(p) for p in step.outputs]):
        note(f"{step.name}: inputs unchanged and outputs present, skipped")
        return state.steps[step.name]
    changed = state.changed(step.name, digest)
    if changed:
        note(f"{step.name}: inputs changed since the last run, starting this step over")
        for folder in owned:
            shutil.rmtree(folder, ignore_errors=True)
    elif changed is False:
        note(f"{step.name}: resuming")
    if not ctx.show_progress:  # logs still show where a long run is
        note(f"{step.name}: started")
    with state.attempt(step.name, digest, owned):
        t0 = time.perf_counter()
        info = WORK[step.kind](step, ctx)
        seconds = time.perf_counter() - t0
    if ctx.engines.closed:  # what vLLM gave back before training, by the step it was closed for
        state.data.setdefault("engine_closed", {}).update(ctx.engines.closed)
        ctx.engines.closed.clear()
    record = state.finish(step.name, info, seconds)
    if not ctx.show_progress:
        note(f"{step.name}: done in {record['seconds']:.0f} s")
    return record

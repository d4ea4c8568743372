"""After a round's validation: record its outcome, decide whether another round starts, and add
the round's validation and cost to the tracking run its training wrote to."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from failtune.config.run import RunConfig
from failtune.console import note
from failtune.evaluation.records import RESULTS, greedy_records
from failtune.files import atomic_write_json, read_json, read_jsonl
from failtune.pipeline import sweep
from failtune.pipeline.cost import summarize_cost
from failtune.pipeline.plan import BASELINE, Plan, Step, adapter_folder
from failtune.training.sft import tensorboard_dir
from failtune.training.tracking import log_summary, parse_report_to, summary_metrics
from failtune.validation.paired import VALIDATION
from failtune.validation.stats import compare


def record_round(
    config: RunConfig, plan: Plan, state: dict[str, Any], step: Step, previous: Path | None
) -> bool:
    """Record round `step.round`'s outcome in the run state; whether the next round starts.
    `previous` holds the previous round's candidate results (None: the base's)."""
    r, vdir = step.round or 1, plan.path(step)
    last = r == config.run.rounds
    if plan.in_round(r, "select"):
        _record_sweep(vdir / VALIDATION, plan.path(plan.in_round(r, "select")[0]))
    outcome = read_json(vdir / VALIDATION)
    track_round(config, plan, state["steps"], r, outcome)
    base = plan.path(BASELINE) / RESULTS
    decision = _decide(vdir / "candidate" / RESULTS, previous or base, config.validate.min_gain_p)
    gates_passed = all(g["passed"] for g in outcome["gates"])
    go_on = gates_passed and decision["significant"] and not last
    if last and gates_passed:
        reason = "last round"
    elif not gates_passed:
        reason = "a gate failed"
    elif not decision["significant"]:
        reason = "the gain over the previous round is not significant"
    else:
        reason = "continuing"
    state["rounds"].append(
        {
            "round": r,
            "validation": str((vdir / VALIDATION).relative_to(plan.dir)),
            "gates_passed": gates_passed,
            "vs_previous": decision,
            "next": "continue" if go_on else f"stop: {reason}",
        }
    )
    if not go_on and not last:
        note(f"round {r}: stopping early, {reason}")
    return go_on


def _record_sweep(validation: Path, select_dir: Path) -> None:
    """validation.json says which learning rate was chosen, how, and among which."""
    body = read_json(validation)
    record = read_json(select_dir / sweep.SELECTION)
    if body.get("learning_rate_sweep") != record:
        atomic_write_json(validation, {**body, "learning_rate_sweep": record})


def _decide(candidate: Path, previous: Path, min_gain_p: float) -> dict[str, Any]:
    """Is this round's candidate significantly better than the previous round's model?"""
    cand = {r["id"]: r["correct"] for r in greedy_records(read_jsonl(candidate))}
    prev = {r["id"]: r["correct"] for r in greedy_records(read_jsonl(previous))}
    ids = [i for i in cand if i in prev]
    table = compare([prev[i] for i in ids], [cand[i] for i in ids], n_boot=1000)
    significant = table["delta"] > 0 and table["mcnemar_p"] < min_gain_p
    return {
        "delta": table["delta"],
        "mcnemar_p": table["mcnemar_p"],
        "min_gain_p": min_gain_p,
        "significant": significant,
    }


def track_round(
    config: RunConfig,
    plan: Plan,
    steps: Mapping[str, Mapping[str, Any]],
    r: int,
    validation: Mapping[str, Any],
) -> None:
    """A round's validation table, gates and cost so far, into the tracking run its training
    wrote to (at the training's last step)."""
    trackers = parse_report_to(config.train.report_to)
    if not trackers:
        return
    cost = summarize_cost(
        steps,
        plan.kind_of,
        gpu_hourly_usd=config.cost.gpu_hourly_usd,
        api_usd_per_mtok=config.cost.api_usd_per_mtok,
    )
    figures: dict[str, float | None] = {f"{step}_seconds": sec for step, sec, _ in cost.rows}
    figures |= {
        "total_seconds": cost.total_seconds,
        "machine_usd": cost.machine_usd,
        "api_usd": cost.api_usd,
    }
    made_by = plan.adapter_step(r)
    record = steps[made_by.name]
    if made_by.kind == "select":  # the chosen candidate's training
        record = next(c for c in record["candidates"] if c["learning_rate"] == record["chosen"])
    log_dir = tensorboard_dir(plan.path(adapter_folder(r)))
    log_summary(trackers, log_dir, summary_metrics(validation, figures), record["steps"])

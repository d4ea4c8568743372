"""The report's sections on training: the learning-rate sweep, the rounds and their decisions,
and the curves logged per optimizer step (SFT's loss; GRPO's reward and how many groups of
answers carried a gradient)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from failtune.files import read_json
from failtune.model_loading import TRAIN_META
from failtune.pipeline.plan import Plan, adapter_folder
from failtune.reporting import plots
from failtune.reporting.document import Document, fmt


def sweep_section(doc: Document, record: dict[str, Any]) -> None:
    """Every learning rate tried, on problems neither training nor validation used."""
    selection = record["selection"]
    where = ", ".join(
        f"{name} {t['n']} (`{t['first']}` … `{t['last']}`)"
        for name, t in selection["tasks"].items()
    )
    doc.heading("Learning-rate sweep")
    doc.para(
        f"Chosen: learning rate {record['chosen']:g}, the most accurate candidate on the "
        f"selection problems ({where}: {selection['how']}). The held-out problems above were "
        "graded only after the choice."
    )
    doc.table(
        ["learning rate", "selection acc", "Δ vs base [95% CI]", "McNemar p", "last loss", "steps"],
        [
            [
                f"**{c['learning_rate']:g} (chosen)**"
                if c["learning_rate"] == record["chosen"]
                else f"{c['learning_rate']:g}",
                f"{c['accuracy']:.1%} (base {c['base_accuracy']:.1%})",
                f"{c['delta']:+.1%} [{c['delta_ci95'][0]:+.1%}, {c['delta_ci95'][1]:+.1%}]",
                f"{c['mcnemar_p']:.2g}",
                fmt(c["final_loss"]),
                fmt(c["steps"]),
            ]
            for c in record["candidates"]
        ],
    )


def rounds_section(doc: Document, plan: Plan, state: dict[str, Any]) -> None:
    doc.heading("Rounds")
    doc.table(
        ["round", "method", "gates", "Δ vs previous round", "McNemar p", "decision"],
        [
            [
                str(r["round"]),
                plan.adapter_step(r["round"]).method,
                "passed" if r["gates_passed"] else "failed",
                f"{r['vs_previous']['delta']:+.1%}",
                f"{r['vs_previous']['mcnemar_p']:.2g}",
                r["next"],
            ]
            for r in state["rounds"]
        ],
    )
    # The last round of each method draws its curve: SFT's loss, GRPO's reward.
    histories = {
        plan.adapter_step(r["round"]).method: (f"round {r['round']}", _history(plan, r["round"]))
        for r in state["rounds"]
    }
    _curves(doc, histories)


def candidate_section(doc: Document, adapter: Path) -> None:
    """A validated adapter's own training curve, when failtune trained it (its metrics.json)."""
    record = _read_json(adapter / TRAIN_META)
    history = _read_json(adapter / "metrics.json").get("log_history", [])
    if record and history:
        method = record.get("method", "sft")
        doc.heading("The candidate's training")
        doc.para(f"`{adapter}`, trained by {method.upper()}.")
        _curves(doc, {method: ("the candidate", history)})


def _curves(doc: Document, histories: dict[str, tuple[str, list[dict[str, Any]]]]) -> None:
    """SFT's loss curve and GRPO's reward curve, each from its (label, log history)."""
    label, history = histories.get("sft", ("", []))
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    if losses:
        doc.image("loss.png", f"training loss, {label}", plots.step_curve(losses))
    label, history = histories.get("grpo", ("", []))
    rewards = [(h["step"], h["reward"]) for h in history if "reward" in h]
    if rewards:  # GRPO: the reward curve, and how often a group carried no gradient
        curve = plots.step_curve(rewards, "mean reward")
        doc.image("reward.png", f"GRPO mean reward per step, {label}", curve)
        flat = [h["frac_reward_zero_std"] for h in history if "frac_reward_zero_std" in h]
        if flat:
            doc.para(
                f"Groups whose answers all earned the same reward (no gradient): "
                f"{sum(flat) / len(flat):.0%} of groups on average over {len(flat)} steps."
            )


def _history(plan: Plan, r: int) -> list[dict[str, Any]]:
    return _read_json(plan.path(adapter_folder(r)) / "metrics.json").get("log_history", [])


def _read_json(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}

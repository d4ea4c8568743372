"""Experiment trackers: training metrics go through TRL/transformers' own integrations, and a
run's validation table, gates and cost join the same tracking run as summary metrics
(failtune.pipeline.rounds sends them).

Summary metrics are written for TensorBoard (scalars in the training's log folder, at the last
training step). wandb, mlflow and trackio receive the training metrics only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from failtune.console import warn
from failtune.errors import FailtuneError

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")
SUMMARY_TRACKERS = ("tensorboard",)


def parse_report_to(spec: str | Sequence[str] | None) -> list[str]:
    """The trackers named ("tensorboard,wandb"; "none" is none), each known and installed."""
    from transformers.integrations import integration_utils

    names = spec.split(",") if isinstance(spec, str) else list(spec or [])
    names = [n.strip() for n in names if n.strip() and n.strip() != "none"]
    for name in names:
        if name not in TRACKERS:
            raise FailtuneError(
                f"unknown tracker {name!r} in report_to (choose from: {', '.join(TRACKERS)}, none)"
            )
        if not getattr(integration_utils, f"is_{name}_available")():
            raise FailtuneError(f"report_to {name} needs the {name} package: pip install {name}")
    return list(dict.fromkeys(names))


# [train] keys that do not shape the adapter: trackers only watch, and the processes only
# share the work (the batch is global, so N processes train the same run as one).
NOT_SHAPING = ("report_to", "num_processes", "accelerate_config")


def without_trackers(train_section: Mapping[str, Any]) -> dict[str, Any]:
    """The training options that shape the adapter: changing the others must not retrain."""
    return {k: v for k, v in train_section.items() if k not in NOT_SHAPING}


def summary_metrics(
    validation: Mapping[str, Any], cost: Mapping[str, float | None]
) -> dict[str, float]:
    """Flat numeric metrics: validation/<category>/<stat>, gates/<expr>, cost/<item>."""
    metrics: dict[str, float] = {}
    for category, table in validation["categories"].items():
        for key, value in table.items():
            if isinstance(value, bool | int | float) and math.isfinite(value):
                metrics[f"validation/{category}/{key}"] = float(value)
    for gate in validation["gates"]:
        metrics[f"gates/{gate['expr']}"] = float(gate["passed"])
    metrics["gates/all_passed"] = float(all(g["passed"] for g in validation["gates"]))
    for key, value in cost.items():
        if value is not None:
            metrics[f"cost/{key}"] = float(value)
    return metrics


def log_summary(
    trackers: Sequence[str], log_dir: Path, metrics: Mapping[str, float], step: int
) -> None:
    """Add `metrics` to the tracking run the training wrote to."""
    if "tensorboard" in trackers:
        try:  # the writers transformers' TensorBoard callback uses, in its order
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from tensorboardX import SummaryWriter

        with SummaryWriter(log_dir=str(log_dir)) as writer:
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, global_step=step)
    others = [t for t in trackers if t not in SUMMARY_TRACKERS]
    if others:
        warn(
            f"the validation summary is written to TensorBoard only; {', '.join(others)} "
            "hold(s) the training metrics"
        )

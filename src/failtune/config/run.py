"""A `failtune run` config once checked: its top-level keys and each step's complete options
(built by failtune.pipeline.config, read by every step)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from failtune.config.options import (
    SECTIONS,
    CostOptions,
    ExtractOptions,
    GRPOOptions,
    RunOptions,
    RunValidateOptions,
    TrainOptions,
    section_fields,
)


@dataclass(frozen=True)
class RunConfig:
    """A checked run config, built once: its top-level keys and each step's complete options
    (the step's table, the run's seed and the run's engine)."""

    run: RunOptions
    tasks: dict[str, dict[str, Any]]
    extract: ExtractOptions
    train: TrainOptions  # learning_rate may be a list: a sweep (failtune.pipeline.sweep)
    validate: RunValidateOptions
    cost: CostOptions
    grpo: GRPOOptions  # the train steps' settings when [train] method = "grpo"

    def table(self, name: str) -> dict[str, Any]:
        """A step's table as the config file writes it: what its input hash reads."""
        section = getattr(self, name)
        return {f.name: getattr(section, f.name) for f in section_fields(type(section))}

    def as_dict(self) -> dict[str, Any]:
        """The whole config as a file would hold it (recorded in run_state.json)."""
        top = {f.name: getattr(self.run, f.name) for f in section_fields(RunOptions)}
        tables = {name: self.table(name) for name in SECTIONS}
        return {**top, "tasks": copy.deepcopy(self.tasks), **tables}

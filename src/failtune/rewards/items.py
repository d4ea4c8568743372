"""What a reward grades: one completion by problem id, shared by the grader and its pool."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """One completion to reward. `ground_truth` and `task`, when the engine passes them (dataset
    columns), are checked against the problem's own: a stale dataset must not train silently."""

    id: str
    completion: str
    finish_reason: str | None = None
    ground_truth: str | None = None
    task: str | None = None

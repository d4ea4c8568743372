"""A learning-rate sweep in `failtune run`: which problems choose, and how the choice is made.

`[train] learning_rate = [5e-5, 2e-4, 5e-4]` trains one adapter per value. They are compared on
selection problems that neither training nor the final validation sees: the last
`[train] selection_size` problems of each extracted task's split (`[extract] split`, in the
task's own order; for tasks without a train split, of the part not held out), while extraction
takes the first `[extract] limit`. The config check refuses a run whose extract slice reaches
into them, so the selection set is never shrunk silently. The test split is not read for the
choice, nor by the check: validation problems of another split (or of another task) are disjoint
from the selection problems by construction, and on the same split both are position slices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from failtune.config.run import RunConfig
from failtune.evaluation.records import by_task, load_problems
from failtune.tasks import Problem, Task, parse_categories, tasks_for
from failtune.validation.stats import compare

SELECTION = "selection.json"  # in round-N/select: the choice and every candidate's scores
HOW_CUT = (
    "the last selection_size problems of each extracted task's split, in the task's own order "
    "(tasks without a train split: of the part not held out); extraction takes the first "
    "[extract] limit, which must stop before them"
)


def selection_problems(config: RunConfig) -> list[tuple[Task, Problem]]:
    """The last `selection_size` problems of each task the run extracts from."""
    size = config.train.selection_size
    return [(task, p) for task, problems in _extract_split(config) for p in problems[-size:]]


def describe(problems: Sequence[tuple[Task, Problem]], split: str) -> dict[str, Any]:
    """What validation.json and the run state record about the selection problems."""
    per_task: dict[str, list[str]] = {}
    for task, problem in problems:
        per_task.setdefault(task.name, []).append(problem.id)
    return {
        "split": split,
        "how": HOW_CUT,
        "tasks": {
            name: {"n": len(ids), "first": ids[0], "last": ids[-1]}
            for name, ids in per_task.items()
        },
    }


def config_problems(config: RunConfig) -> list[str]:
    """A sweep's own problems: distinct values, and selection problems nobody else uses."""
    rates = config.train.learning_rate
    if not isinstance(rates, list):
        return []
    if len(rates) < 2 or len(set(rates)) != len(rates):
        return [
            f"[train] learning_rate: a sweep needs at least 2 different values, got {rates!r} "
            "(give one number to train once)"
        ]
    ex, val, size = config.extract, config.validate, config.train.selection_size
    validated = {t.name for c in parse_categories(val.categories) for t in tasks_for(c)}
    found = []
    for task, n in _split_sizes(config).items():
        taken = n if ex.limit is None else min(ex.limit, n)
        what = "has no limit" if ex.limit is None else f"limit = {ex.limit}"
        if n == 0:
            continue
        if taken + min(size, n) > n:
            found.append(
                f"[extract] {what}, which reaches into the learning-rate sweep's selection "
                f"problems (the last {size} of {task}'s {n} {ex.split} problems): set "
                f"[extract] limit to at most {max(n - size, 0)} or lower [train] selection_size"
            )
        elif task in validated and val.split == ex.split:
            tested = n if val.limit is None else min(val.limit, n)
            if tested + min(size, n) > n:
                found.append(
                    f"[validate] takes the first {tested} of {task}'s {n} {val.split} "
                    f"problems, which include the learning-rate sweep's selection problems "
                    f"(the last {size}): lower [validate] limit or [train] selection_size"
                )
    return found


def _split_sizes(config: RunConfig) -> dict[str, int]:
    """Problems per extracted task in the extract split (the split is read, never the test)."""
    return {task.name: len(problems) for task, problems in _extract_split(config)}


def _extract_split(config: RunConfig) -> list[tuple[Task, list[Problem]]]:
    """Every problem of the extract split (no limit), per task."""
    ex = config.extract
    return by_task(load_problems(ex.categories, ex.split, None, config.tasks))


def choose(
    base: Sequence[bool], graded: Mapping[float, Sequence[bool]], trained: Mapping[float, Any]
) -> dict[str, Any]:
    """Each candidate paired with the base on the same selection problems; the most accurate is
    chosen, a tie going to the smaller learning rate (the gentler change to the model)."""
    rows = []
    for lr in sorted(graded):
        table = compare(base, graded[lr], n_boot=1000)
        rows.append(
            {
                "learning_rate": lr,
                "n": table["n"],
                "accuracy": table["candidate_accuracy"],
                "base_accuracy": table["base_accuracy"],
                "delta": table["delta"],
                "delta_ci95": table["delta_ci95"],
                "wins": table["wins"],
                "losses": table["losses"],
                "mcnemar_p": table["mcnemar_p"],
                **trained[lr],
            }
        )
    best = max(rows, key=lambda row: (row["accuracy"], -row["learning_rate"]))
    return {"candidates": rows, "chosen": best["learning_rate"]}

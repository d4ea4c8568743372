"""Benchmarks by name, and the seed plan's categories that group them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from failtune.errors import FailtuneError
from failtune.tasks.arith import Arith
from failtune.tasks.base import Problem, Task
from failtune.tasks.competition_math import HendrycksMath, Math500
from failtune.tasks.custom import CustomTask
from failtune.tasks.gsm8k import GSM8K
from failtune.tasks.humaneval import HumanEval
from failtune.tasks.mbpp import MBPP
from failtune.tasks.mmlu import MMLU

TASKS: dict[str, type[Task]] = {
    "gsm8k": GSM8K,
    "arith": Arith,
    "humaneval": HumanEval,
    "mbpp": MBPP,
    "mmlu": MMLU,
    "hendrycks_math": HendrycksMath,
    "math500": Math500,
    "custom": CustomTask,
}
CATEGORIES: dict[str, tuple[str, ...]] = {
    "math": ("gsm8k",),
    "arith": ("arith",),
    "code": ("humaneval", "mbpp"),
    "creativity": ("mmlu",),
    "knowledge": ("mmlu",),  # the seed plan's other name for MMLU
    "competition_math": ("hendrycks_math",),  # MATH; `math` stays GSM8K, as in the seed plan
    "math500": ("math500",),
    "custom": ("custom",),  # the user's --task-file
}
# Other names of a category; tables and records use the name it maps to.
CATEGORY_ALIASES = {"knowledge": "creativity"}


def parse_categories(spec: str | list[str]) -> list[str]:
    """Split "math,arith" and check every name, so a typo fails before a model loads."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise FailtuneError("no category given (choose from: " + ", ".join(CATEGORIES) + ")")
    for name in names:
        if name not in CATEGORIES and name not in TASKS:
            raise FailtuneError(f"unknown category {name!r}; available: {', '.join(CATEGORIES)}")
    return list(dict.fromkeys(names))


TaskOptions = Mapping[str, Mapping[str, Any]]


def scores_loglikelihood(specs: list[str | None], task_options: TaskOptions) -> bool:
    """Whether MMLU is among the categories and scored by log-likelihood (its
    `mode = "loglikelihood"`), which only the transformers backend computes."""
    if (task_options.get("mmlu") or {}).get("mode") != "loglikelihood":
        return False
    names = {
        n
        for spec in specs
        for c in parse_categories(spec or "math")
        for n in CATEGORIES.get(c, (c,))
    }
    return "mmlu" in names


def tasks_for(category: str, task_options: TaskOptions | None = None) -> list[Task]:
    """Instantiate the tasks of a category (or a single task named directly).

    `task_options` maps a task name to its constructor arguments, e.g. {"arith": {"seed": 1}}.
    """
    options = task_options or {}
    return [TASKS[n](**options.get(n, {})) for n in CATEGORIES.get(category, (category,))]


def sandbox_of(tasks: Iterable[Task]) -> dict[str, Any] | None:
    """The code sandbox these tasks grade in, for the manifest (None when they run no code)."""
    return next((s for s in (t.sandbox() for t in set(tasks)) if s is not None), None)


def task_by_name(name: str, task_options: TaskOptions | None = None) -> Task:
    if name not in TASKS:
        raise FailtuneError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
    return TASKS[name](**(task_options or {}).get(name, {}))


__all__ = [
    "CATEGORIES",
    "CATEGORY_ALIASES",
    "MBPP",
    "TASKS",
    "HumanEval",
    "Problem",
    "Task",
    "TaskOptions",
    "parse_categories",
    "sandbox_of",
    "task_by_name",
    "tasks_for",
]

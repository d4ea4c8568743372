"""Is this input usable? Categories, splits, task options, gates and models, checked without
loading a model or a dataset, so a mistake costs seconds, not the hours before the step that
would trip on it. Each function returns one sentence per problem (empty: all good), so a caller
can list every problem at once.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from failtune.errors import FailtuneError
from failtune.model_loading import resolve_model
from failtune.tasks import CATEGORIES, TASKS, parse_categories, tasks_for
from failtune.tasks.holdout import needs_holdout


def task_table_problems(tasks: Any) -> list[str]:
    """[tasks.<name>] tables: known task names, known constructor arguments, files that exist."""
    if not isinstance(tasks, Mapping):
        return ["[tasks] must be a table of tables, e.g. [tasks.arith] size = 2000"]
    found = []
    for name, values in tasks.items():
        if name not in TASKS:
            found.append(f"unknown task [tasks.{name}] (known: {', '.join(TASKS)})")
            continue
        if not isinstance(values, Mapping):
            found.append(f"[tasks.{name}] must be a table of options")
            continue
        accepted = [p for p in inspect.signature(TASKS[name].__init__).parameters if p != "self"]
        unknown = sorted(set(values) - set(accepted))
        if unknown:
            found.append(
                f"unknown key(s) {', '.join(unknown)} in [tasks.{name}] "
                f"(known: {', '.join(accepted)})"
            )
        path = values.get("path")
        if name == "custom" and isinstance(path, str) and not Path(path).expanduser().is_file():
            found.append(f"[tasks.custom] path names {path}, which does not exist")
    return found


def category_problems(
    categories: str | list[str], split: str, task_options: Mapping[str, Any], where: str
) -> list[str]:
    """Every category known, every task of them constructible and having `split`."""
    try:
        names = parse_categories(categories)
    except FailtuneError as e:
        return [f"{where}: {e}"]
    found = []
    for category in names:
        try:
            tasks = tasks_for(category, task_options)
        except (FailtuneError, TypeError, ValueError) as e:
            found.append(f"{where}: category {category}: {e}")
            continue
        for task in tasks:
            if needs_holdout(task) and split in ("train", "test"):
                continue  # cut from the task's own split (failtune.tasks.holdout)
            try:
                task.check_split(split)
            except FailtuneError as e:
                found.append(f"{where}: {e}")
    return found


def validated_categories(categories: str | list[str]) -> set[str]:
    """The table names a validation of `categories` writes (gates must name one of them)."""
    tasks = {t for c in parse_categories(categories) for t in CATEGORIES.get(c, (c,))}
    names = {TASKS[t].category for t in tasks}
    return names | ({"overall"} if len(names) > 1 else set())


def gate_problems(
    gates: Sequence[str], categories: str | list[str] | None, judge: bool
) -> list[str]:
    """Each gate parses, names a validated category (or judge) and a metric the table has."""
    from failtune.validation.paired import parse_gate
    from failtune.validation.stats import compare

    table = compare([True, False], [False, True], n_boot=10)  # any table has the same keys
    metrics = [k for k, v in table.items() if isinstance(v, int | float)]

    try:
        tables = validated_categories(categories) if categories else None
    except FailtuneError:
        tables = None  # the categories' own problem is reported by category_problems
    found = []
    for expr in gates:
        try:
            gate = parse_gate(expr)
        except FailtuneError as e:
            found.append(str(e))
            continue
        if gate.category == "judge":
            if not judge:
                found.append(f"gate {expr!r} reads the judge, but no judge is configured")
            continue
        if tables is not None and gate.category not in tables:
            found.append(
                f"gate {expr!r} names category {gate.category!r}, but only "
                f"{', '.join(sorted(tables))} will be validated"
            )
        if gate.metric not in metrics:
            found.append(
                f"gate {expr!r}: unknown metric {gate.metric!r} (known: {', '.join(metrics)})"
            )
    return found


def model_problems(spec: str | None, role: str, base: str | None = None) -> list[str]:
    """The model resolves (folder, .gguf, adapter, builtin, hub id syntax); nothing is loaded."""
    if spec is None:
        return []
    try:
        resolve_model(spec, base)
    except FailtuneError as e:
        return [f"{role}: {e}"]
    return []


def launch_problems(
    num_processes: int,
    accelerate_config: str | None,
    divided: int,
    device: str,
    where: str,
    *,
    grpo: bool = False,
) -> list[str]:
    """Training processes the machine can hold, a global batch (`divided`; GRPO: a group's
    answers) they share evenly, and an accelerate config that accelerate itself can read;
    `where` prefixes the key names."""
    from failtune.training import launch

    found = []
    config = None
    if accelerate_config is not None and Path(accelerate_config).expanduser().exists():
        try:  # a missing file is reported by the option's own check
            config = launch.read_accelerate_config(Path(accelerate_config).expanduser())
        except FailtuneError as e:
            found.append(f"{where}{e}")
    processes, machines = num_processes, 1
    if config is not None:
        machines = max(1, int(getattr(config, "num_machines", None) or 1))
        if num_processes == 1:  # launched with the config's own count
            processes = int(getattr(config, "num_processes", None) or 1)
    if processes <= 1:
        return found
    allowed, what = launch.processes_allowed(device, machines)
    if processes > allowed:
        found.append(
            f"{where}num_processes is {processes}, but {what} allow at most {allowed} "
            "training processes"
        )
    if divided % processes:
        problem = launch.group_problem if grpo else launch.batch_problem
        found.append(f"{where}{problem(divided, processes)}")
    return found


def raise_all(problems: Sequence[str], what: str) -> None:
    """One error listing every problem: the user fixes them all before the next try."""
    if len(problems) == 1:
        raise FailtuneError(problems[0])
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise FailtuneError(f"{what} has {len(problems)} problems:\n{lines}")

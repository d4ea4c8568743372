"""The grading engine every step shares: problems → completions → graded records.

Extract, validate, merge and the run pipeline all grade the same way: load a split's problems
(or find the problems of a completions file), get each problem's completion (from a backend,
resumably, or from the file), grade it with its task and append one record per problem to
results.jsonl.
"""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failtune.backends import Backend, GenParams
from failtune.console import note, progress_bar
from failtune.errors import FailtuneError
from failtune.evaluation.answer import answer_batches
from failtune.files import (
    JsonlAppender,
    atomic_write_json,
    atomic_write_jsonl,
    read_json,
    read_jsonl,
)
from failtune.tasks import Problem, Task, TaskOptions, parse_categories, task_by_name, tasks_for
from failtune.tasks.holdout import DEFAULT_FRACTION, describe, split_problems

RESULTS = "results.jsonl"
# Record keys a summary and the report break accuracy down by, when the task sets them (MATH).
BREAKDOWN = ("subject", "level")
RESULTS_SOURCE = "results.source.json"  # which model wrote results.jsonl, checked on resume
# What resuming needs of every line of an earlier results.jsonl.
RECORD_FIELDS = {"id": (str, "a string"), "correct": (bool, "true or false")}


@dataclass
class Completion:
    """A generation from somewhere: a backend here, or another tool's output file."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int | None = None


def load_problems(
    categories: str | list[str],
    split: str,
    limit: int | None = None,
    task_options: TaskOptions | None = None,
    holdout_fraction: float = DEFAULT_FRACTION,
) -> list[tuple[Task, Problem]]:
    """The problems of every task in `categories`; `limit` takes the first N of each task.

    Tasks without a train split are cut by `holdout_fraction` (failtune.tasks.holdout).
    """
    if limit is not None and limit < 1:
        raise FailtuneError("--limit must be a positive number")
    pairs = []
    seen: set[str] = set()
    for category in parse_categories(categories):
        for task in tasks_for(category, task_options):
            if task.name in seen:  # creativity and knowledge are both MMLU
                continue
            seen.add(task.name)
            problems = split_problems(task, split, holdout_fraction)
            pairs.extend((task, p) for p in problems[:limit])
    return pairs


def holdouts(problems: list[tuple[Task, Problem]], fraction: float) -> dict[str, Any]:
    """The manifest's record of each task's train/held-out cut (tasks without a train split)."""
    cuts = {t.name: describe(t, fraction) for t, _ in problems}
    return {name: cut for name, cut in cuts.items() if cut}


def read_completions(
    path: Path, task_options: TaskOptions | None = None
) -> tuple[dict[str, Completion], list[tuple[Task, Problem]]]:
    """Read `{"id", "completion"}` lines (other keys ignored) and find each id's problem."""
    completions: dict[str, Completion] = {}
    lines: dict[str, int] = {}
    for lineno, row in enumerate(read_jsonl(path), start=1):
        pid, text = row.get("id"), row.get("completion")
        if not isinstance(pid, str) or not isinstance(text, str):
            raise FailtuneError(
                f'{path}: line {lineno} needs a string "id" and a string "completion"'
            )
        if pid in completions:
            raise FailtuneError(
                f"{path}: id {pid!r} appears twice (lines {lines[pid]} and {lineno})"
            )
        finish = row.get("finish_reason")
        completions[pid] = Completion(text, finish if isinstance(finish, str) else None)
        lines[pid] = lineno
    if not completions:
        raise FailtuneError(f"{path} holds no completions")
    return completions, _problems_by_id(completions, path, lines, task_options)


def _problems_by_id(
    ids: Iterable[str], path: Path, lines: Mapping[str, int], task_options: TaskOptions | None
) -> list[tuple[Task, Problem]]:
    tasks: dict[str, Task] = {}
    index: dict[tuple[str, str], dict[str, Problem]] = {}
    found = []
    for pid in ids:
        parts = pid.split("/")
        if len(parts) != 3:
            raise FailtuneError(
                f"{path}: line {lines[pid]}: id {pid!r} is not of the form <task>/<split>/<key>"
            )
        name, split, _ = parts
        if name not in tasks:
            tasks[name] = task_by_name(name, task_options)
        task = tasks[name]
        if (name, split) not in index:
            task.check_split(split)
            index[(name, split)] = {p.id: p for p in task.load(split)}
        problem = index[(name, split)].get(pid)
        if problem is None:
            raise FailtuneError(f"{path}: line {lines[pid]}: no problem with id {pid!r}")
        found.append((task, problem))
    return found


def make_records(task: Task, pairs: Sequence[tuple[Problem, Completion]]) -> list[dict[str, Any]]:
    """Grade a batch (a task may grade it in parallel, e.g. code in sandboxes) into records."""
    grades = task.grade_many([(p, c.text, c.finish_reason) for p, c in pairs])
    return [
        {
            "id": problem.id,
            "task": problem.task,
            "split": problem.split,
            "prompt": problem.prompt,
            "completion": completion.text,
            "extracted": grade.extracted,
            "expected": problem.expected,
            "correct": grade.correct,
            "reason": grade.reason,
            "finish_reason": completion.finish_reason,
            "completion_tokens": completion.completion_tokens,
            **dict(problem.tags),
        }
        for (problem, completion), grade in zip(pairs, grades, strict=True)
    ]


def by_task(problems: list[tuple[Task, Problem]]) -> list[tuple[Task, list[Problem]]]:
    """Problems grouped per task, in the order the tasks first appear."""
    groups: dict[str, tuple[Task, list[Problem]]] = {}
    for task, problem in problems:
        groups.setdefault(task.name, (task, []))[1].append(problem)
    return list(groups.values())


def evaluate(
    problems: list[tuple[Task, Problem]],
    output_dir: Path,
    *,
    backend: Backend | None = None,
    completions: Mapping[str, Completion] | None = None,
    max_new_tokens: int | None = None,
    stop: tuple[str, ...] = (),
    resume: bool = True,
    show_progress: bool = True,
    label: str = "grading",
) -> list[dict[str, Any]]:
    """Grade every problem once, appending to results.jsonl per batch; returns records in order.

    With `resume`, ids already in results.jsonl are not generated again, so a killed run loses at
    most the batch in flight.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    if completions is not None:
        return _grade_given(problems, completions, output_dir / RESULTS)
    if backend is None:
        raise FailtuneError("nothing to grade: give a model or a completions file")
    done = _previous_records(output_dir, backend, resume)
    atomic_write_json(output_dir / RESULTS_SOURCE, {"model": backend.info.model})
    graded = sum(1 for _, p in problems if p.id in done)
    if graded:
        note(f"{graded} of {len(problems)} problems already graded in {output_dir / RESULTS}: kept")
    if graded < len(problems):
        _generate(problems, done, backend, output_dir, max_new_tokens, stop, show_progress, label)
    return [done[p.id] for _, p in problems]


def _grade_given(
    problems: list[tuple[Task, Problem]], completions: Mapping[str, Completion], results: Path
) -> list[dict[str, Any]]:
    """Grade a completions file in one go; results.jsonl is rewritten whole."""
    by_id = {
        r["id"]: r
        for task, group in by_task(problems)
        for r in make_records(task, [(p, completions[p.id]) for p in group])
    }
    records = [by_id[p.id] for _, p in problems]
    atomic_write_jsonl(results, records)
    return records


def _previous_records(output_dir: Path, backend: Backend, resume: bool) -> dict[str, dict]:
    """The records results.jsonl already holds (with `resume`); else it is kept as a backup."""
    results = output_dir / RESULTS
    if not results.exists():
        return {}
    if resume:
        _check_same_model(output_dir, backend)
        rows = read_jsonl(results, tolerate_partial_tail=True, require=RECORD_FIELDS)
        return {r["id"]: r for r in rows}
    backup = results.with_name(f"{RESULTS}.{int(time.time())}.bak")
    shutil.move(results, backup)
    note(f"--no-resume: previous results kept as {backup}")
    return {}


def _generate(
    problems: list[tuple[Task, Problem]],
    done: dict[str, dict[str, Any]],
    backend: Backend,
    output_dir: Path,
    max_new_tokens: int | None,
    stop: tuple[str, ...],
    show_progress: bool,
    label: str,
) -> None:
    """Answer and grade the problems not in `done`, task by task, adding their records to it."""
    wanted = {p.id for _, p in problems}
    correct = sum(1 for r in done.values() if r["id"] in wanted and r["correct"])
    graded = sum(1 for pid in wanted if pid in done)
    with progress_bar(show_progress) as bar, JsonlAppender(output_dir / RESULTS) as sink:
        job = bar.add_task(label, total=len(problems), completed=graded, info=_acc(correct, graded))
        for task, group in by_task(problems):
            skip = {i for i, p in enumerate(group) if p.id in done}
            if len(skip) == len(group):
                continue
            params = GenParams(
                max_new_tokens=max_new_tokens or task.default_max_new_tokens,
                stop=stop,
                stop_after=task.stop_after,
            )
            for batch in answer_batches(backend, task, group, params, skip):
                rows = make_records(
                    task,
                    [
                        (group[i], Completion(g.text, g.finish_reason, g.completion_tokens))
                        for i, g in batch
                        if group[i].id not in done  # a batch half-written before a kill
                    ],
                )
                sink.write_many(rows)
                done.update((r["id"], r) for r in rows)
                correct += sum(r["correct"] for r in rows)
                graded += len(rows)
                bar.update(job, advance=len(rows), info=_acc(correct, graded))


def _check_same_model(output_dir: Path, backend: Backend) -> None:
    """Resuming into results another model wrote would silently mix two models: refuse."""
    meta = output_dir / RESULTS_SOURCE
    if not meta.exists():
        return
    previous = read_json(meta).get("model")
    if previous and previous != backend.info.model:
        raise FailtuneError(
            f"{output_dir} holds results of model {previous}; use another output folder "
            "or --no-resume to start over"
        )


def _acc(correct: int, graded: int) -> str:
    return f"acc {correct / graded:.1%}" if graded else ""


def summarize(
    records: list[dict[str, Any]], category_of: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Per category: n, accuracy, failure rate and why the failures failed."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(category_of[r["task"]], []).append(r)
    summary = {}
    for category, rows in groups.items():
        n = len(rows)
        correct = sum(r["correct"] for r in rows)
        summary[category] = {
            "n": n,
            "correct": correct,
            "accuracy": correct / n,
            "failure_rate": 1 - correct / n,
            "failure_reasons": dict(
                Counter(reason_kind(r["reason"]) for r in rows if not r["correct"]).most_common()
            ),
        }
        breakdown = breakdown_of(rows)
        if breakdown:
            summary[category]["breakdown"] = breakdown
    return summary


def breakdown_of(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """n, correct and accuracy per value of each BREAKDOWN key the records carry."""
    groups: dict[str, dict[str, list[bool]]] = {}
    for r in records:
        for key in BREAKDOWN:
            if key in r:
                groups.setdefault(key, {}).setdefault(str(r[key]), []).append(bool(r["correct"]))
    return {
        key: {
            value: {"n": len(marks), "correct": sum(marks), "accuracy": sum(marks) / len(marks)}
            for value, marks in sorted(values.items())
        }
        for key, values in groups.items()
    }


def reason_kind(reason: str) -> str:
    """`runtime_error:NameError` stays; `assertion_failed:<assert line>` counts as its kind."""
    kind, _, detail = reason.partition(":")
    return reason if re.fullmatch(r"[\w.]*", detail) else kind

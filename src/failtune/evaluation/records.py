"""The grading engine every step shares: problems → completions → graded records.

Extract, validate, merge and the run pipeline all grade the same way: load a split's problems
(or find the problems of a completions file), get each problem's completion (from a backend,
resumably, or from the file), grade it with its task and append one record per problem to
results.jsonl. With sampling, each problem's K sampled answers are graded too and appended to
the same file, one record each with its `sample` index (0 … K-1); the greedy record has none.
"""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from failtune.backends import Backend, Generation, GenParams
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
# A record's place: its problem and its sample index (None: the greedy answer).
Key = tuple[str, int | None]
# Finished answers of one task's problems: (index into its problems, sample index, generation).
Batches = Iterator[list[tuple[int, int | None, Generation]]]


def key_of(record: Mapping[str, Any]) -> Key:
    return record["id"], record.get("sample")


def greedy_records(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The one greedy record per problem among a results file's lines."""
    return [dict(r) for r in records if r.get("sample") is None]


def sampled_records(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The sampled records among a results file's lines (those with a `sample` index)."""
    return [dict(r) for r in records if r.get("sample") is not None]


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
    return completions, problems_of(completions, path, task_options, lines)


def problems_of(
    ids: Iterable[str],
    path: Path,
    task_options: TaskOptions | None = None,
    lines: Mapping[str, int] | None = None,
) -> list[tuple[Task, Problem]]:
    """The problems of ids like gsm8k/test/17 read from `path` (line `lines[id]`), in order."""
    lines = lines or {}
    tasks: dict[str, Task] = {}
    index: dict[tuple[str, str], dict[str, Problem]] = {}
    found = []
    for pid in ids:
        where = f"{path}: line {lines[pid]}" if pid in lines else str(path)
        parts = pid.split("/")
        if len(parts) != 3:
            raise FailtuneError(f"{where}: id {pid!r} is not of the form <task>/<split>/<key>")
        name, split, _ = parts
        if name not in tasks:
            tasks[name] = task_by_name(name, task_options)
        task = tasks[name]
        if (name, split) not in index:
            task.check_split(split)
            index[(name, split)] = {p.id: p for p in task.load(split)}
        problem = index[(name, split)].get(pid)
        if problem is None:
            raise FailtuneError(f"{where}: no problem with id {pid!r}")
        found.append((task, problem))
    return found


def make_records(
    task: Task,
    pairs: Sequence[tuple[Problem, Completion]],
    samples: Sequence[int | None] | None = None,
) -> list[dict[str, Any]]:
    """Grade a batch (a task may grade it in parallel, e.g. code in sandboxes) into records;
    `samples[j]` is the sample index of pair j (None or absent: a greedy answer)."""
    grades = task.grade_many([(p, c.text, c.finish_reason) for p, c in pairs])
    indices = samples if samples is not None else [None] * len(pairs)
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
            **({} if sample is None else {"sample": sample}),
        }
        for (problem, completion), grade, sample in zip(pairs, grades, indices, strict=True)
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
    _write_source(output_dir, backend.info.model, None, keep_sampling=resume)
    keys = [(p.id, None) for _, p in problems]
    _note_kept(sum(k in done for k in keys), len(keys), "problems", output_dir)

    def batches(task: Task, group: list[Problem], skip: set[int]) -> Batches:
        params = _params(task, max_new_tokens, stop)
        for batch in answer_batches(backend, task, group, params, skip):
            yield [(i, None, g) for i, g in batch]

    _generate(problems, done, [None], batches, output_dir, show_progress, label)
    return [done[k] for k in keys]


def sample(
    problems: list[tuple[Task, Problem]],
    output_dir: Path,
    backend: Backend,
    sampling: Mapping[str, Any],
    *,
    max_new_tokens: int | None = None,
    stop: tuple[str, ...] = (),
    show_progress: bool = True,
    label: str = "sampling",
) -> list[dict[str, Any]]:
    """Grade `sampling["samples"]` sampled answers per problem (backends.GenParams fields),
    appended to results.jsonl after `evaluate` has written its greedy records there.

    Always resumes by (problem, sample); samples of other settings are refused rather than mixed.
    Tasks scored by log-likelihood have one answer per problem, so they are not sampled.
    """
    done = _previous_records(output_dir, backend, resume=True)
    _check_same_sampling(output_dir, sampling)
    _write_source(output_dir, backend.info.model, dict(sampling), keep_sampling=True)
    scored = sorted({t.name for t, p in problems if t.choice_requests(p) is not None})
    if scored:
        note(f"{', '.join(scored)}: scored by log-likelihood, one answer per problem, not sampled")
    problems = [(t, p) for t, p in problems if t.name not in scored]
    k = int(sampling["samples"])
    keys = [(p.id, s) for _, p in problems for s in range(k)]
    _note_kept(sum(key in done for key in keys), len(keys), "samples", output_dir)

    def batches(task: Task, group: list[Problem], skip: set[tuple[int, int]]) -> Batches:
        params = GenParams(**vars(_params(task, max_new_tokens, stop)) | dict(sampling))
        prompts, ids = [p.prompt for p in group], [p.id for p in group]
        yield from backend.stream_samples(prompts, params, skip, keys=ids)

    _generate(problems, done, list(range(k)), batches, output_dir, show_progress, label)
    return [done[key] for key in keys]


def _params(task: Task, max_new_tokens: int | None, stop: tuple[str, ...]) -> GenParams:
    return GenParams(
        max_new_tokens=max_new_tokens or task.default_max_new_tokens,
        stop=stop,
        stop_after=task.stop_after,
    )


def _note_kept(kept: int, total: int, what: str, output_dir: Path) -> None:
    if kept:
        note(f"{kept} of {total} {what} already graded in {output_dir / RESULTS}: kept")


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


def _previous_records(output_dir: Path, backend: Backend, resume: bool) -> dict[Key, dict]:
    """The records results.jsonl already holds (with `resume`); else it is kept as a backup."""
    results = output_dir / RESULTS
    if not results.exists():
        return {}
    if resume:
        _check_same_model(output_dir, backend)
        rows = read_jsonl(results, tolerate_partial_tail=True, require=RECORD_FIELDS)
        return {key_of(r): r for r in rows}
    backup = results.with_name(f"{RESULTS}.{int(time.time())}.bak")
    shutil.move(results, backup)
    note(f"--no-resume: previous results kept as {backup}")
    return {}


def _generate(
    problems: list[tuple[Task, Problem]],
    done: dict[Key, dict[str, Any]],
    samples: list[int | None],
    batches: Callable[[Task, list[Problem], Any], Batches],
    output_dir: Path,
    show_progress: bool,
    label: str,
) -> None:
    """Answer and grade the (problem, sample) pairs not in `done`, task by task, adding their
    records to it; `batches(task, problems, skip)` answers one task's problems."""
    wanted = [(p.id, s) for _, p in problems for s in samples]
    if all(k in done for k in wanted):
        return
    correct = sum(1 for k in wanted if k in done and done[k]["correct"])
    graded = sum(1 for k in wanted if k in done)
    with progress_bar(show_progress) as bar, JsonlAppender(output_dir / RESULTS) as sink:
        job = bar.add_task(label, total=len(wanted), completed=graded, info=_acc(correct, graded))
        for task, group in by_task(problems):
            skip = {
                i if s is None else (i, s)
                for i, p in enumerate(group)
                for s in samples
                if (p.id, s) in done
            }
            if len(skip) == len(group) * len(samples):
                continue
            for batch in batches(task, group, skip):
                fresh = [(i, s, g) for i, s, g in batch if (group[i].id, s) not in done]
                rows = make_records(  # a batch half-written before a kill is not graded twice
                    task,
                    [
                        (group[i], Completion(g.text, g.finish_reason, g.completion_tokens))
                        for i, _, g in fresh
                    ],
                    [s for _, s, _ in fresh],
                )
                sink.write_many(rows)
                done.update((key_of(r), r) for r in rows)
                correct += sum(r["correct"] for r in rows)
                graded += len(rows)
                bar.update(job, advance=len(rows), info=_acc(correct, graded))


def _write_source(
    output_dir: Path, model: str, sampling: dict[str, Any] | None, *, keep_sampling: bool
) -> None:
    """results.source.json: the model that wrote results.jsonl, and the settings of its samples
    (`sampling`, else those recorded before unless the results were started over)."""
    meta = output_dir / RESULTS_SOURCE
    previous = read_json(meta) if meta.exists() and keep_sampling else {}
    kept = previous.get("sampling") if sampling is None else sampling
    atomic_write_json(meta, {"model": model, **({"sampling": kept} if kept else {})})


def _check_same_sampling(output_dir: Path, sampling: Mapping[str, Any]) -> None:
    """Samples of another temperature or seed in the same file would be read as one set; more
    samples than before only add to them (sample s is the same whatever K is)."""
    meta = output_dir / RESULTS_SOURCE
    previous = read_json(meta).get("sampling") if meta.exists() else None
    # a setting a folder's file lacks (it predates the option) was that option's default
    before = {f.name: f.default for f in fields(GenParams)} | (previous or {})
    changed = ", ".join(
        k for k in sampling if k != "samples" and previous and before.get(k) != sampling[k]
    )
    if changed:
        raise FailtuneError(
            f"{output_dir} holds samples made with other settings ({changed} differ); use "
            "another output folder or --no-resume to start over"
        )


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

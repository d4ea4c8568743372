"""Extract: generate → grade → results.jsonl → <category>_training_ready.jsonl.

Every problem of the chosen split is run and graded; every failure becomes one SFT example whose
output is the dataset's own solution. No teacher model: the benchmark already holds the answers.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failtune.backends import Backend, GenParams, load_backend
from failtune.console import note, progress_bar, warn
from failtune.errors import FailtuneError
from failtune.files import JsonlAppender, atomic_write_json, atomic_write_jsonl, read_jsonl
from failtune.manifest import data_hashes, now, write_manifest
from failtune.options import ExtractOptions, build, record, with_custom
from failtune.scoring import answer_batches
from failtune.tasks import (
    Problem,
    Task,
    TaskOptions,
    parse_categories,
    sandbox_of,
    task_by_name,
    tasks_for,
)
from failtune.tasks.holdout import DEFAULT_FRACTION, describe, split_problems

RESULTS = "results.jsonl"
RESULTS_SOURCE = "results.source.json"  # which model wrote results.jsonl, checked on resume
TRAINING_SUFFIX = "_training_ready.jsonl"
REPLAY_SUFFIX = "_replay.jsonl"  # problems already solved: replay data against forgetting


@dataclass
class Completion:
    """A generation from somewhere: a backend here, or another tool's output file."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int | None = None


@dataclass
class ExtractResult:
    output_dir: Path
    records: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    training_files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


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


SHARD_RULE = "position % num_shards == shard_index, positions in the full problem list"


def shard_record(total: int, num_shards: int, shard_index: int) -> dict[str, Any] | None:
    """Check the shard flags; what the manifest records so `failtune merge` can check shards."""
    if num_shards < 1:
        raise FailtuneError("--num-shards must be at least 1")
    if not 0 <= shard_index < num_shards:
        raise FailtuneError(
            f"--shard-index must be between 0 and {num_shards - 1} for --num-shards {num_shards}"
        )
    if num_shards == 1:
        return None
    return {
        "num_shards": num_shards,
        "shard_index": shard_index,
        "rule": SHARD_RULE,
        "problems_total": total,
        "problems_in_shard": len(range(shard_index, total, num_shards)),
    }


def select_shard(
    problems: list[tuple[Task, Problem]], num_shards: int, shard_index: int
) -> list[tuple[Task, Problem]]:
    """Every num_shards-th problem: shards are disjoint, together complete, and balanced."""
    return problems[shard_index::num_shards]


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
        }
        for (problem, completion), grade in zip(pairs, grades, strict=True)
    ]


def _by_task(problems: list[tuple[Task, Problem]]) -> list[tuple[Task, list[Problem]]]:
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
    results_path = output_dir / RESULTS
    output_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict[str, Any]] = {}
    if completions is not None:
        by_id = {
            r["id"]: r
            for task, group in _by_task(problems)
            for r in make_records(task, [(p, completions[p.id]) for p in group])
        }
        records = [by_id[p.id] for _, p in problems]
        atomic_write_jsonl(results_path, records)
        return records
    if backend is None:
        raise FailtuneError("nothing to grade: give a model or a completions file")
    if results_path.exists():
        if resume:
            _check_same_model(output_dir, backend)
            done = {r["id"]: r for r in read_jsonl(results_path, tolerate_partial_tail=True)}
        else:
            backup = results_path.with_name(f"{RESULTS}.{int(time.time())}.bak")
            shutil.move(results_path, backup)
            note(f"--no-resume: previous results kept as {backup}")
    atomic_write_json(output_dir / RESULTS_SOURCE, {"model": backend.info.model})
    wanted = {p.id for _, p in problems}
    todo = [(t, p) for t, p in problems if p.id not in done]
    correct = sum(1 for r in done.values() if r["id"] in wanted and r["correct"])
    graded = len(problems) - len(todo)
    if graded:
        note(f"{graded} of {len(problems)} problems already graded in {results_path}: kept")
    if not todo:
        return [done[p.id] for _, p in problems]
    with progress_bar(show_progress) as bar, JsonlAppender(results_path) as sink:
        job = bar.add_task(label, total=len(problems), completed=graded, info=_acc(correct, graded))
        for task, group in _by_task(problems):
            params = GenParams(
                max_new_tokens=max_new_tokens or task.default_max_new_tokens,
                stop=stop,
                stop_after=task.stop_after,
            )
            skip = {i for i, p in enumerate(group) if p.id in done}
            if len(skip) == len(group):
                continue
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
                for r in rows:
                    done[r["id"]] = r
                correct += sum(r["correct"] for r in rows)
                graded += len(rows)
                bar.update(job, advance=len(rows), info=_acc(correct, graded))
    return [done[p.id] for _, p in problems]


def _check_same_model(output_dir: Path, backend: Backend) -> None:
    """Resuming into results another model wrote would silently mix two models: refuse."""
    meta = output_dir / RESULTS_SOURCE
    if not meta.exists():
        return
    previous = json.loads(meta.read_text()).get("model")
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
    return summary


def reason_kind(reason: str) -> str:
    """`runtime_error:NameError` stays; `assertion_failed:<assert line>` counts as its kind."""
    kind, _, detail = reason.partition(":")
    return reason if re.fullmatch(r"[\w.]*", detail) else kind


def write_training_files(
    problems: list[tuple[Task, Problem]], records: list[dict[str, Any]], output_dir: Path
) -> dict[str, Path]:
    """One `{"instruction", "output"}` line per failure, per category, in dataset order.

    The problems the model already solves go to `<category>_replay.jsonl` in the same format
    (with the dataset's solution), for `train --replay` to fight forgetting.
    """
    correct = {r["id"]: r["correct"] for r in records}
    per_category: dict[str, tuple[list[dict[str, str]], list[dict[str, str]]]] = {}
    for task, problem in problems:
        failed, solved = per_category.setdefault(task.category, ([], []))
        if problem.id in correct:
            row = {"instruction": problem.prompt, "output": problem.solution}
            (solved if correct[problem.id] else failed).append(row)
    paths = {}
    for category, (failed, solved) in per_category.items():
        path = output_dir / f"{category}{TRAINING_SUFFIX}"
        atomic_write_jsonl(path, failed)
        atomic_write_jsonl(output_dir / f"{category}{REPLAY_SUFFIX}", solved)
        paths[category] = path
    return paths


def extract(
    model_path: str | None = None,
    output_dir: str | Path = "failtune-out",
    options: ExtractOptions | None = None,
    *,
    model: Backend | None = None,
    task_options: TaskOptions | None = None,
    server: Mapping[str, Any] | None = None,
    show_progress: bool = True,
    **overrides: Any,
) -> ExtractResult:
    """Run a model (or read `completions`) over a benchmark split and keep its failures.

    `options` (failtune.options.ExtractOptions; its fields may also be given as keywords) says
    which problems and how to generate. Pass an already opened backend as `model` to reuse
    loaded weights across calls. `task_options` adds constructor arguments per task, e.g.
    {"arith": {"size": 20}}, and `server` arguments of backends.openai.OpenAIBackend.connect
    beyond the options' own. With `num_shards`, only every num_shards-th problem from
    `shard_index` on is run; `failtune merge` joins the shards.
    """
    o = build(ExtractOptions, options, overrides)
    categories = with_custom(o.categories, o.task_file, None)
    split, limit, batch_size, max_new_tokens = o.split, o.limit, o.batch_size, o.max_new_tokens
    stop, completions, resume, backend = tuple(o.stop), o.completions, o.resume, o.backend
    dtype, device, holdout_fraction = o.dtype, o.device, o.holdout_fraction
    num_shards, shard_index = o.num_shards, o.shard_index
    task_options = o.task_options(task_options)
    server, engine_options = {**o.server(), **(server or {})}, o.engine()
    started, t0 = now(), time.perf_counter()
    out = Path(output_dir)
    given: Mapping[str, Completion] | None = None
    sharding = None
    if completions is not None:
        if num_shards != 1:
            raise FailtuneError("--num-shards splits a model run, not a completions file")
        given, problems = read_completions(Path(completions), task_options)
        if categories:
            keep = {
                t.name for c in parse_categories(categories) for t in tasks_for(c, task_options)
            }
            skipped = sum(1 for t, _ in problems if t.name not in keep)
            if skipped:
                warn(f"{skipped} completions belong to other categories and were skipped")
            problems = [(t, p) for t, p in problems if t.name in keep]
    else:
        problems = load_problems(categories or "math", split, limit, task_options, holdout_fraction)
        sharding = shard_record(len(problems), num_shards, shard_index)
        problems = select_shard(problems, num_shards, shard_index)
    if not problems:
        raise FailtuneError("no problems to grade")
    sandbox = sandbox_of(t for t, _ in problems)  # refuses unsandboxed code before a model loads
    if completions is None and model is None:
        if not model_path and backend != "openai":
            raise FailtuneError("give --model_path, or --completions to grade existing outputs")
        model = load_backend(
            model_path or "",
            backend=backend,
            dtype=dtype,
            device=device,
            batch_size=batch_size,
            server=server,
            **(engine_options or {}),
        )
    args = {"model_path": model_path, "output_dir": out, **record(o)}
    args |= {"categories": categories, "task_options": task_options}
    files = sorted({f for t, p in problems for f in t.data_files(p.split)})
    splits_read: dict[str, set[str]] = {}
    for t, p in problems:
        splits_read.setdefault(t.name, set()).add(p.split)
    manifest = {
        "data_sha256": data_hashes(files),
        # The authors' splits the problems came from: shows when test problems were trained on.
        "problem_splits": {name: sorted(s) for name, s in splits_read.items()},
        "holdout": holdouts(problems, holdout_fraction),
        "started": started,
        "source": _source(model, completions),  # kept in the final manifest too
    }
    if sharding:
        manifest["sharding"] = sharding
    if sandbox:
        manifest["sandbox"] = sandbox
    write_manifest(out, "extract", args, status="running", **manifest)
    records = evaluate(
        problems,
        out,
        backend=model,
        completions=given,
        max_new_tokens=max_new_tokens,
        stop=stop,
        resume=resume,
        show_progress=show_progress,
        label="extract",
    )
    category_of = {t.name: t.category for t, _ in problems}
    summary = summarize(records, category_of)
    training = write_training_files(problems, records, out)
    seconds = time.perf_counter() - t0
    tokens = sum(r["completion_tokens"] or 0 for r in records)
    write_manifest(
        out,
        "extract",
        args,
        status="done",
        **manifest,
        finished=now(),
        counts={c: {k: s[k] for k in ("n", "correct", "accuracy")} for c, s in summary.items()},
        summary=summary,
        completion_tokens=tokens,
        training_files={c: str(p) for c, p in training.items()},
        cost={"wall_seconds": round(seconds, 2)},
    )
    return ExtractResult(out, records, summary, training, seconds)


def holdouts(problems: list[tuple[Task, Problem]], fraction: float) -> dict[str, Any]:
    """The manifest's record of each task's train/held-out cut (tasks without a train split)."""
    cuts = {t.name: describe(t, fraction) for t, _ in problems}
    return {name: cut for name, cut in cuts.items() if cut}


def _source(model: Backend | None, completions: str | Path | None) -> dict[str, Any]:
    if model is None:
        return {"completions": str(completions)}
    return {"backend": model.info.backend, "model": model.info.model, **model.info.details}

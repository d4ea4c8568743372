"""Extract: generate → grade → results.jsonl → <category>_training_ready.jsonl.

Every problem of the chosen split is run and graded; every failure becomes SFT examples. By
default the output is the dataset's own solution (no teacher model: the benchmark already holds
the answers); with K samples per problem the failures get a reach map (near: a sample was right,
out of reach: none was) and may train on the model's own verified answers instead
(failtune.evaluation.targets).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failtune.backends import Backend, check_scoring, load_backend
from failtune.config.options import ExtractOptions, build, record, with_custom
from failtune.console import warn
from failtune.errors import FailtuneError
from failtune.evaluation.records import (
    Completion,
    evaluate,
    holdouts,
    load_problems,
    read_completions,
    sample,
    summarize,
)
from failtune.evaluation.training_data import (
    Found,
    find_targets,
    write_rl_datasets,
    write_training_files,
)
from failtune.files import output_folder
from failtune.manifest import data_hashes, now, write_manifest
from failtune.tasks import (
    Problem,
    Task,
    TaskOptions,
    parse_categories,
    sandbox_of,
    scores_loglikelihood,
    tasks_for,
)


@dataclass
class ExtractResult:
    output_dir: Path
    records: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    training_files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    reach: dict[str, dict[str, Any]] = field(default_factory=dict)  # per category, with samples
    pass_at_k: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)  # training lines per source


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


def extract(
    model_path: str | None = None,
    output_dir: str | Path = "failtune-out",
    *,
    options: ExtractOptions | None = None,
    model: Backend | None = None,
    task_options: TaskOptions | None = None,
    server: Mapping[str, Any] | None = None,
    show_progress: bool = True,
    **overrides: Any,
) -> ExtractResult:
    """Run a model (or read `completions`) over a benchmark split and keep its failures.

    `options` (failtune.config.options.ExtractOptions; its fields may also be given as keywords)
    says which problems and how to generate. Pass an already opened backend as `model` to reuse
    loaded weights across calls. `task_options` adds constructor arguments per task, e.g. {"arith":
    {"size": 20}}, and `server` arguments of backends.openai.OpenAIBackend.connect beyond the
    options' own. With `num_shards`, only every num_shards-th problem from `shard_index` on is run;
    `failtune merge` joins the shards.
    """
    o = build(ExtractOptions, options, overrides)
    categories = with_custom(o.categories, o.task_file, None)
    task_options = o.task_options(task_options)
    started, t0 = now(), time.perf_counter()
    out = output_folder(output_dir)
    given: Mapping[str, Completion] | None = None
    sharding = None
    if o.completions is not None:
        if o.num_shards != 1:
            raise FailtuneError("--num-shards splits a model run, not a completions file")
        if o.samples is not None or o.targets in ("self", "rationalized"):
            what = "--samples" if o.samples is not None else f"--targets {o.targets}"
            raise FailtuneError(
                f"{what} asks the model for answers: give a model, not --completions"
            )
        given, problems = _given_problems(Path(o.completions), categories, task_options)
    else:
        problems = load_problems(
            categories or "math", o.split, o.limit, task_options, o.holdout_fraction
        )
        sharding = shard_record(len(problems), o.num_shards, o.shard_index)
        problems = select_shard(problems, o.num_shards, o.shard_index)
    if not problems:
        raise FailtuneError("no problems to grade")
    sandbox = sandbox_of(t for t, _ in problems)  # refuses unsandboxed code before a model loads
    if o.completions is None and model is None:
        check_scoring(o.backend, scores_loglikelihood([categories], task_options))
        model = _open_model(model_path, o, {**o.server(), **(server or {})})
    args = {"model_path": model_path, "output_dir": out, **record(o)}
    args |= {"categories": categories, "task_options": task_options}
    manifest = _run_record(problems, o.holdout_fraction, started, _source(model, o.completions))
    if sharding:
        manifest["sharding"] = sharding
    if sandbox:
        manifest["sandbox"] = sandbox
    write_manifest(out, "extract", args, status="running", **manifest)
    generation = {"max_new_tokens": o.max_new_tokens, "stop": tuple(o.stop)}
    records = evaluate(
        problems,
        out,
        backend=model,
        completions=given,
        resume=o.resume,
        show_progress=show_progress,
        label="extract",
        **generation,
    )
    sampled: list[dict[str, Any]] = []
    sampling = o.sampling()
    if sampling and model is not None:
        sampled = sample(
            problems,
            out,
            model,
            sampling,
            show_progress=show_progress,
            label="samples",
            **generation,
        )
    found = find_targets(problems, records, sampled, o, model, out, show_progress=show_progress)
    return _finish(out, problems, found, args, manifest, time.perf_counter() - t0)


def _open_model(model_path: str | None, o: ExtractOptions, server: Mapping[str, Any]) -> Backend:
    if not model_path and o.backend != "openai":
        raise FailtuneError("give --model_path, or --completions to grade existing outputs")
    return load_backend(
        model_path or "",
        backend=o.backend,
        dtype=o.dtype,
        device=o.device,
        batch_size=o.batch_size,
        server=server,
        **o.engine(),
    )


def _given_problems(
    path: Path, categories: str | list[str] | None, task_options: TaskOptions | None
) -> tuple[dict[str, Completion], list[tuple[Task, Problem]]]:
    """A completions file's completions and problems, keeping only `categories` (if given)."""
    given, problems = read_completions(path, task_options)
    if not categories:
        return given, problems
    keep = {t.name for c in parse_categories(categories) for t in tasks_for(c, task_options)}
    skipped = sum(1 for t, _ in problems if t.name not in keep)
    if skipped:
        warn(f"{skipped} completions belong to other categories and were skipped")
    return given, [(t, p) for t, p in problems if t.name in keep]


def _run_record(
    problems: list[tuple[Task, Problem]],
    holdout_fraction: float,
    started: str,
    source: dict[str, Any],
) -> dict[str, Any]:
    """What the manifest records about the inputs, in the running and in the final manifest."""
    files = sorted({f for t, p in problems for f in t.data_files(p.split)})
    splits_read: dict[str, set[str]] = {}
    for t, p in problems:
        splits_read.setdefault(t.name, set()).add(p.split)
    return {
        "data_sha256": data_hashes(files),
        # The authors' splits the problems came from: shows when test problems were trained on.
        "problem_splits": {name: sorted(s) for name, s in splits_read.items()},
        "holdout": holdouts(problems, holdout_fraction),
        "started": started,
        "source": source,  # kept in the final manifest too
    }


def _finish(
    out: Path,
    problems: list[tuple[Task, Problem]],
    found: Found,
    args: dict[str, Any],
    manifest: dict[str, Any],
    seconds: float,
) -> ExtractResult:
    """Summarise, write the training files and the final manifest."""
    records = found.records
    summary = summarize(records, {t.name: t.category for t, _ in problems})
    training = write_training_files(problems, records, out, found.targets)
    rl = write_rl_datasets(problems, found, out) if args.get("rl_datasets") else {}
    made = found.record(args.get("targets", "reference"))  # pass@k's bootstrap runs once
    write_manifest(
        out,
        "extract",
        args,
        status="done",
        **manifest,
        finished=now(),
        counts={c: {k: s[k] for k in ("n", "correct", "accuracy")} for c, s in summary.items()},
        summary=summary,
        completion_tokens=sum(r["completion_tokens"] or 0 for r in records),
        training_files={c: str(p) for c, p in training.items()},
        **({"rl_datasets": {c: [str(p) for p in ps] for c, ps in rl.items()}} if rl else {}),
        **made,
        cost={"wall_seconds": round(seconds, 2)},
    )
    return ExtractResult(
        out,
        records,
        summary,
        training,
        seconds,
        made.get("reach", {}),
        made.get("pass_at_k", {}),
        {k: v for k, v in made["targets"].items() if k != "kind"},
    )


def _source(model: Backend | None, completions: str | Path | None) -> dict[str, Any]:
    if model is None:
        return {"completions": str(completions)}
    return model.info.record()

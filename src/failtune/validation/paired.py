"""Validate: base vs candidate on identical held-out problems, paired, with gates."""

from __future__ import annotations

import functools
import operator
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failtune.backends import Backend, check_scoring, load_backend
from failtune.config.options import ValidateOptions, build, record, with_custom
from failtune.errors import FailtuneError
from failtune.evaluation.records import (
    Completion,
    evaluate,
    holdouts,
    load_problems,
    read_completions,
    sample,
)
from failtune.files import atomic_write_json, output_folder
from failtune.manifest import now, write_manifest
from failtune.tasks import (
    CATEGORY_ALIASES,
    TASKS,
    Problem,
    Task,
    TaskOptions,
    sandbox_of,
    scores_loglikelihood,
)
from failtune.validation.forgetting import TrainingInfo, mark_forgetting, training_info
from failtune.validation.overlap import overlap_report
from failtune.validation.stats import paired_rates, paired_tables, pass_at_k_table

VALIDATION = "validation.json"
# The seed plan states its success criteria as shares ("wins ≥ 16 %"), so gates read these as rates.
GATE_ALIASES = {"wins": "win_rate", "losses": "loss_rate", "ties": "tie_rate"}
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
_GATE = re.compile(r"^\s*([\w-]+)\.(\w+)\s*(>=|<=|==|>|<)\s*(-?[\d.]+(?:e-?\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Gate:
    expr: str
    category: str
    metric: str
    op: str
    threshold: float


def parse_gate(expr: str) -> Gate:
    """`math.win_rate>=0.16`, `math.ties>=60%`, `overall.mcnemar_p<0.05`."""
    m = _GATE.match(expr)
    if not m:
        raise FailtuneError(
            f'cannot read gate {expr!r}; write it like "math.win_rate>=0.16" or "math.ties>=60%"'
        )
    category, metric, op, number, percent = m.groups()
    category = CATEGORY_ALIASES.get(category, category)
    threshold = float(number) / (100 if percent else 1)
    return Gate(expr, category, GATE_ALIASES.get(metric, metric), op, threshold)


def check_gates(gates: Sequence[Gate], tables: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    results = []
    for g in gates:
        if g.category not in tables:
            raise FailtuneError(
                f"gate {g.expr!r} names category {g.category!r}, but only "
                f"{', '.join(tables)} were validated"
            )
        value = tables[g.category].get(g.metric)
        if not isinstance(value, int | float):
            names = ", ".join(
                k for k, v in tables[g.category].items() if isinstance(v, int | float)
            )
            raise FailtuneError(f"gate {g.expr!r}: unknown metric {g.metric!r} (known: {names})")
        results.append({"expr": g.expr, "value": value, "passed": _OPS[g.op](value, g.threshold)})
    return results


@dataclass
class ValidationResult:
    output_dir: Path
    categories: dict[str, dict[str, Any]]
    gates: list[dict[str, Any]]
    unpaired: int
    overlap: dict[str, Any] | None = None
    judge: dict[str, Any] | None = None  # the judge's W/T/L, with --judge-url

    @property
    def passed(self) -> bool:
        return all(g["passed"] for g in self.gates)


def _category_of_id(problem_id: str) -> str:
    task = problem_id.split("/", 1)[0]
    return TASKS[task].category if task in TASKS else task


def validate(
    base: str | Backend | None = None,
    candidate: str | Backend | None = None,
    *,
    options: ValidateOptions | None = None,
    task_options: TaskOptions | None = None,
    server: Mapping[str, Any] | None = None,
    training: TrainingInfo | None = None,
    show_progress: bool = True,
    **overrides: Any,
) -> ValidationResult:
    """Grade base and candidate on the same held-out problems and compare them pair by pair.

    Each side is either a model (hub id, folder, GGUF, LoRA adapter, or an opened Backend) or a
    completions file; the graded results are kept under `output_dir/base` and `output_dir/candidate`
    and a rerun resumes them. `options` (failtune.config.options.ValidateOptions; its fields may
    also be given as keywords) holds the rest; `task_options` and `server` add constructor and
    connection arguments, as for extract. Categories the candidate was not trained on (its
    failtune_train.json, or `trained_categories`) are reported as forgetting checks; the training
    instructions (from that record, or the `train_data` glob) are checked for 13-gram overlap with
    the evaluation prompts (failtune.validation.forgetting, failtune.validation.overlap). `against`
    compares the candidate with a reference model's completions file instead of the base;
    `judge_url`/`judge_model` also ask an OpenAI-compatible judge which answer of each pair is
    better (gates can use `judge.*`).
    `training` says what an opened candidate (a Backend, which has no training record to read)
    was trained on.
    """
    o = build(ValidateOptions, options, overrides)
    categories = with_custom(o.categories, o.task_file, "math")
    task_options = o.task_options(task_options)
    base_completions = _check_request(base, o)
    if any(isinstance(m, str) for m in (base, candidate)):
        check_scoring(o.backend, scores_loglikelihood([categories], task_options))
    parsed_gates = [parse_gate(g) for g in o.gates]  # fail on a typo before any model loads
    started, t0 = now(), time.perf_counter()
    out = output_folder(o.output_dir)
    sources = {"base": (base, base_completions), "candidate": (candidate, o.candidate_completions)}
    inputs = {
        name: _side_input(name, model, file, categories, o, task_options)
        for name, (model, file) in sources.items()
    }
    # Started now: code that cannot be sandboxed is refused before a model loads.
    sandbox = sandbox_of(t for problems, _ in inputs.values() for t, _ in problems)
    trained = training or training_info(candidate, o.trained_categories, o.train_data)
    overlap = _check_overlap(trained, inputs, o.allow_overlap)
    open_model = functools.partial(
        load_backend,
        backend=o.backend,
        dtype=o.dtype,
        device=o.device,
        batch_size=o.batch_size,
        base=base if isinstance(base, str) else None,
        server={**o.server(), **(server or {})},
        **o.engine(),
    )
    sides, samples, seconds = _grade_sides(inputs, out, open_model, o, show_progress)
    tables = paired_tables(
        sides["base"], sides["candidate"], _category_of_id, n_boot=o.n_boot, seed=o.seed
    )
    mark_forgetting(tables, trained.categories)
    if len(samples) == 2:
        for category, table in sampled_tables(samples, o.n_boot, o.seed).items():
            tables.setdefault(category, {})["sampled"] = table
    judged = None
    if o.judge_url and o.judge_model:
        judged = _judge(o, sides["base"], sides["candidate"], out, show_progress)
    gate_results = check_gates(parsed_gates, {**tables, **({"judge": judged} if judged else {})})
    unpaired = len(set(sides["base"]) ^ set(sides["candidate"]))
    _write_validation(out, tables, gate_results, unpaired, trained, overlap, o.against, judged)
    args = {
        "base": _describe(base, base_completions),
        "candidate": _describe(candidate, o.candidate_completions),
        **record(o),
        "categories": categories,
        "trained_categories": trained.categories,
        "train_files": [str(f) for f in trained.files],
    }
    problems = [p for side_problems, _ in inputs.values() for p in side_problems]
    extra = {"holdout": holdouts(problems, o.holdout_fraction), "started": started}
    if trained.adapter is not None:  # the report draws its training curve
        extra["candidate_adapter"] = str(trained.adapter)
    _write_manifest(out, args, extra, sandbox, time.perf_counter() - t0, seconds)
    return ValidationResult(out, tables, gate_results, unpaired, overlap, judged)


# A side to grade: its problems and either its completions (read from a file) or its model.
SideInput = tuple[list[tuple[Task, Problem]], Mapping[str, Completion] | str | Backend]


def _check_request(base: str | Backend | None, o: ValidateOptions) -> str | Path | None:
    """Refuse contradictory or unsafe requests before any work; returns the base's completions
    file (the reference's, with `against`)."""
    base_completions = o.base_completions
    if o.against is not None:
        if base is not None or base_completions is not None:
            raise FailtuneError("give either --against (a reference's completions) or a base")
        base_completions = o.against
    if bool(o.judge_url) != bool(o.judge_model):
        raise FailtuneError("--judge-url and --judge-model go together")
    if o.split == "train" and not o.allow_train_split:
        raise FailtuneError(
            "refusing to validate on the train split: failures were extracted from it, so a gain "
            "there measures memorisation; use --split test, or --allow-train-split to force it"
        )
    return base_completions


def _side_input(
    name: str,
    model: str | Backend | None,
    completions: str | Path | None,
    categories: str | list[str],
    o: ValidateOptions,
    task_options: TaskOptions | None,
) -> SideInput:
    """A side's problems with its completions file (read now) or its model (opened later)."""
    if completions is not None:
        given, problems = read_completions(Path(completions), task_options)
        return problems, given
    if model is None:
        raise FailtuneError(f"give --{name} (a model) or --{name}-completions (a file)")
    problems = load_problems(categories, o.split, o.limit, task_options, o.holdout_fraction)
    return problems, model


def _grade_sides(
    inputs: Mapping[str, SideInput],
    out: Path,
    open_model: Callable[[str], Backend],
    o: ValidateOptions,
    show_progress: bool,
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, list[dict[str, Any]]], dict[str, float]]:
    """Each side's greedy records by id and sampled records (a model side, with --samples)
    under out/<side> (resumable), and the seconds each took."""
    sides: dict[str, dict[str, dict[str, Any]]] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    generation = {"max_new_tokens": o.max_new_tokens, "stop": tuple(o.stop)}
    sampling = o.sampling()
    for name, (problems, source) in inputs.items():
        t_side = time.perf_counter()
        if isinstance(source, Mapping):  # a completions file, read before any model loads
            records = evaluate(problems, out / name, completions=source)
        else:
            backend = open_model(source) if isinstance(source, str) else source
            records = evaluate(
                problems,
                out / name,
                backend=backend,
                resume=o.resume,
                show_progress=show_progress,
                label=name,
                **generation,
            )
            if sampling:
                samples[name] = sample(
                    problems,
                    out / name,
                    backend,
                    sampling,
                    show_progress=show_progress,
                    label=f"{name} samples",
                    **generation,
                )
        sides[name] = {r["id"]: r for r in records}
        seconds[name] = time.perf_counter() - t_side
    return sides, samples, seconds


def sampled_tables(
    samples: Mapping[str, Sequence[Mapping[str, Any]]], n_boot: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Per category, from both sides' samples of the same problems: pass@k of each side and the
    paired change in per-problem success rate."""
    counts: dict[str, dict[str, list[int]]] = {}  # side → id → [samples, right]
    for side, rows in samples.items():
        for r in rows:
            tally = counts.setdefault(side, {}).setdefault(r["id"], [0, 0])
            tally[0] += 1
            tally[1] += bool(r["correct"])
    base, candidate = counts.get("base", {}), counts.get("candidate", {})
    by_category: dict[str, list[str]] = {}
    for pid in sorted(set(base) & set(candidate)):
        by_category.setdefault(_category_of_id(pid), []).append(pid)
    tables = {}
    for category, ids in by_category.items():
        tables[category] = {
            "samples": min(min(base[i][0], candidate[i][0]) for i in ids),
            "base_pass_at_k": pass_at_k_table([base[i][0] for i in ids], [base[i][1] for i in ids]),
            "candidate_pass_at_k": pass_at_k_table(
                [candidate[i][0] for i in ids], [candidate[i][1] for i in ids]
            ),
            "success_rate": paired_rates(
                [base[i][1] / base[i][0] for i in ids],
                [candidate[i][1] / candidate[i][0] for i in ids],
                n_boot=n_boot,
                seed=seed,
            ),
        }
    return tables


def _write_validation(
    out: Path,
    tables: dict[str, dict[str, Any]],
    gate_results: list[dict[str, Any]],
    unpaired: int,
    trained: TrainingInfo,
    overlap: dict[str, Any] | None,
    against: str | Path | None,
    judged: dict[str, Any] | None,
) -> None:
    body: dict[str, Any] = {
        "categories": tables,
        "gates": gate_results,
        "unpaired_ids": unpaired,
        "trained_categories": trained.categories,
        "overlap": overlap,
    }
    if against is not None:
        body["baseline"] = f"reference:{against}"
    if judged:
        body["judge"] = judged
    atomic_write_json(out / VALIDATION, body)


def _write_manifest(
    out: Path,
    args: dict[str, Any],
    extra: dict[str, Any],
    sandbox: dict[str, Any] | None,
    wall_seconds: float,
    seconds: Mapping[str, float],
) -> None:
    """The manifest: arguments, held-out cuts, sandbox, the time taken in all and per side."""
    write_manifest(
        out,
        "validate",
        args,
        **extra,
        finished=now(),
        **({"sandbox": sandbox} if sandbox else {}),
        cost={
            "wall_seconds": round(wall_seconds, 2),
            "per_side_seconds": {k: round(v, 2) for k, v in seconds.items()},
        },
    )


def _check_overlap(
    trained: TrainingInfo,
    inputs: Mapping[str, SideInput],
    allow_overlap: bool,
) -> dict[str, Any] | None:
    """The 13-gram report; eval prompts that are exactly training instructions are refused."""
    if not trained.files:
        return None
    prompts = {
        p.id: (p.id, t.category, p.prompt) for problems, _ in inputs.values() for t, p in problems
    }
    report, exact = overlap_report(trained.instructions(), list(prompts.values()))
    if exact and not allow_overlap:
        raise FailtuneError(
            f"{len(exact)} evaluation problems (e.g. {', '.join(exact[:3])}) are exactly "
            "training instructions of the candidate, so validating on them measures "
            "memorisation; validate on other problems, or force it with --allow-overlap"
        )
    return {
        "train_files": [str(f) for f in trained.files],
        "categories": report,
        "exact_ids": exact,
    }


def _judge(
    o: ValidateOptions,
    base: Mapping[str, dict[str, Any]],
    candidate: Mapping[str, dict[str, Any]],
    out: Path,
    show_progress: bool,
) -> dict[str, Any]:
    from failtune.validation.judge import Judge, Pair, judge_pairs

    judge = Judge(
        str(o.judge_url),
        str(o.judge_model),
        max_concurrency=o.judge_max_concurrency,
        verdict_format=o.judge_format,
    )
    pairs = [
        Pair(i, candidate[i]["prompt"], candidate[i]["completion"], base[i]["completion"])
        for i in candidate
        if i in base
    ]
    return judge_pairs(judge, pairs, out, show_progress=show_progress)


def _describe(model: str | Backend | None, completions: str | Path | None) -> str | None:
    if completions is not None:
        return f"completions:{completions}"
    if model is None or isinstance(model, str):
        return model
    return model.info.model

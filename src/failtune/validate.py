"""Validate: base vs candidate on identical held-out problems, paired, with gates."""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failtune.backends import Backend, load_backend
from failtune.errors import FailtuneError
from failtune.extract import evaluate, holdouts, load_problems, read_completions
from failtune.files import atomic_write_json
from failtune.forgetting import TrainingInfo, mark_forgetting, training_info
from failtune.manifest import now, write_manifest
from failtune.options import ValidateOptions, build, record, with_custom
from failtune.overlap import overlap_report
from failtune.stats import bootstrap_delta_ci, mcnemar_exact
from failtune.tasks import CATEGORY_ALIASES, TASKS, Problem, Task, TaskOptions, sandbox_of

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


def compare(
    base: Sequence[bool], candidate: Sequence[bool], *, n_boot: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """The paired table for one group of problems (same order in both sequences)."""
    n = len(base)
    wins = sum(c and not b for b, c in zip(base, candidate, strict=True))
    losses = sum(b and not c for b, c in zip(base, candidate, strict=True))
    ties_correct = sum(b and c for b, c in zip(base, candidate, strict=True))
    ties = n - wins - losses
    base_acc, cand_acc = sum(base) / n, sum(candidate) / n
    low, high = bootstrap_delta_ci(wins, losses, n, n_boot=n_boot, seed=seed)
    return {
        "n": n,
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "ties_correct": ties_correct,
        "ties_wrong": ties - ties_correct,
        "win_rate": wins / n,
        "loss_rate": losses / n,
        "tie_rate": ties / n,
        "base_accuracy": base_acc,
        "candidate_accuracy": cand_acc,
        "base_failure_rate": 1 - base_acc,
        "candidate_failure_rate": 1 - cand_acc,
        "delta": cand_acc - base_acc,
        "mcnemar_p": mcnemar_exact(wins, losses),
        "delta_ci95": [low, high],
        # The CI ends as numbers, so a gate can bound forgetting: "creativity.delta_ci_low>-0.05".
        "delta_ci_low": low,
        "delta_ci_high": high,
    }


def paired_tables(
    base: Mapping[str, dict[str, Any]],
    candidate: Mapping[str, dict[str, Any]],
    category_of: Callable[[str], str],
    *,
    n_boot: int = 10_000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per category tables over the ids both sides graded, plus `overall` when several."""
    ids = [i for i in base if i in candidate]
    if not ids:
        raise FailtuneError("base and candidate share no problem ids; nothing to compare")
    groups: dict[str, list[str]] = {}
    for i in ids:
        groups.setdefault(category_of(i), []).append(i)
    if len(groups) > 1:
        groups["overall"] = ids
    return {
        cat: compare(
            [base[i]["correct"] for i in g],
            [candidate[i]["correct"] for i in g],
            n_boot=n_boot,
            seed=seed,
        )
        for cat, g in groups.items()
    }


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
    options: ValidateOptions | None = None,
    *,
    task_options: TaskOptions | None = None,
    server: Mapping[str, Any] | None = None,
    show_progress: bool = True,
    **overrides: Any,
) -> ValidationResult:
    """Grade base and candidate on the same held-out problems and compare them pair by pair.

    Each side is either a model (hub id, folder, GGUF, LoRA adapter, or an opened Backend) or a
    completions file; the graded results are kept under `output_dir/base` and
    `output_dir/candidate` and a rerun resumes them. `options` (failtune.options.ValidateOptions;
    its fields may also be given as keywords) holds the rest; `task_options` and `server` add
    constructor and connection arguments, as for extract. Categories the candidate was not
    trained on (its failtune_train.json, or `trained_categories`) are reported as forgetting
    checks; the training instructions (from that record, or the `train_data` glob) are checked
    for 13-gram overlap with the evaluation prompts (failtune.forgetting, failtune.overlap).
    `against` compares the candidate with a reference model's completions file instead of the
    base; `judge_url`/`judge_model` also ask an OpenAI-compatible judge which answer of each
    pair is better (gates can use `judge.*`).
    """
    o = build(ValidateOptions, options, overrides)
    categories = with_custom(o.categories, o.task_file, "math")
    output_dir, split, limit, gates = o.output_dir, o.split, o.limit, o.gates
    base_completions, candidate_completions = o.base_completions, o.candidate_completions
    against, judge_url, judge_model = o.against, o.judge_url, o.judge_model
    allow_train_split, allow_overlap, resume = o.allow_train_split, o.allow_overlap, o.resume
    batch_size, max_new_tokens, stop = o.batch_size, o.max_new_tokens, tuple(o.stop)
    backend, dtype, device, n_boot, seed = o.backend, o.dtype, o.device, o.n_boot, o.seed
    holdout_fraction, trained_categories, train_data = (
        o.holdout_fraction,
        o.trained_categories,
        o.train_data,
    )
    task_options = o.task_options(task_options)
    server, engine_options = {**o.server(), **(server or {})}, o.engine()
    if against is not None:
        if base is not None or base_completions is not None:
            raise FailtuneError("give either --against (a reference's completions) or a base")
        base_completions = against
    if bool(judge_url) != bool(judge_model):
        raise FailtuneError("--judge-url and --judge-model go together")
    parsed_gates = [parse_gate(g) for g in gates]  # fail on a typo before any model loads
    if split == "train" and not allow_train_split:
        raise FailtuneError(
            "refusing to validate on the train split: failures were extracted from it, so a gain "
            "there measures memorisation; use --split test, or --allow-train-split to force it"
        )
    started, t0 = now(), time.perf_counter()
    out = Path(output_dir)
    inputs: dict[str, tuple[list[tuple[Task, Problem]], Any]] = {}
    for name, model, completions in (
        ("base", base, base_completions),
        ("candidate", candidate, candidate_completions),
    ):
        if completions is not None:
            given, problems = read_completions(Path(completions), task_options)
            inputs[name] = (problems, given)
        elif model is not None:
            problems = load_problems(categories, split, limit, task_options, holdout_fraction)
            inputs[name] = (problems, model)
        else:
            raise FailtuneError(f"give --{name} (a model) or --{name}-completions (a file)")
    # Started now: code that cannot be sandboxed is refused before a model loads.
    sandbox = sandbox_of(t for problems, _ in inputs.values() for t, _ in problems)
    trained = training_info(candidate, trained_categories, train_data)
    overlap = _check_overlap(trained, inputs, allow_overlap)
    sides: dict[str, dict[str, dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    for name, (problems, source) in inputs.items():
        t_side = time.perf_counter()
        if isinstance(source, Mapping):  # a completions file, read above
            records = evaluate(problems, out / name, completions=source)
        else:
            opened = (
                source
                if not isinstance(source, str)
                else load_backend(
                    source,
                    backend=backend,
                    dtype=dtype,
                    device=device,
                    batch_size=batch_size,
                    base=base if isinstance(base, str) else None,
                    server=server,
                    **(engine_options or {}),
                )
            )
            records = evaluate(
                problems,
                out / name,
                backend=opened,
                max_new_tokens=max_new_tokens,
                stop=stop,
                resume=resume,
                show_progress=show_progress,
                label=name,
            )
        sides[name] = {r["id"]: r for r in records}
        seconds[name] = time.perf_counter() - t_side
    unpaired = len(set(sides["base"]) ^ set(sides["candidate"]))
    tables = paired_tables(
        sides["base"], sides["candidate"], _category_of_id, n_boot=n_boot, seed=seed
    )
    mark_forgetting(tables, trained.categories)
    judged = None
    if judge_url and judge_model:
        judged = _judge(
            judge_url, judge_model, sides["base"], sides["candidate"], out, show_progress
        )
    gate_results = check_gates(parsed_gates, {**tables, **({"judge": judged} if judged else {})})
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
    write_manifest(
        out,
        "validate",
        {
            "base": _describe(base, base_completions),
            "candidate": _describe(candidate, candidate_completions),
            **record(o),
            "categories": categories,
            "trained_categories": trained.categories,
            "train_files": [str(f) for f in trained.files],
        },
        holdout=holdouts(
            [p for problems, _ in inputs.values() for p in problems], holdout_fraction
        ),
        started=started,
        finished=now(),
        **({"sandbox": sandbox} if sandbox else {}),
        cost={
            "wall_seconds": round(time.perf_counter() - t0, 2),
            "per_side_seconds": {k: round(v, 2) for k, v in seconds.items()},
        },
    )
    return ValidationResult(out, tables, gate_results, unpaired, overlap, judged)


def _check_overlap(
    trained: TrainingInfo,
    inputs: Mapping[str, tuple[list[tuple[Task, Problem]], Any]],
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
    url: str,
    model: str,
    base: Mapping[str, dict[str, Any]],
    candidate: Mapping[str, dict[str, Any]],
    out: Path,
    show_progress: bool,
) -> dict[str, Any]:
    from failtune.judge import Judge, Pair, judge_pairs

    pairs = [
        Pair(i, candidate[i]["prompt"], candidate[i]["completion"], base[i]["completion"])
        for i in candidate
        if i in base
    ]
    return judge_pairs(Judge(url, model), pairs, out, show_progress=show_progress)


def _describe(model: str | Backend | None, completions: str | Path | None) -> str | None:
    if completions is not None:
        return f"completions:{completions}"
    if model is None or isinstance(model, str):
        return model
    return model.info.model

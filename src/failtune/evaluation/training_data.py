"""What the failures of an extract train on: their targets, and the training files.

A failure's target is the dataset's solution, the model's own verified samples or a rationale it
wrote with the correct answer as a hint (failtune.evaluation.targets decides which). Extract
writes the files at once; a `failtune run` with other targets than the reference makes them in a
step of their own from the extract's records (`retarget`), so changing the targets keeps the
samples that were paid for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failtune.backends import Backend
from failtune.config.options import ExtractOptions
from failtune.evaluation.records import (
    RESULTS,
    evaluate,
    greedy_records,
    problems_of,
    sampled_records,
)
from failtune.evaluation.targets import (
    ProblemReach,
    Target,
    all_targets,
    hint_problem,
    needs_rationale,
    pass_at_k_by_category,
    reach_map,
    reach_summary,
    target_counts,
)
from failtune.files import atomic_write_jsonl, read_jsonl
from failtune.manifest import now, write_manifest
from failtune.tasks import Problem, Task, TaskOptions

TRAINING_SUFFIX = "_training_ready.jsonl"
REPLAY_SUFFIX = "_replay.jsonl"  # problems already solved: replay data against forgetting
# Beside each training file, line by line: where that line came from (reference / self /
# rationalized, the problem id, the sample index), so the file itself stays instruction/output.
PROVENANCE_SUFFIX = "_training_provenance.jsonl"
RATIONALES = "rationales"  # the folder of the answers asked for with the correct one as a hint
RL_PROMPTS_SUFFIX = "_rl_prompts.jsonl"  # TRL's and OpenRLHF's prompt dataset
VERL_SUFFIX = "_verl.parquet"


@dataclass
class Found:
    """What an extract found: greedy records, the reach map (with samples) and the targets."""

    records: list[dict[str, Any]]
    reach: Mapping[str, ProblemReach]
    targets: Mapping[str, Sequence[Target]]
    sampled: bool

    def reach_summary(self) -> dict[str, dict[str, Any]]:
        return reach_summary(self.reach) if self.sampled else {}

    def pass_at_k(self) -> dict[str, dict[int, dict[str, float]]]:
        return pass_at_k_by_category(self.reach) if self.sampled else {}

    def within_reach(self) -> list[str]:
        """The failures RL can learn from: near ones (with samples), else every failure."""
        wanted = ("near",) if self.sampled else ("near", "out_of_reach")
        return [pid for pid, r in self.reach.items() if r.kind in wanted]

    def counts(self) -> dict[str, int]:
        return target_counts(self.targets)

    def record(self, kind: str) -> dict[str, Any]:
        """The manifest's keys: the reach map and pass@k (with samples), the targets made."""
        found: dict[str, Any] = {"targets": {"kind": kind, **self.counts()}}
        if self.sampled:
            found |= {"reach": self.reach_summary(), "pass_at_k": self.pass_at_k()}
        return found


def find_targets(
    problems: list[tuple[Task, Problem]],
    records: list[dict[str, Any]],
    sampled: Sequence[Mapping[str, Any]],
    o: ExtractOptions,
    model: Backend | None,
    out: Path,
    *,
    show_progress: bool,
) -> Found:
    """The reach map of the greedy records and each failure's targets under `o.targets`,
    asking `model` for rationales where they are needed (in out/rationales, resumably)."""
    reach = reach_map(records, sampled, {t.name: t.category for t, _ in problems})
    rationales: list[dict[str, Any]] = []
    if model is not None:
        rationales = _rationalize(problems, reach, sampled, o, model, out, show_progress)
    targets = all_targets(
        [p for _, p in problems], reach, o.targets, sampled, rationales, o.per_problem
    )
    return Found(records, reach, targets, bool(sampled))


def _rationalize(
    problems: list[tuple[Task, Problem]],
    reach: Mapping[str, ProblemReach],
    sampled: Sequence[Mapping[str, Any]],
    o: ExtractOptions,
    model: Backend,
    out: Path,
    show_progress: bool,
) -> list[dict[str, Any]]:
    """STaR's rationalization: each failure that needs one asked again (greedily) with its
    correct answer as a hint, graded as usual; kept in their own resumable results folder."""
    by_problem: dict[str, list[Mapping[str, Any]]] = {}
    for r in sampled:
        by_problem.setdefault(r["id"], []).append(r)
    hinted = [
        (t, hint_problem(p))
        for t, p in problems
        if p.id in reach
        and needs_rationale(o.targets, reach[p.id], by_problem.get(p.id, ()))
        and t.choice_requests(p) is None
    ]
    if not hinted:
        return []
    return evaluate(
        hinted,
        out / RATIONALES,
        backend=model,
        max_new_tokens=o.max_new_tokens,
        stop=tuple(o.stop),
        resume=o.resume,
        show_progress=show_progress,
        label="rationalize",
    )


def retarget(
    extracted: Path,
    out: Path,
    o: ExtractOptions,
    model: Backend | None,
    task_options: TaskOptions | None = None,
    *,
    show_progress: bool = True,
) -> Found:
    """A run's targets step: the training files of an extract folder's records under
    `o.targets`, written to `out` with a manifest of what was made."""
    started, t0 = now(), time.perf_counter()
    rows = list(read_jsonl(extracted / RESULTS))
    records, sampled = greedy_records(rows), sampled_records(rows)
    problems = problems_of([r["id"] for r in records], extracted / RESULTS, task_options)
    out.mkdir(parents=True, exist_ok=True)
    found = find_targets(problems, records, sampled, o, model, out, show_progress=show_progress)
    files = write_training_files(problems, records, out, found.targets)
    write_manifest(
        out,
        "targets",
        {"extracted": str(extracted), "targets": o.targets, "per_problem": o.per_problem},
        status="done",
        started=started,
        finished=now(),
        training_files={c: str(p) for c, p in files.items()},
        **found.record(o.targets),
        cost={"wall_seconds": round(time.perf_counter() - t0, 2)},
    )
    return found


def write_training_files(
    problems: list[tuple[Task, Problem]],
    records: list[dict[str, Any]],
    output_dir: Path,
    targets: Mapping[str, Sequence[Target]] | None = None,
) -> dict[str, Path]:
    """The training lines of every failure, per category, in dataset order: `targets[id]`, or
    else one line with the dataset's solution. Their provenance goes line by line to the side
    file.

    The problems the model already solves go to `<category>_replay.jsonl` in the same format
    (with the dataset's solution), for `train --replay` to fight forgetting.
    """
    correct = {r["id"]: r["correct"] for r in records}
    per_category: dict[str, tuple[list[Target], list[dict[str, str]]]] = {}
    for task, problem in problems:
        failed, solved = per_category.setdefault(task.category, ([], []))
        if problem.id not in correct:
            continue
        if correct[problem.id]:
            solved.append({"instruction": problem.prompt, "output": problem.solution})
        elif targets is None:
            failed.append(Target(problem.prompt, problem.solution, "reference", problem.id))
        else:
            failed.extend(targets.get(problem.id, ()))
    paths = {}
    for category, (failed, solved) in per_category.items():
        path = output_dir / f"{category}{TRAINING_SUFFIX}"
        atomic_write_jsonl(path, [t.row() for t in failed])
        atomic_write_jsonl(
            output_dir / f"{category}{PROVENANCE_SUFFIX}", [t.provenance() for t in failed]
        )
        atomic_write_jsonl(output_dir / f"{category}{REPLAY_SUFFIX}", solved)
        paths[category] = path
    return paths


def write_rl_datasets(
    problems: list[tuple[Task, Problem]], found: Found, output_dir: Path
) -> dict[str, list[Path]]:
    """Per category, the failures within reach as TRL's (and OpenRLHF's) prompt dataset and as
    verl's parquet, for a user who trains with those engines (failtune.rewards grades them)."""
    from failtune.rewards.datasets import write_prompt_dataset, write_verl_dataset

    wanted = set(found.within_reach())
    per_category: dict[str, list[tuple[Task, Problem]]] = {}
    for task, problem in problems:
        if problem.id in wanted:
            per_category.setdefault(task.category, []).append((task, problem))
    return {
        category: [
            write_prompt_dataset(chosen, output_dir / f"{category}{RL_PROMPTS_SUFFIX}"),
            write_verl_dataset(chosen, output_dir / f"{category}{VERL_SUFFIX}"),
        ]
        for category, chosen in per_category.items()
    }

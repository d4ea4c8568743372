"""Training targets by reach: which failures the model can reach, and what each one trains on.

Greedy decoding shows one answer per problem; K samples show which failures are within the
model's reach. A failure is *near* when at least one sample is right and *out of reach* when
none is. The target of a failure is then the dataset's solution (`reference`, the seed's
method), the model's own verified samples (`self`: rejection-sampling fine-tuning, RFT), a
rationale written with the gold answer as a hint and kept only when it reaches that answer on its
own (`rationalized`: STaR), or the best of those available (`auto`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from failtune.config.options import TARGETS
from failtune.tasks.base import Problem
from failtune.validation.stats import pass_at_k_table

SOLVED, NEAR, OUT_OF_REACH = "solved", "near", "out_of_reach"
REACH_KINDS = (SOLVED, NEAR, OUT_OF_REACH)

# The hint of a rationalization prompt (STaR): the gold answer, and the request not to quote it.
HINT = (
    "Hint: the correct final answer is {answer}. Work the problem out step by step so that your "
    "reasoning arrives at it on its own; do not mention this hint."
)
# A rationale that leans on the hint instead of reasoning to the answer is not kept.
_LEANS_ON_HINT = re.compile(
    r"\bhint\b|\bas (?:given|stated|provided|told)\b|\bthe given (?:final )?answer\b"
    r"|\b(?:we are|i am|we're|i'm|you are|you're) (?:told|given) (?:that )?the (?:final |correct )?"
    r"answer\b|\bthe (?:correct|final) answer (?:is|was) (?:given|provided|stated)\b"
    r"|\b(?:given|provided|stated) (?:correct |final )?answer\b",
    re.IGNORECASE,
)
# What two solutions share when they reason the same way: the numbers and operators they write,
# in order (as RFT deduplicates by the equations of a solution), else their words.
_CALC_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[-+*/×÷=^]")
_WORD = re.compile(r"[a-z]+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_CALCULATION = re.compile(
    r"\d\s*(?:[-+*/×÷^x=]|\bminus\b|\bplus\b|\btimes\b|\bdivided\b|\bmultiplied\b)\s*\$?\d",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ProblemReach:
    """One problem's greedy verdict and how many of its K samples were right."""

    id: str
    category: str
    greedy_correct: bool
    samples: int
    correct_samples: int

    @property
    def kind(self) -> str:
        if self.greedy_correct:
            return SOLVED
        return NEAR if self.correct_samples else OUT_OF_REACH


def reach_map(
    greedy: Iterable[Mapping[str, Any]],
    samples: Iterable[Mapping[str, Any]],
    category_of: Mapping[str, str],
) -> dict[str, ProblemReach]:
    """Each greedily graded problem's reach, from its greedy record and its sampled records."""
    counts: dict[str, list[int]] = {}
    for r in samples:
        seen = counts.setdefault(r["id"], [0, 0])
        seen[0] += 1
        seen[1] += bool(r["correct"])
    reach = {}
    for r in greedy:
        n, right = counts.get(r["id"], (0, 0))
        reach[r["id"]] = ProblemReach(r["id"], category_of[r["task"]], bool(r["correct"]), n, right)
    return reach


def reach_summary(
    reach: Mapping[str, ProblemReach], examples: int = 3
) -> dict[str, dict[str, Any]]:
    """Per category: how many problems are solved, near and out of reach, with example ids."""
    summary: dict[str, dict[str, Any]] = {}
    for r in reach.values():
        entry = summary.setdefault(
            r.category,
            {"n": 0, **{k: 0 for k in REACH_KINDS}, "examples": {k: [] for k in REACH_KINDS}},
        )
        entry["n"] += 1
        entry[r.kind] += 1
        if len(entry["examples"][r.kind]) < examples:
            entry["examples"][r.kind].append(r.id)
    for entry in summary.values():
        failures = entry[NEAR] + entry[OUT_OF_REACH]
        entry["near_share_of_failures"] = entry[NEAR] / failures if failures else None
    return summary


def reasoning_signature(text: str) -> tuple[str, ...]:
    """What makes two solutions the same reasoning: their calculations, or else their words.

    Whitespace, wording around the numbers and letter case do not make a solution new.
    """
    calc = tuple(t.replace(",", "") for t in _CALC_TOKEN.findall(text))
    return calc if calc else tuple(_WORD.findall(text.lower()))


def distinct_correct(records: Sequence[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
    """Up to `limit` correct sampled records of one problem, each reasoning differently."""
    kept, seen = [], set()
    for r in sorted(records, key=lambda r: r["sample"]):
        if not r["correct"]:
            continue
        signature = reasoning_signature(r["completion"])
        if signature in seen:
            continue
        seen.add(signature)
        kept.append(r)
        if len(kept) == limit:
            break
    return kept


def hint_problem(problem: Problem) -> Problem:
    """The problem as asked again with its gold answer as a hint (STaR's rationalization)."""
    hint = HINT.format(answer=problem.expected)
    return replace(problem, prompt=f"{problem.prompt}\n\n{hint}")


def leans_on_hint(text: str) -> bool:
    """A rationale that cites the hint ("as given, the answer is") instead of reasoning to it."""
    return bool(_LEANS_ON_HINT.search(text))


def shows_work(text: str, expected: str) -> bool:
    """A numeric answer's rationale must calculate something: "the answer is 30" after the
    hint is the hint repeated, not reasoning."""
    if not _NUMBER.fullmatch(expected.strip().replace(",", "")):
        return True
    return bool(_CALCULATION.search(text))


def usable_rationale(record: Mapping[str, Any]) -> bool:
    """A rationalization is kept only if graded right, not leaning on the hint, and (for a
    numeric answer) showing a calculation."""
    text = record["completion"]
    return (
        bool(record["correct"])
        and not leans_on_hint(text)
        and shows_work(text, str(record.get("expected", "")))
    )


@dataclass(frozen=True)
class Target:
    """One training line and where it came from (kept beside the training file)."""

    instruction: str
    output: str
    source: str  # "reference", "self" or "rationalized"
    id: str
    sample: int | None = None

    def row(self) -> dict[str, str]:
        return {"instruction": self.instruction, "output": self.output}

    def provenance(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "sample": self.sample}


def failure_targets(
    problem: Problem,
    kind: str,
    samples: Sequence[Mapping[str, Any]] = (),
    rationales: Sequence[Mapping[str, Any]] = (),
    per_problem: int = 4,
) -> list[Target]:
    """The training lines of one failed problem under target `kind` (one of TARGETS).

    `self` keeps up to `per_problem` distinct correct samples and nothing when there are none;
    `rationalized` keeps the first usable rationale, nothing without one; `auto` takes self,
    else rationalized, else the reference solution, so no failure goes untrained.
    """
    if kind not in TARGETS:
        raise ValueError(f"unknown target kind {kind!r}")
    reference = [Target(problem.prompt, problem.solution, "reference", problem.id)]
    if kind == "reference":
        return reference
    own = [
        Target(problem.prompt, r["completion"].strip(), "self", problem.id, r["sample"])
        for r in distinct_correct(samples, per_problem)
    ]
    rationale = [
        Target(problem.prompt, r["completion"].strip(), "rationalized", problem.id, r.get("sample"))
        for r in rationales
        if usable_rationale(r)
    ][:1]
    if kind == "self":
        return own
    if kind == "rationalized":
        return rationale
    return own or rationale or reference


def pass_at_k_by_category(
    reach: Mapping[str, ProblemReach],
) -> dict[str, dict[int, dict[str, float]]]:
    """pass@k for every k up to the fewest samples a problem of the category has, with CIs."""
    per_category: dict[str, list[ProblemReach]] = {}
    for r in reach.values():
        if r.samples:
            per_category.setdefault(r.category, []).append(r)
    return {
        category: pass_at_k_table([r.samples for r in rows], [r.correct_samples for r in rows])
        for category, rows in per_category.items()
    }


def needs_rationale(kind: str, reach: ProblemReach, samples: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a problem is asked again with the hint: a failure that `kind` would train on a
    rationale (auto: only where no sample of the model's own is right)."""
    if reach.kind == SOLVED or kind not in ("rationalized", "auto"):
        return False
    return kind == "rationalized" or not any(r["correct"] for r in samples)


def all_targets(
    problems: Sequence[Problem],
    reach: Mapping[str, ProblemReach],
    kind: str,
    samples: Iterable[Mapping[str, Any]] = (),
    rationales: Iterable[Mapping[str, Any]] = (),
    per_problem: int = 4,
) -> dict[str, list[Target]]:
    """Every failed problem's training lines under `kind`; a failure may get none (self,
    rationalized), which is counted, never filled in silently."""
    by_problem: dict[str, list[Mapping[str, Any]]] = {}
    for r in samples:
        by_problem.setdefault(r["id"], []).append(r)
    hinted: dict[str, list[Mapping[str, Any]]] = {}
    for r in rationales:
        hinted.setdefault(r["id"], []).append(r)
    return {
        p.id: failure_targets(p, kind, by_problem.get(p.id, ()), hinted.get(p.id, ()), per_problem)
        for p in problems
        if p.id in reach and reach[p.id].kind != SOLVED
    }


def target_counts(targets: Mapping[str, Sequence[Target]]) -> dict[str, int]:
    """Training lines per source, and the failures left without one."""
    counts = Counter(t.source for lines in targets.values() for t in lines)
    return {
        **{s: counts.get(s, 0) for s in ("reference", "self", "rationalized")},
        "failures": len(targets),
        "failures_without_target": sum(1 for lines in targets.values() if not lines),
    }

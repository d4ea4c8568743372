"""A deterministic train/held-out cut for tasks that ship no train split (MMLU, custom files).

Each problem goes to the held-out part by a stable hash (sha256) of its prompt text, never by
position or a random seed, so the cut is the same on every machine and release. Hashing the text
rather than the id keeps exact duplicates (MMLU has 27 in test) on the same side: no held-out
question is ever trained on through its twin. Within each stratum (the subject for MMLU), the
round(fraction * n) problems with the smallest hashes are held out, so every subject is
represented in the same proportion on both sides.
"""

from __future__ import annotations

import hashlib
from typing import Any

from failtune.errors import FailtuneError
from failtune.tasks.base import Problem, Task

DEFAULT_FRACTION = 0.2


def needs_holdout(task: Task) -> bool:
    return "train" not in task.splits and not task.maps_train_split


def source_split(task: Task) -> str:
    """The split both sides of the cut come from (the first listed, `test` for MMLU)."""
    return task.splits[0]


def split_problems(task: Task, split: str, fraction: float = DEFAULT_FRACTION) -> list[Problem]:
    """`train` = the part not held out, `test` = the held-out part; other splits as shipped."""
    if not 0 <= fraction <= 1:
        raise FailtuneError("--holdout-fraction must be between 0 and 1")
    if not needs_holdout(task) or split not in ("train", "test"):
        return task.load(split)
    problems = task.load(source_split(task))
    held = held_out_ids(task, problems, fraction)
    want_held = split == "test"
    return [p for p in problems if (p.id in held) == want_held]


def held_out_ids(task: Task, problems: list[Problem], fraction: float) -> set[str]:
    strata: dict[str, list[Problem]] = {}
    for p in problems:
        strata.setdefault(task.stratum(p), []).append(p)
    held: set[str] = set()
    for group in strata.values():
        ranked = sorted(group, key=lambda p: (_text_hash(p.prompt), p.id))
        cut = round(fraction * len(group))
        if 0 < cut < len(group):  # duplicates straddling the cut go wholly to held-out
            boundary = _text_hash(ranked[cut - 1].prompt)
            while cut < len(group) and _text_hash(ranked[cut].prompt) == boundary:
                cut += 1
        held.update(p.id for p in ranked[:cut])
    # The same text in two strata (a question filed under two subjects) is held out twice.
    held_texts = {p.prompt for p in problems if p.id in held}
    return {p.id for p in problems if p.prompt in held_texts}


def describe(task: Task, fraction: float) -> dict[str, Any] | None:
    """What the manifest records about the cut, so a run can be reproduced and audited."""
    if not needs_holdout(task):
        return None
    return {
        "source_split": source_split(task),
        "fraction": fraction,
        "method": "sha256 of the prompt text, smallest hashes held out per stratum",
        "train": "source split minus held-out",
        "test": "held-out part",
    }


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

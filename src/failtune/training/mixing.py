"""Combine several categories' training files (and replay data) into one training set.

`proportional` keeps every failure once, so a category weighs as much as it failed; `equal`
repeats the smaller files (whole passes, then a seeded sample) until each file gives as many
examples as the largest, so a category with few failures is not drowned out. Replay examples
(problems the model already solves, from extract's `<category>_replay.jsonl`) are added to make
up `replay_ratio` of the final set, to fight forgetting.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from failtune.errors import FailtuneError

MIXES = ("proportional", "equal")
Example = dict[str, str]


def category_of_file(path: Path) -> str:
    """`out/math_training_ready.jsonl` → math; any other file name → its stem."""
    for suffix in ("_training_ready.jsonl", "_replay.jsonl"):
        if path.name.endswith(suffix):
            return path.name.removesuffix(suffix)
    return path.stem


def mix_examples(
    per_file: dict[Path, list[Example]],
    mix: str = "proportional",
    replay: list[Example] | None = None,
    replay_ratio: float = 0.2,
    seed: int = 0,
) -> tuple[list[Example], dict[str, Any]]:
    """The combined, shuffled examples and a record of what went in (for failtune_train.json)."""
    if mix not in MIXES:
        raise FailtuneError(f"unknown --mix {mix!r} (choose from: {', '.join(MIXES)})")
    if not 0 <= replay_ratio < 1:
        raise FailtuneError("--replay-ratio must be at least 0 and below 1")
    rng = random.Random(seed)
    target = max((len(rows) for rows in per_file.values()), default=0)
    combined: list[Example] = []
    used: dict[str, int] = {}
    for path, rows in per_file.items():
        taken = _repeat(rows, target, rng) if mix == "equal" else list(rows)
        combined.extend(taken)
        used[str(path)] = len(taken)
    replayed = 0
    if replay:
        replayed = round(replay_ratio / (1 - replay_ratio) * len(combined))
        combined.extend(_repeat(replay, replayed, rng))
    rng.shuffle(combined)
    record = {
        "categories": sorted({category_of_file(p) for p in per_file}),
        "files": {str(p): len(rows) for p, rows in per_file.items()},
        "mix": mix,
        "examples_per_file": used,
        "replay_examples": replayed,
        "replay_ratio": replay_ratio if replay else 0.0,
        "examples": len(combined),
    }
    return combined, record


def _repeat(rows: list[Example], n: int, rng: random.Random) -> list[Example]:
    """`n` examples from `rows`: whole passes, then a seeded sample without repeats."""
    if not rows or n <= 0:
        return []
    whole, rest = divmod(n, len(rows))
    return rows * whole + rng.sample(rows, rest)

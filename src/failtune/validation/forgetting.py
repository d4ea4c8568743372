"""What a candidate was trained on, and the forgetting check on everything else.

`train` writes failtune_train.json beside the adapter with the categories and files it used.
Validate reads it to (1) mark each category table as trained or not: an untrained category is
a forgetting check, flagged when its accuracy change is significantly negative (the whole 95 %
CI below zero); (2) find the training instructions for the overlap check
(failtune.validation.overlap).
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failtune.errors import FailtuneError
from failtune.files import read_json, read_jsonl
from failtune.model_loading import TRAIN_META
from failtune.tasks import CATEGORY_ALIASES


@dataclass
class TrainingInfo:
    categories: list[str] | None = None  # None: unknown (no record, no flag)
    files: list[Path] = field(default_factory=list)
    adapter: Path | None = None  # the candidate's folder, when failtune trained it

    def instructions(self) -> Iterable[str]:
        """What the model was trained on: SFT rows' instruction, a prompt dataset's (GRPO)
        user message."""
        for path in self.files:
            for row in read_jsonl(path):
                text = row.get("instruction")
                if text is None and isinstance(row.get("prompt"), list):
                    users = [m for m in row["prompt"] if isinstance(m, dict)]
                    text = next((m.get("content") for m in users if m.get("role") == "user"), None)
                if isinstance(text, str):
                    yield text


def training_info(
    candidate: Any,
    trained_categories: Sequence[str] | str | None = None,
    train_data: str | None = None,
) -> TrainingInfo:
    """From the flags if given, else from the candidate adapter's failtune_train.json."""
    info = TrainingInfo()
    meta = Path(candidate) / TRAIN_META if isinstance(candidate, str | Path) else None
    if meta is not None and meta.is_file():
        record = read_json(meta)
        info.adapter = meta.parent.resolve()
        info.categories = record.get("categories")
        names = [*record.get("files", {}), *filter(None, [record.get("replay_file")])]
        info.files = [Path(f) for f in names if Path(f).is_file()]
    if trained_categories is not None:
        if isinstance(trained_categories, str):
            trained_categories = trained_categories.split(",")
        info.categories = [c.strip() for c in trained_categories if c.strip()]
    if train_data:
        info.files = sorted(Path(p) for p in glob.glob(train_data))
        if not info.files:
            raise FailtuneError(f"no training file matches --train-data {train_data}")
    if info.categories is not None:
        info.categories = [CATEGORY_ALIASES.get(c, c) for c in info.categories]
    return info


def mark_forgetting(tables: dict[str, dict[str, Any]], trained: Sequence[str] | None) -> None:
    """Add `trained` (bool, or None when unknown) and `forgetting` to every category table."""
    for category, table in tables.items():
        if category == "overall" or trained is None:
            table["trained"] = None
            table["forgetting"] = False
            continue
        table["trained"] = category in trained
        table["forgetting"] = not table["trained"] and table["delta_ci95"][1] < 0


def check_label(table: dict[str, Any]) -> str:
    """The check column of a category: trained, or a forgetting check that passed or failed
    ("" when it is not known what the candidate was trained on)."""
    trained = table.get("trained")
    if trained is None:
        return ""
    if trained:
        return "trained"
    return "FORGETTING" if table.get("forgetting") else "forgetting: ok"

"""The state of a run folder (run_state.json): each step's input hash, status and time.

A step is skipped when its recorded hash matches and its outputs exist, resumed when it was
interrupted, and redone when its inputs changed. Its recorded `seconds` are the sum of all its
attempts, so a run that was killed and resumed costs what it really took: an attempt stopped by
an exception or Ctrl-C records its own time on the way out; one killed outright is counted up
to the last file it wrote in its folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from failtune.files import atomic_write_json, read_json
from failtune.manifest import now


def input_hash(**inputs: Any) -> str:
    """A stable digest of a step's inputs (JSON with sorted keys)."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunState:
    """run_state.json of one folder: read once, saved after every change."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = read_json(path) if path.exists() else {}
        self.data.setdefault("steps", {})
        self.data["config"] = config
        self.data["rounds"] = []

    @property
    def steps(self) -> dict[str, dict[str, Any]]:
        return self.data["steps"]

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def is_done(self, name: str, digest: str, outputs: Sequence[Path]) -> bool:
        record = self.steps.get(name)
        return bool(
            record
            and record["status"] == "done"
            and record["hash"] == digest
            and all(p.exists() for p in outputs)
        )

    def changed(self, name: str, digest: str) -> bool | None:
        """True: recorded with other inputs; False: interrupted with these; None: never run."""
        record = self.steps.get(name)
        return None if record is None else record["hash"] != digest

    @contextmanager
    def attempt(self, name: str, digest: str, folders: Sequence[Path]) -> Iterator[None]:
        """Mark the step running for one attempt; the time of every earlier attempt with the
        same inputs is carried over into `earlier_seconds`."""
        record = self.steps.get(name)
        earlier = 0.0
        if record is not None and record["hash"] == digest and record["status"] == "running":
            earlier = record.get("earlier_seconds", 0.0) + _lost_attempt(record, folders)
        self.steps[name] = {
            "hash": digest,
            "status": "running",
            "started": now(),
            "earlier_seconds": round(earlier, 2),
        }
        self.save()
        t0 = time.perf_counter()
        try:
            yield
        except BaseException:  # Ctrl-C, SIGTERM, an error: the next attempt adds this one
            self.steps[name]["attempt_seconds"] = round(time.perf_counter() - t0, 2)
            self.save()
            raise

    def finish(self, name: str, info: dict[str, Any], attempt_seconds: float) -> dict[str, Any]:
        running = self.steps[name]
        earlier = running.get("earlier_seconds", 0.0)
        record = {
            "hash": running["hash"],
            "status": "done",
            "started": running["started"],
            "finished": now(),
            "seconds": round(earlier + attempt_seconds, 2),
            **({"earlier_seconds": earlier} if earlier else {}),
            **info,
        }
        self.steps[name] = record
        self.save()
        return record


def _lost_attempt(record: dict[str, Any], folders: Sequence[Path]) -> float:
    """How long an interrupted attempt ran: its own count when it could record one, else from
    its start to the newest file it wrote (a SIGKILL leaves no time to count)."""
    if "attempt_seconds" in record:
        return float(record["attempt_seconds"])
    started = datetime.fromisoformat(record["started"]).timestamp()
    written = [_newest(folder) for folder in folders if folder.exists()]
    return max([0.0, *(t - started for t in written)])


def _newest(folder: Path) -> float:
    latest = folder.stat().st_mtime
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                latest = max(latest, os.stat(os.path.join(root, name)).st_mtime)
            except FileNotFoundError:  # a checkpoint being rotated away
                continue
    return latest

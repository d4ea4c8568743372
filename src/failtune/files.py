"""Crash-safe file writing and strict JSONL reading.

Every output is either written atomically (temp file + rename) or appended line by line with a
flush, so a killed run loses at most the batch in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from failtune.errors import FailtuneError


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are meant to be shared
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


class JsonlAppender:
    """Append-only JSONL writer that flushes each batch to disk before returning."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_last_line(path)
        self._f = path.open("a", encoding="utf-8")

    def write_many(self, rows: Iterable[dict[str, Any]]) -> None:
        self._f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_partial_last_line(path: Path) -> None:
    """A run killed mid-write can leave half a line; cut it so appends stay valid JSONL."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with path.open("r+b") as f:
        f.truncate(cut)


def read_jsonl(path: Path, *, tolerate_partial_tail: bool = False) -> Iterator[dict[str, Any]]:
    """Yield objects from a JSONL file; a malformed line is a user error naming file and line.

    `tolerate_partial_tail` skips an unterminated last line, which is what a killed writer
    leaves behind in our own append-only files.
    """
    if not path.is_file():
        raise FailtuneError(f"file not found: {path}")
    with path.open(encoding="utf-8") as f:
        lines = f.readlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        is_tail = lineno == len(lines) and not line.endswith("\n")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if tolerate_partial_tail and is_tail:
                return
            raise FailtuneError(f"{path}: line {lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise FailtuneError(
                f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}"
            )
        yield obj


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

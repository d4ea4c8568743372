"""Crash-safe file writing and strict JSONL reading.

Every output is either written atomically (temp file + rename) or appended line by line with a
flush, so a killed run loses at most the batch in flight.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from failtune.errors import FailtuneError


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:  # a full disk: the old file stays as it was
        raise naming(e, path) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def naming(error: OSError, path: Path) -> OSError:
    """The same OS error, naming the file failtune meant to write rather than a temp file.

    A failed write() names no file at all; cli.main turns the error into one sentence with it.
    """
    return OSError(error.errno, error.strerror, str(path))


_DISK_FULL = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")


@contextlib.contextmanager
def writing_into(folder: Path) -> Iterator[None]:
    """Report a full disk met by a library writing into `folder` as the OSError cli.main explains.

    tokenizers and safetensors (Rust) and torch (C++) raise their own exception types, and
    torch's message does not even say why; a folder on a (nearly) full disk tells.
    """
    try:
        yield
    except FailtuneError:
        raise
    except OSError as e:
        raise (naming(e, folder) if e.filename is None else e) from None
    except Exception as e:
        if any(s in str(e).lower() for s in _DISK_FULL) or _nearly_full(folder):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder)) from e
        raise


def _nearly_full(folder: Path) -> bool:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    return shutil.disk_usage(existing).free < 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


class JsonlAppender:
    """Append-only JSONL writer: each batch reaches the disk whole, or not at all, before return.

    A batch that fails half-written (a full disk) is cut off again, so the file always ends
    with a whole line and a rerun resumes after the last batch that was saved.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        _repair_tail(path)
        self._f = path.open("ab", buffering=0)

    def write_many(self, rows: Iterable[dict[str, Any]]) -> None:
        data = memoryview("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
        start = os.fstat(self._f.fileno()).st_size
        try:
            while data:  # a write to a nearly full disk can be short
                data = data[self._f.write(data) :]
            os.fsync(self._f.fileno())
        except OSError as e:
            self._f.truncate(start)
            raise naming(e, self._path) from None

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _repair_tail(path: Path) -> None:
    """A run killed mid-write can leave a last line without its newline; make appends valid.

    A half line is cut; a whole record that only lacks the newline keeps it (read_jsonl
    already counted it as graded).
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with path.open("r+b") as f:
        if _is_object(data[cut:]):
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        else:
            f.truncate(cut)


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line.decode("utf-8")), dict)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both are
        return False


# Fields a record must have: name → (type, how the error message names that type).
Fields = Mapping[str, tuple[type, str]]


def read_jsonl(
    path: Path, *, tolerate_partial_tail: bool = False, require: Fields | None = None
) -> Iterator[dict[str, Any]]:
    """Yield objects from a JSONL file; a malformed line is a user error naming file and line.

    `tolerate_partial_tail` skips an unterminated last line, which is what a killed writer
    leaves behind in our own append-only files. `require` checks fields and their types.
    """
    lines = _read_bytes(path).splitlines(keepends=True)
    for lineno, raw in enumerate(lines, start=1):
        is_tail = lineno == len(lines) and not raw.endswith((b"\n", b"\r"))
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as e:
            if tolerate_partial_tail and is_tail:
                return
            raise FailtuneError(
                f"{path}: line {lineno} is not UTF-8 text (byte {e.start + 1} of the line); "
                "save the file as UTF-8"
            ) from None
        if not line.strip():
            continue
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
        for key, (kind, described) in (require or {}).items():
            if not isinstance(obj.get(key), kind):
                raise FailtuneError(f'{path}: line {lineno}: "{key}" must be {described}')
        yield obj


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file (manifest, run state, adapter record); damage is a user error."""
    try:
        obj = json.loads(_read_bytes(path).decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise FailtuneError(f"{path} is not UTF-8 text; was it edited or damaged?") from None
    except json.JSONDecodeError as e:
        raise FailtuneError(
            f"{path}: not valid JSON (line {e.lineno}: {e.msg}); was it edited or damaged?"
        ) from None
    if not isinstance(obj, dict):
        raise FailtuneError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise FailtuneError(f"{path} is a folder, not a file")
    if not path.is_file():
        raise FailtuneError(f"file not found: {path}")
    return path.read_bytes()


def output_folder(path: str | Path) -> Path:
    """Where a command writes: a file in the way fails at once, before any model loads."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise FailtuneError(f"{folder} is a file, not a folder: give a folder to write into")
    for parent in folder.parents:
        if parent.exists() and not parent.is_dir():
            raise FailtuneError(f"{parent} is a file, not a folder, so {folder} cannot be made")
    return folder


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

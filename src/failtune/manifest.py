"""Reproducibility record written beside every output: command, versions, data hashes, times."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from failtune.files import atomic_write_json, sha256_file

PACKAGES = ("failtune", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "gguf")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def data_hashes(paths: list[Path]) -> dict[str, str]:
    return {
        p.name if p.parent.name == "" else f"{p.parent.name}/{p.name}": sha256_file(p)
        for p in paths
    }


def write_manifest(output_dir: Path, step: str, args: dict[str, Any], **fields: Any) -> Path:
    """Write manifest.json for one step; `fields` adds model, counts, cost, timings."""
    body = {
        "step": step,
        "command": sys.argv,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()},
        "versions": package_versions(),
        "platform": platform.platform(),
        **fields,
    }
    path = output_dir / "manifest.json"
    atomic_write_json(path, body)
    return path

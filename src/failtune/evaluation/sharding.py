"""Merge the shards of a sharded extraction into exactly what one unsharded run writes.

`failtune extract --num-shards N --shard-index i` runs every N-th problem (see
extract.select_shard), so a job array can fan out; merging rebuilds the full problem list from
the shards' manifests, checks that every shard is there, finished, disjoint and made by the same
model on the same data, and writes results.jsonl, the training files and a manifest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from failtune.errors import FailtuneError
from failtune.evaluation.extraction import ExtractResult, select_shard
from failtune.evaluation.records import RESULTS, RESULTS_SOURCE, load_problems, summarize
from failtune.evaluation.training_data import write_training_files
from failtune.files import (
    atomic_write_json,
    atomic_write_jsonl,
    output_folder,
    read_json,
    read_jsonl,
)
from failtune.manifest import now, write_manifest

# Arguments that must agree between shards: they decide which problems exist and what is run.
_SAME_ARGS = ("categories", "split", "limit", "task_options", "max_new_tokens", "num_shards")


def merge(shard_dirs: Sequence[str | Path], output_dir: str | Path) -> ExtractResult:
    """Check the shards and write the merged results, training files and manifest."""
    started, t0 = now(), time.perf_counter()
    dirs = [Path(d) for d in shard_dirs]
    out = output_folder(output_dir)
    if not dirs:
        raise FailtuneError("give the output folders of the shards to merge")
    if any(d.resolve() == out.resolve() for d in dirs):
        raise FailtuneError(f"--output_dir {out} is one of the shards; merge into a new folder")
    manifests = [_shard_manifest(d) for d in dirs]
    first, num_shards = manifests[0], manifests[0]["sharding"]["num_shards"]
    for d, m in zip(dirs[1:], manifests[1:], strict=True):
        _check_same(dirs[0], first, d, m)
    by_index: dict[int, Path] = {}
    for d, m in zip(dirs, manifests, strict=True):
        index = m["sharding"]["shard_index"]
        if index in by_index:
            raise FailtuneError(f"{by_index[index]} and {d} are both shard {index}")
        by_index[index] = d
    missing = sorted(set(range(num_shards)) - set(by_index))
    if missing:
        raise FailtuneError(
            f"shard{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of "
            f"{num_shards} missing: give every shard's output folder"
        )
    args = first["args"]
    if args.get("samples") is not None or args.get("targets", "reference") != "reference":
        raise FailtuneError(
            "merge joins shards of greedy extracts with reference targets; these shards were "
            "sampled or made other targets, so run that extract unsharded"
        )
    problems = load_problems(
        args["categories"] or "math", args["split"], args["limit"], args["task_options"]
    )
    if len(problems) != first["sharding"]["problems_total"]:
        raise FailtuneError(
            f"the shards ran {first['sharding']['problems_total']} problems but this failtune "
            f"lists {len(problems)} for the same arguments; merge with the version that ran them"
        )
    records: dict[str, dict[str, Any]] = {}
    owner: dict[str, Path] = {}
    for index, d in sorted(by_index.items()):
        wanted = {p.id for _, p in select_shard(problems, num_shards, index)}
        found = _shard_records(d, wanted)
        for pid, record in found.items():
            if pid in records:
                raise FailtuneError(f"problem {pid} was graded in both {owner[pid]} and {d}")
            records[pid], owner[pid] = record, d
    ordered = [records[p.id] for _, p in problems]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out / RESULTS, ordered)
    atomic_write_json(out / RESULTS_SOURCE, {"model": first["source"].get("model")})
    summary = summarize(ordered, {t.name: t.category for t, _ in problems})
    training = write_training_files(problems, ordered, out)
    seconds = time.perf_counter() - t0
    write_manifest(
        out,
        "merge",
        {"shards": [str(by_index[i]) for i in range(num_shards)], "output_dir": out},
        status="done",
        source=first["source"],
        shard_args={k: v for k, v in args.items() if k not in ("output_dir", "shard_index")},
        data_sha256=first.get("data_sha256"),
        started=started,
        finished=now(),
        counts={c: {k: s[k] for k in ("n", "correct", "accuracy")} for c, s in summary.items()},
        summary=summary,
        completion_tokens=sum(r["completion_tokens"] or 0 for r in ordered),
        training_files={c: str(p) for c, p in training.items()},
        cost={
            "wall_seconds": round(seconds, 2),
            "shard_wall_seconds": [_wall_seconds(m) for m in sorted(manifests, key=_index)],
        },
    )
    return ExtractResult(out, ordered, summary, training, seconds)


def _shard_manifest(d: Path) -> dict[str, Any]:
    path = d / "manifest.json"
    if not path.is_file():
        raise FailtuneError(f"{d} holds no manifest.json: not the output folder of an extract")
    manifest = read_json(path)
    if manifest.get("step") != "extract" or "sharding" not in manifest:
        raise FailtuneError(f"{d} is not a shard (made without --num-shards); nothing to merge")
    return manifest


def _check_same(d0: Path, m0: dict[str, Any], d: Path, m: dict[str, Any]) -> None:
    """Shards of different models, splits, categories or data must never be mixed."""
    pairs = [("model", m0["source"].get("model"), m["source"].get("model"))]
    pairs += [(k, m0["args"].get(k), m["args"].get(k)) for k in _SAME_ARGS]
    pairs.append(("data (sha256)", m0.get("data_sha256"), m.get("data_sha256")))
    for name, a, b in pairs:
        if a != b:
            raise FailtuneError(f"the shards differ in {name}: {d0} has {a!r}, {d} has {b!r}")


def _shard_records(d: Path, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The shard's graded records; a gap means the shard did not finish."""
    path = d / RESULTS
    found: dict[str, dict[str, Any]] = {}
    for row in read_jsonl(path) if path.is_file() else ():
        if row.get("id") in found:
            raise FailtuneError(f"{path} holds problem {row['id']} twice")
        if row.get("id") in wanted:
            found[row["id"]] = row
    if len(found) < len(wanted):
        raise FailtuneError(
            f"shard {d} is incomplete ({len(found)} of {len(wanted)} problems graded); "
            "rerun its extract command to finish it"
        )
    return found


def _index(manifest: dict[str, Any]) -> int:
    return manifest["sharding"]["shard_index"]


def _wall_seconds(manifest: dict[str, Any]) -> float | None:
    return manifest.get("cost", {}).get("wall_seconds")

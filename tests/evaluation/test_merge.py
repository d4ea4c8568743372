"""Sharded extraction and `failtune merge`: shards 0..N-1 merged equal one unsharded run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import read_jsonl

from failtune.cli import main
from failtune.errors import FailtuneError
from failtune.evaluation.extraction import extract, select_shard
from failtune.evaluation.records import load_problems
from failtune.evaluation.sharding import merge

CATEGORIES, SPLIT, LIMIT = "math,arith", "test", 9  # 18 problems in two categories
PROBLEMS = load_problems(CATEGORIES, SPLIT, LIMIT)
SOLUTIONS = {p.prompt: p.solution for _, p in PROBLEMS}


def answer(prompt: str) -> str:
    """Right on about two thirds of the problems, wrong in two different ways on the rest."""
    kind = len(prompt) % 3
    return SOLUTIONS[prompt] if kind else "I think the answer is 1."


def run(out: Path, scripted, *, shards: int = 1, index: int = 0, **kw) -> None:
    extract(
        output_dir=out,
        categories=CATEGORIES,
        split=SPLIT,
        limit=LIMIT,
        model=kw.pop("model", None) or scripted(answer, batch_size=2),
        show_progress=False,
        num_shards=shards,
        shard_index=index,
        **kw,
    )


@pytest.fixture
def shards(tmp_path: Path, scripted) -> list[Path]:
    dirs = [tmp_path / f"shard{i}" for i in range(4)]
    for i, d in enumerate(dirs):
        run(d, scripted, shards=4, index=i)
    return dirs


def test_shards_are_disjoint_complete_and_balanced() -> None:
    parts = [select_shard(PROBLEMS, 4, i) for i in range(4)]
    ids = [p.id for part in parts for _, p in part]
    assert sorted(ids) == sorted(p.id for _, p in PROBLEMS)
    assert len(set(ids)) == len(ids)
    assert [len(part) for part in parts] == [5, 5, 4, 4]


def test_merged_shards_equal_an_unsharded_run(tmp_path: Path, scripted, shards) -> None:
    whole = tmp_path / "whole"
    run(whole, scripted)
    merged = tmp_path / "merged"
    assert main(["merge", *map(str, reversed(shards)), "--output_dir", str(merged)]) == 0

    merged_rows = read_jsonl(merged / "results.jsonl")
    assert [r["id"] for r in merged_rows] == [p.id for _, p in PROBLEMS]  # dataset order
    assert sorted(merged_rows, key=lambda r: r["id"]) == sorted(
        read_jsonl(whole / "results.jsonl"), key=lambda r: r["id"]
    )
    for name in ("math_training_ready.jsonl", "arith_training_ready.jsonl"):
        assert (merged / name).read_bytes() == (whole / name).read_bytes()
        assert read_jsonl(merged / name)  # the scripted model fails some of each
    manifest = json.loads((merged / "manifest.json").read_text())
    whole_manifest = json.loads((whole / "manifest.json").read_text())
    assert manifest["step"] == "merge" and manifest["status"] == "done"
    assert manifest["summary"] == whole_manifest["summary"]
    assert manifest["args"]["shards"] == [str(d) for d in shards]
    shard_manifest = json.loads((shards[2] / "manifest.json").read_text())
    assert shard_manifest["sharding"]["problems_total"] == 18
    assert shard_manifest["sharding"]["problems_in_shard"] == 4


def test_missing_duplicate_and_incomplete_shards_are_refused(
    tmp_path: Path, scripted, shards
) -> None:
    out = tmp_path / "merged"
    with pytest.raises(FailtuneError, match="shard 3 of 4 missing"):
        merge(shards[:3], out)
    twin = tmp_path / "twin"
    shutil.copytree(shards[1], twin)
    with pytest.raises(FailtuneError, match="are both shard 1"):
        merge([*shards, twin], out)
    dying = tmp_path / "dying"
    with pytest.raises(KeyboardInterrupt):
        dies = scripted(answer, batch_size=2, die_after_batches=1)
        run(dying, scripted, shards=4, index=0, model=dies)
    with pytest.raises(FailtuneError, match=r"dying is incomplete \(2 of 5"):
        merge([dying, *shards[1:]], out)
    with pytest.raises(FailtuneError, match="is one of the shards"):
        merge(shards, shards[0])
    assert not out.exists()


def test_different_models_or_splits_are_never_mixed(tmp_path: Path, scripted, shards) -> None:
    other = tmp_path / "other"
    run(other, scripted, shards=4, index=3, model=scripted(answer, model="another-model"))
    with pytest.raises(FailtuneError, match="differ in model"):
        merge([*shards[:3], other], tmp_path / "merged")
    six = tmp_path / "six"
    run(six, scripted, shards=6, index=3)
    with pytest.raises(FailtuneError, match="differ in num_shards"):
        merge([*shards[:3], six], tmp_path / "merged")
    whole = tmp_path / "whole"
    run(whole, scripted)
    with pytest.raises(FailtuneError, match="is not a shard"):
        merge([whole], tmp_path / "merged")


def test_bad_shard_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", "--model_path", "x", "--output_dir", "o", "--num-shards", "0"]) == 2
    assert "--num-shards must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(FailtuneError, match="between 0 and 3"):
        extract("builtin:smollm2", "unused", num_shards=4, shard_index=4)

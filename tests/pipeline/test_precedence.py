"""One precedence for every key of a run config: defaults < config file < --set < the flags the
user gave. A flag left unset overrides nothing (it once overwrote a --set of the same key with
its empty default). One test per top-level key, one per table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from failtune.cli import build_parser, run_config
from failtune.config.options import RunOptions, section_fields

# key: (value in the file, value given with --set, value of the flag); each differs from the
# one before it, and the file's from the default.
TOP: dict[str, tuple[Any, Any, Any]] = {
    "model": ("org/file-model", "org/set-model", "org/flag-model"),
    "output_dir": ("from-file", "from-set", "from-flag"),
    "rounds": (2, 3, 4),
    "seed": (1, 2, 3),
    "served_model": ("file-name", "set-name", "flag-name"),
    "backend": ("hf", "openai", "hf"),
    "tensor_parallel_size": (2, 3, 4),
    "gpu_memory_utilization": (0.5, 0.6, 0.7),
    "base_url": ("http://file/v1", "http://set/v1", "http://flag/v1"),
    "api_key_env": ("FILE_KEY", "SET_KEY", "FLAG_KEY"),
    "endpoint": ("completions", "chat", "completions"),
    "chat_template_from": ("org/file-template", "org/set-template", "org/flag-template"),
    "max_concurrency": (2, 3, 4),
    "timeout": (10.0, 20.0, 30.0),
    "max_retries": (1, 2, 3),
}
# A server backend needs its address, and runs one round.
NEEDS = {"backend": {"base_url": "http://127.0.0.1:1/v1"}}


def _toml(value: Any) -> str:
    return json.dumps(value)  # a TOML basic string, integer or float is written alike


def _config(tmp_path: Path, top: dict[str, Any], tables: str = "", name: str = "run") -> Path:
    top = {"model": "org/base-model", **top}
    path = tmp_path / f"{name}.toml"
    path.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in top.items()) + tables)
    return path


def _resolved(path: Path, *argv: str) -> Any:
    return run_config(build_parser().parse_args(["run", str(path), *argv]))


# Switches: a flag can only turn them on.
SWITCHES = ("retrain_from_base",)


def test_every_top_level_key_is_covered() -> None:
    assert set(TOP) | set(SWITCHES) == {f.name for f in section_fields(RunOptions)}


@pytest.mark.parametrize("key", SWITCHES)
def test_switch_precedence(key: str, tmp_path: Path) -> None:
    flag = f"--{key.replace('_', '-')}"
    unset = _config(tmp_path, {}, name="defaults")
    assert getattr(_resolved(unset).run, key) is False
    path = _config(tmp_path, {key: True})
    assert getattr(_resolved(path).run, key) is True
    assert getattr(_resolved(path, "--set", f"{key}=false").run, key) is False
    assert getattr(_resolved(path, "--set", f"{key}=false", flag).run, key) is True
    assert getattr(_resolved(path, "--set", f"{key}=false", "--seed", "5").run, key) is False


@pytest.mark.parametrize("key", sorted(TOP))
def test_top_level_key_precedence(key: str, tmp_path: Path) -> None:
    in_file, by_set, by_flag = TOP[key]
    default = getattr(RunOptions(), key)
    assert in_file != default and by_set != in_file and by_flag != by_set
    path = _config(tmp_path, {key: in_file, **NEEDS.get(key, {})})
    flag = f"--{key.replace('_', '-')}"
    if key != "model":  # a run always names its model
        unset = _config(tmp_path, NEEDS.get(key, {}), name="defaults")
        assert getattr(_resolved(unset).run, key) == default
    assert getattr(_resolved(path).run, key) == in_file
    assert getattr(_resolved(path, "--set", f"{key}={by_set}").run, key) == by_set
    both = _resolved(path, "--set", f"{key}={by_set}", flag, str(by_flag))
    assert getattr(both.run, key) == by_flag
    # Flags of other keys, given or not, leave this one as --set made it.
    other = "--seed" if key != "seed" else "--rounds"
    assert getattr(_resolved(path, "--set", f"{key}={by_set}", other, "5").run, key) == by_set


@pytest.mark.parametrize(
    ("table", "key", "in_file", "by_set"),
    [
        ("extract", "limit", 5, 6),
        ("train", "lora_r", 4, 8),
        ("validate", "limit", 7, 9),
        ("cost", "gpu_hourly_usd", 1.5, 2.5),
        ("cost", "api_usd_per_mtok", 3.0, 4.0),
    ],
)
def test_table_key_precedence(
    table: str, key: str, in_file: Any, by_set: Any, tmp_path: Path
) -> None:
    path = _config(tmp_path, {}, f"[{table}]\n{key} = {_toml(in_file)}\n")
    assert _resolved(path).table(table)[key] == in_file
    assert _resolved(path, "--set", f"{table}.{key}={by_set}").table(table)[key] == by_set
    if table == "cost":  # the one table with flags of its own
        flag = f"--{key.replace('_', '-')}"
        given = _resolved(path, "--set", f"{table}.{key}={by_set}", flag, "9.5")
        assert given.table(table)[key] == 9.5
    unset = _resolved(path, "--set", f"{table}.{key}={by_set}", "--seed", "4")
    assert unset.table(table)[key] == by_set


def test_tasks_table_precedence(tmp_path: Path) -> None:
    path = _config(tmp_path, {}, "[tasks.arith]\nsize = 100\n")
    assert _resolved(path).tasks["arith"]["size"] == 100
    assert _resolved(path, "--set", "tasks.arith.size=200").tasks["arith"]["size"] == 200
    assert _resolved(path, "--set", "tasks.arith.size=200", "--seed", "3").tasks["arith"] == {
        "size": 200,
        "seed": 3,  # a generated task takes the run's seed unless set per task
    }


def test_a_set_of_a_top_level_key_reaches_the_steps(tmp_path: Path) -> None:
    """The bug this guards against: `--set backend=hf` was lost, so the estimate timed vLLM."""
    path = _config(tmp_path, {})
    config = _resolved(path, "--set", "backend=hf")
    assert config.run.backend == config.extract.backend == config.validate.backend == "hf"

"""A user's terminal shows failtune's own lines only: other libraries' bars and warnings stay off.

The commands run in a fresh process, as a user runs them (libraries read their switches when
imported), with output captured as in a pipe or a CI log.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_smollm2

from failtune.console import QUIET_ENV

SRC = Path(__file__).resolve().parents[1] / "src"

# What failtune itself prints in the commands below (console.note / warn, rich tables).
FAILTUNE_LINES = [
    r"[\w./-]+: (started|done in \d+ s)",  # one line per step of `failtune run` without bars
    r"training on \d+ examples from \d+ file\(s\), \d+ steps per epoch",
    r"\d+ of \d+ problems already graded in \S+: kept",
    r"round \d+: gates (passed|failed), .*",
    r"\w+: \d+ of \d+ eval prompts share a 13-gram with the training data .*",  # the overlap
    r"time per step: .*",
    r"report: .*",
    r"converting \S+ to a safetensors folder \(once\): \S+",  # a GGUF's first load
    r"\w+: \d+ training examples → \S+",
    r"training lines: .*",  # where they came from, with targets other than the reference
    r"\s*(extract|validate) → \S+\s*",  # a table's title
    r"[┏┃┡│└].*",  # a table's rows
]
# What other libraries print: tqdm bars, Python warnings, log records.
LEAKS = [r"\d+%\|", r"\bit/s\]", r"\b\w*Warning\b", r"^(WARNING|INFO|DEBUG)\b", r"Traceback"]


def failtune(*args: str, cwd: Path, **extra_env: str) -> str:
    """stdout and stderr of `failtune ARGS` in a new process, not attached to a terminal."""
    # Tests that ran the CLI in this process left its quiet switches in the environment.
    env = {k: v for k, v in os.environ.items() if k not in QUIET_ENV}
    env |= {"PYTHONPATH": str(SRC), "COLUMNS": "200", **extra_env}
    done = subprocess.run(
        [sys.executable, "-m", "failtune.cli", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return output


def foreign_lines(output: str) -> list[str]:
    """Lines that are not failtune's, or that carry a library's bar or warning."""
    return [
        line
        for line in output.splitlines()
        if line.strip()
        and (
            not any(re.fullmatch(p, line) for p in FAILTUNE_LINES)
            or any(re.search(p, line) for p in LEAKS)
        )
    ]


def test_run_prints_one_line_per_step_and_nothing_from_libraries(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """extract, train (datasets, TRL, PEFT, accelerate), validate and report, piped."""
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'model = "{tiny_model_dir}"\noutput_dir = "{tmp_path / "run"}"\nrounds = 1\n'
        'backend = "hf"\n'
        "[tasks.arith]\nsize = 20\n"
        '[extract]\ncategories = "arith"\nlimit = 6\nmax_new_tokens = 8\nbatch_size = 4\n'
        "[train]\nnum_train_epochs = 1\nbatch_size = 4\n"
        "[validate]\nlimit = 6\nmax_new_tokens = 8\nbatch_size = 4\n"
    )
    output = failtune("run", str(config), cwd=tmp_path)
    assert foreign_lines(output) == []
    steps = ["round-1/extract", "baseline", "round-1/train", "round-1/validate"]
    for step in steps:
        assert f"{step}: started" in output and re.search(rf"{step}: done in \d+ s", output)
    assert "time per step: " in output


@pytest.mark.model
def test_gguf_load_is_quiet_unless_verbose(tmp_path: Path) -> None:
    """Reading the GGUF demo model draws transformers' conversion bar: shown only on request.
    Each run gets an empty cache, so each reads the GGUF (into its converted folder)."""
    require_smollm2()
    command = ["extract", "--model_path", "builtin:smollm2", "--backend", "hf"]
    command += ["--categories", "arith", "--limit", "2", "--max_new_tokens", "8"]
    quiet = failtune(
        *command,
        "--output_dir",
        str(tmp_path / "quiet"),
        cwd=tmp_path,
        FAILTUNE_CACHE=str(tmp_path / "cache-quiet"),
    )
    assert foreign_lines(quiet) == []
    assert "arith: 2 training examples" in quiet
    assert "converting SmolLM2-135M-Instruct.Q4_1.gguf to a safetensors folder (once)" in quiet
    verbose = failtune(
        "--verbose",
        *command,
        "--output_dir",
        str(tmp_path / "v"),
        cwd=tmp_path,
        FAILTUNE_CACHE=str(tmp_path / "cache-verbose"),
    )
    assert "de-quantizing GGUF tensors" in verbose
    assert any("de-quantizing GGUF tensors" in line for line in foreign_lines(verbose))

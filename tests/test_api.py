"""The Python API as the README shows it: the example runs as written, and the names a user
needs are exported from `failtune`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import failtune
from failtune.tasks.gsm8k import GSM8K

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Python API section holds no python block"
    return match.group(1)


def test_the_readme_example_runs_as_written(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The hub id of the example names a local folder here (a tiny random model), so nothing is
    downloaded; the code itself is the README's, unchanged. The engine `auto` picks is
    transformers here (vLLM's CPU kernels do not take the tiny model's head size). The random
    model never ends an answer, so GSM8K's answer cap is cut from 320 tokens to 24: the same
    calls, a tenth of the decoding."""
    code = readme_example()
    model = re.search(r'model = "([^"]+)"', code)
    assert model
    shutil.copytree(tiny_model_dir, tmp_path / model.group(1))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("failtune.backends.vllm_installed", lambda: False)
    monkeypatch.setattr(GSM8K, "default_max_new_tokens", 24)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    assert printed[-1] in ("True", "False") and 0 <= float(printed[0]) <= 1
    assert int(printed[1]) >= 1  # training examples: the failures of the extraction
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "failtune-validation" / "validation.json").is_file()


def test_the_public_names_are_exported() -> None:
    for name in (
        "extract",
        "train",
        "validate",
        "run_pipeline",
        "resolve_config",
        "load_config",
        "demo",
        "ExtractOptions",
        "TrainOptions",
        "ValidateOptions",
        "ExtractResult",
        "TrainResult",
        "ValidationResult",
        "RunConfig",
        "RunResult",
        "FailtuneError",
    ):
        assert name in failtune.__all__ and hasattr(failtune, name), name


def test_options_go_by_keyword_or_as_one_object(tmp_path: Path) -> None:
    """A third positional argument is refused (the README once passed the categories so)."""
    with pytest.raises(TypeError):
        failtune.extract("m", tmp_path, "math")  # type: ignore[misc]
    with pytest.raises(TypeError, match="options must be a ExtractOptions"):
        failtune.extract("m", tmp_path, options=failtune.TrainOptions())

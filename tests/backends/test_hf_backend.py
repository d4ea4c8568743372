"""The transformers backend: padding, stop rules and finish reasons, on real and tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

from failtune.backends import GenParams, generate_all
from failtune.backends.hf import HFBackend
from failtune.errors import FailtuneError
from failtune.model_loading import resolve_model
from failtune.tasks.arith import Arith
from failtune.tasks.gsm8k import MATH_STOP_AFTER


def test_length_cap_reports_length(tiny_model_dir: Path) -> None:
    backend = HFBackend.load(str(tiny_model_dir), batch_size=2, device="cpu")
    gens = generate_all(backend, ["a", "a longer prompt here", "b"], GenParams(max_new_tokens=7))
    # The random model (seed 0) never draws its end-of-text token in 7 steps: every answer is cut.
    assert [(g.finish_reason, g.completion_tokens) for g in gens] == [("length", 7)] * 3


@pytest.mark.model
def test_batched_equals_one_by_one(smollm2_backend: HFBackend) -> None:
    """Left padding must not change greedy output: batch of 4 vs batch size 1."""
    prompts = [p.prompt for p in Arith(size=4).load("test")]
    params = GenParams(max_new_tokens=40)
    batched = generate_all(smollm2_backend, prompts, params)
    one = HFBackend(smollm2_backend.model, smollm2_backend.tokenizer, batch_size=1)
    single = generate_all(one, prompts, params)
    assert [g.text for g in batched] == [g.text for g in single]


@pytest.mark.model
def test_stop_after_answer(smollm2_backend: HFBackend) -> None:
    prompts = [p.prompt for p in Arith(size=8).load("train")]
    gens = generate_all(
        smollm2_backend, prompts, GenParams(max_new_tokens=160, stop_after=MATH_STOP_AFTER)
    )
    stopped = [g for g in gens if "The answer is" in g.text]
    assert stopped, "the model gave no answer at all"
    for g in stopped:
        assert g.finish_reason == "stop"
        assert g.text.rstrip().endswith(".")  # cut right after "The answer is N."
        assert g.completion_tokens < 160


def test_bad_model_paths_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(FailtuneError, match="model not found"):
        resolve_model("./nowhere/model")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FailtuneError, match=r"not a \.gguf model"):
        resolve_model(str(tmp_path / "notes.txt"))
    with pytest.raises(FailtuneError, match="holds no model"):
        resolve_model(str(tmp_path))

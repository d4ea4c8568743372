"""Rolling batches: rows leave when done and waiting prompts join, without changing any token."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from failtune.backends import GenParams, generate_all
from failtune.backends.hf import HFBackend, prompt_ids
from failtune.backends.rolling import decode
from failtune.tasks.gsm8k import GSM8K


def _alone(model, prompts: list[list[int]], max_new: int, eos: list[int]) -> list[list[int]]:
    """Reference: transformers' own `generate`, one prompt at a time (no padding at all)."""
    out = []
    with torch.inference_mode():
        for ids in prompts:
            seq = model.generate(
                torch.tensor([ids]),
                max_new_tokens=max_new,
                min_new_tokens=0,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=eos[0],
            )[0, len(ids) :].tolist()
            out.append(seq[: next((k for k, t in enumerate(seq) if t in eos), len(seq))])
    return out


def _rolling(model, prompts, slots: int, finished, pad_id: int) -> dict[int, list[int]]:
    got: dict[int, list[int]] = {}
    for done in decode(model, prompts, slots=slots, finished=finished, pad_id=pad_id):
        assert not torch.is_inference_mode_enabled()  # not leaked to the caller between steps
        for i, tokens, _ in done:
            assert i not in got, f"prompt {i} finished twice"
            got[i] = tokens
    return got


def _own_length(tokens: list[int]) -> tuple[int, str] | None:
    """Each row stops at a length set by its 5th token (5..94): rows leave at many steps."""
    return (
        (len(tokens), "length") if len(tokens) >= 5 + tokens[min(4, len(tokens) - 1)] % 90 else None
    )


def test_rows_join_and_leave_without_changing_tokens(tiny_model_dir: Path) -> None:
    """9 prompts of different lengths in 3 slots: rows leave at different steps, waiting
    prompts join a batch already decoding, decoding runs past the buffers' 64 spare columns.
    Every row must get exactly the tokens `generate` gives it alone."""
    backend = HFBackend.load(str(tiny_model_dir), batch_size=3, device="cpu")
    tok = backend.tokenizer
    prompts = [prompt_ids(tok, f"question {k}: " + "word " * (k * 7 % 11)) for k in range(9)]
    reference = _alone(backend.model, prompts, 94, [-1])  # no EOS: run to the cap
    got = _rolling(backend.model, prompts, 3, _own_length, tok.pad_token_id)
    assert sorted(got) == list(range(9))
    lengths = [len(got[k]) for k in range(9)]
    assert len(set(lengths)) >= 5, lengths  # the schedule really was rolling
    assert max(lengths) > 64
    for k in range(9):
        assert got[k] == reference[k][: len(got[k])], f"prompt {k}"


def test_one_slot_and_more_slots_than_prompts(tiny_model_dir: Path) -> None:
    backend = HFBackend.load(str(tiny_model_dir), batch_size=1, device="cpu")
    tok = backend.tokenizer
    prompts = [prompt_ids(tok, f"q{k} " + "x " * k) for k in range(4)]
    one = _rolling(backend.model, prompts, 1, _own_length, tok.pad_token_id)
    wide = _rolling(backend.model, prompts, 16, _own_length, tok.pad_token_id)
    assert one == wide and len(one) == 4


def test_resumed_stream_gives_the_same_answers(tiny_model_dir: Path) -> None:
    """A run that skips finished prompts (resume) must answer the rest exactly as the
    uninterrupted run did, and must not answer the skipped ones again."""
    backend = HFBackend.load(str(tiny_model_dir), batch_size=2, device="cpu")
    prompts = [f"item {k} " + "y " * (k % 5) for k in range(40)]  # 40 > one chunk of 16
    params = GenParams(max_new_tokens=12)
    full = {}
    for batch in backend.stream(prompts, params):
        assert not torch.is_inference_mode_enabled()  # grading runs outside inference mode
        full.update(batch)
    skip = {0, 3, 4, 17, 18, 19, 25, 39} | set(range(5, 15))
    resumed = dict(pair for batch in backend.stream(prompts, params, skip=skip) for pair in batch)
    assert sorted(resumed) == [k for k in range(40) if k not in skip]
    assert all(resumed[k] == full[k] for k in resumed)


@pytest.mark.model
def test_real_model_rolling_equals_generate(smollm2_backend: HFBackend) -> None:
    """SmolLM2 on GSM8K prompts, 12 answers through 4 slots vs `generate` one at a time:
    token-identical, EOS included (the chat model ends some answers within 80 tokens)."""
    model, tok = smollm2_backend.model, smollm2_backend.tokenizer
    prompts = [prompt_ids(tok, p.prompt) for p in GSM8K().load("test")[:12]]
    eos = smollm2_backend.eos_ids
    reference = _alone(model, prompts, 80, eos)

    def finished(tokens: list[int]) -> tuple[int, str] | None:
        if tokens[-1] in eos:
            return len(tokens) - 1, "stop"
        return (len(tokens), "length") if len(tokens) >= 80 else None

    got = _rolling(model, prompts, 4, finished, tok.pad_token_id)
    assert [got[k] for k in range(12)] == reference


@pytest.mark.model
def test_real_model_batch_size_does_not_change_answers(smollm2_backend: HFBackend) -> None:
    prompts = [p.prompt for p in GSM8K().load("test")[12:22]]
    params = GenParams(max_new_tokens=48)
    wide = generate_all(smollm2_backend, prompts, params)
    narrow = HFBackend(smollm2_backend.model, smollm2_backend.tokenizer, batch_size=3)
    assert generate_all(narrow, prompts, params) == wide

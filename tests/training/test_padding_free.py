"""Padding-free batches compute exactly what each example computes alone (no attention leak)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import arith_training_file
from transformers import AutoModelForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from failtune.model_loading import load_model, resolve_model
from failtune.training import varlen
from failtune.training.sft import train

LENGTHS = (37, 5, 90, 18, 61)


def examples(vocab: int) -> list[dict[str, list[int]]]:
    """Token rows of different lengths whose first third is prompt (label -100)."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in LENGTHS:
        ids = torch.randint(10, vocab, (n,), generator=g).tolist()
        cut = n // 3
        rows.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:]})
    return rows


def token_losses(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Negative log-likelihood of every labelled token, in batch order.

    Without a cache, as in training: transformers reads packed sequences from the position ids
    only when there is none.
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}  # with the example boundaries
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    nll = -torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return nll[mask]


def check_exact(model, pad_id: int, vocab: int) -> None:
    rows = examples(vocab)
    alone = torch.cat(
        [token_losses(model, DataCollatorForLanguageModeling(pad_id)([r])) for r in rows]
    )
    flat = DataCollatorForLanguageModeling(pad_id, padding_free=True)(rows)
    assert flat["input_ids"].shape == (1, sum(LENGTHS)) and "attention_mask" not in flat
    packed = token_losses(model, flat)
    padded = token_losses(model, DataCollatorForLanguageModeling(pad_id)(rows))
    assert packed.shape == alone.shape == padded.shape
    assert torch.allclose(packed, alone, atol=1e-4, rtol=0)
    assert torch.allclose(padded, alone, atol=1e-4, rtol=0)
    # The check can fail: one long sequence (positions not restarting) lets examples attend to
    # the ones before them.
    leaky = {k: flat[k] for k in ("input_ids", "labels")}
    leaky["position_ids"] = torch.arange(sum(LENGTHS))[None]
    assert not torch.allclose(token_losses(model, leaky), alone, atol=1e-2)


@pytest.mark.parametrize("attention", ["sdpa", "eager", varlen.NAME])
def test_padding_free_batch_equals_each_example_alone_tiny(
    tiny_model_dir: Path, attention: str
) -> None:
    varlen.register()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention)
    check_exact(model.eval(), model.config.pad_token_id, model.config.vocab_size)


def test_per_example_attention_runs_one_call_per_example_and_is_restored(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    lengths: list[int] = []

    def counting(query: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        lengths.append(query.shape[2])
        return sdpa(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    rows = examples(model.config.vocab_size)
    with varlen.per_example_attention(model):
        assert model.config._attn_implementation == varlen.NAME
        token_losses(model, DataCollatorForLanguageModeling(0, padding_free=True)(rows))
    assert lengths == list(LENGTHS) * model.config.num_hidden_layers
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.model
def test_padding_free_batch_equals_each_example_alone_smollm2(smollm2_tokenizer) -> None:
    model = load_model(resolve_model("builtin:smollm2"), device="cpu").eval()
    assert model.config._attn_implementation == "sdpa"
    check_exact(model, smollm2_tokenizer.pad_token_id, model.config.vocab_size)
    with varlen.per_example_attention(model):
        check_exact(model, smollm2_tokenizer.pad_token_id, model.config.vocab_size)


def test_padding_free_training_logs_the_same_losses(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = arith_training_file(tmp_path / "arith_training_ready.jsonl", n=12)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    batches: list[int] = []  # the batch dimension of every attention call

    def counting(query: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        batches.append(query.shape[0])
        return sdpa(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    losses, tokens, calls = {}, {}, {}
    for flag in (True, False):
        batches.clear()
        result = train(
            str(tiny_model_dir),
            data,
            tmp_path / str(flag),
            num_train_epochs=1,
            batch_size=4,
            learning_rate=1e-2,
            lora_dropout=0.0,  # dropout masks depend on the batch's shape
            show_progress=False,
            padding_free=flag,
        )
        history = result.metrics["log_history"]
        losses[flag] = [h["loss"] for h in history if "loss" in h]
        # TRL counts attention-mask ones (padded) or flattened positions: real tokens in both
        tokens[flag] = [h["num_tokens"] for h in history if "num_tokens" in h]
        calls[flag] = list(batches)
    assert len(losses[True]) == 3
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    assert tokens[True] == tokens[False]
    # 12 examples x 2 layers: one attention call per example; padded: one per batch of 4
    assert calls[True] == [1] * 24 and calls[False] == [4] * 6

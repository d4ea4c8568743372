"""LoRA training plumbing on a tiny random model (fast), with real TRL/PEFT underneath."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import arith_training_file

from failtune.errors import FailtuneError
from failtune.training.sft import load_training_examples, lr_warning, to_sft_rows, train


def test_train_saves_adapter_metrics_and_merged_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = arith_training_file(tmp_path / "arith_training_ready.jsonl")
    out = tmp_path / "adapter"
    result = train(
        str(tiny_model_dir),
        tmp_path / "*_training_ready.jsonl",
        out,
        num_train_epochs=1,
        batch_size=4,
        merge=True,
        show_progress=False,
    )
    assert result.examples == 12
    assert result.metrics["steps"] == 3
    assert result.metrics["train_loss"] > 0
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer_config.json",
        "metrics.json",
        "manifest.json",
        "failtune_train.json",
    ):
        assert (out / name).is_file(), name
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["lora_alpha"] == 32
    kinds = {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
    assert kinds == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    meta = json.loads((out / "failtune_train.json").read_text())
    assert meta["base_model"] == str(tiny_model_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"examples": 12, "steps": 3}
    assert str(data) in manifest["data_sha256"]

    # the merged folder is a plain model that computes what base+adapter computes
    from transformers import AutoModelForCausalLM

    from failtune.model_loading import load_model, resolve_model

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    adapted = load_model(resolve_model(str(out)), device="cpu")
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-4)

    # trained on into the same folder (resumed, one more epoch): the old merged model is gone,
    # so vLLM validation merges the new adapter instead of serving the old one
    again = train(
        str(tiny_model_dir), data, out, num_train_epochs=2, batch_size=4, show_progress=False
    )
    assert again.metrics["steps"] == 6
    assert not (out / "merged").exists()


def test_training_changes_the_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    arith_training_file(tmp_path / "arith_training_ready.jsonl", n=8)
    result = train(
        str(tiny_model_dir),
        tmp_path / "arith_training_ready.jsonl",
        tmp_path / "a",
        num_train_epochs=2,
        batch_size=4,
        learning_rate=1e-2,
        show_progress=False,
    )
    losses = [h["loss"] for h in result.metrics["log_history"] if "loss" in h]
    assert len(losses) >= 2 and losses[-1] < losses[0]


def test_sft_rows_are_prompt_completion_so_only_the_output_is_learned() -> None:
    rows = to_sft_rows([{"instruction": "Q?", "output": "A."}], chat=True)
    assert rows == [
        {
            "prompt": [{"role": "user", "content": "Q?"}],
            "completion": [{"role": "assistant", "content": "A."}],
        }
    ]


def test_low_learning_rate_warns_with_a_reason() -> None:
    message = lr_warning(3e-6)
    assert message and "barely move" in message and "1e-4" in message
    assert lr_warning(2e-4) is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"instruction": "q"}', 'exactly non-empty string fields "instruction" and "output"'),
        ('{"instruction": "q", "output": "a", "extra": 1}', "example 1 must have exactly"),
        ("[1, 2]", "expected a JSON object"),
        ("{oops", "not valid JSON"),
    ],
)
def test_malformed_training_files(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "x_training_ready.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(FailtuneError, match=message.replace("(", r"\(")):
        load_training_examples(path)

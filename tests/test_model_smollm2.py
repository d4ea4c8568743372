"""End to end with the real SmolLM2-135M-Instruct on CPU: extract, train, validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import read_jsonl

from failtune.cli import main
from failtune.evaluation.extraction import extract

pytestmark = pytest.mark.model
REASONS = {"correct", "wrong_answer", "no_answer", "truncated"}


def test_extract_arith(smollm2_backend, tmp_path: Path) -> None:
    result = extract(
        output_dir=tmp_path,
        categories="arith",
        limit=32,
        model=smollm2_backend,
        show_progress=False,
    )
    records = read_jsonl(tmp_path / "results.jsonl")
    assert len(records) == 32
    assert {r["reason"] for r in records} <= REASONS
    assert all(r["finish_reason"] in ("stop", "length") for r in records)
    assert all(r["completion_tokens"] > 0 for r in records)
    acc = result.summary["arith"]["accuracy"]
    assert 0 < acc < 0.6  # the base model gets a few right and most wrong
    training = read_jsonl(tmp_path / "arith_training_ready.jsonl")
    assert len(training) == 32 - result.summary["arith"]["correct"]
    failed_prompts = [r["prompt"] for r in records if not r["correct"]]
    assert sorted(t["instruction"] for t in training) == sorted(failed_prompts)


def test_extract_gsm8k_slice(smollm2_backend, tmp_path: Path) -> None:
    result = extract(
        output_dir=tmp_path,
        categories="math",
        split="test",
        limit=6,
        max_new_tokens=200,
        model=smollm2_backend,
        show_progress=False,
    )
    records = result.records
    assert [r["id"] for r in records] == [f"gsm8k/test/{i}" for i in range(6)]
    assert all(r["reason"] in REASONS for r in records)
    for r in records:
        if r["finish_reason"] == "length" and r["reason"] == "truncated":
            assert r["correct"] is False
    training = read_jsonl(tmp_path / "math_training_ready.jsonl")
    assert all(set(t) == {"instruction", "output"} for t in training)
    assert all(t["output"].endswith(".") and "<<" not in t["output"] for t in training)


def test_train_then_validate_adapter_via_cli(tmp_path: Path) -> None:
    """The whole loop through the command line, small: 16 failures, 1 epoch, 12 held-out."""
    ex = tmp_path / "extract"
    assert (
        main(
            [
                "extract",
                "--model_path",
                "builtin:smollm2",
                "--output_dir",
                str(ex),
                "--categories",
                "arith",
                "--limit",
                "16",
                "--backend",  # vLLM's start-up would dominate 16 answers; tested on its own
                "hf",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--model_name",
                "builtin:smollm2",
                "--dataset_path",
                f"{ex}/*_training_ready.jsonl",
                "--output_dir",
                str(tmp_path / "adapter"),
                "--num_train_epochs",
                "1",
                "--learning_rate",
                "3e-4",
                "--no-progress",
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "adapter" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["train_loss"] > 0
    val = tmp_path / "val"
    code = main(
        [
            "validate",
            "--base",
            "builtin:smollm2",
            "--candidate",
            str(tmp_path / "adapter"),
            "--categories",
            "arith",
            "--limit",
            "12",
            "--output_dir",
            str(val),
            "--gate",
            "arith.n>=12",
            "--backend",
            "hf",
            "--no-progress",
        ]
    )
    assert code == 0
    table = json.loads((val / "validation.json").read_text())["categories"]["arith"]
    base = read_jsonl(val / "base" / "results.jsonl")
    cand = read_jsonl(val / "candidate" / "results.jsonl")
    assert table["n"] == 12 == len(base) == len(cand)
    by_id = {r["id"]: r["correct"] for r in cand}
    assert table["wins"] == sum(by_id[r["id"]] and not r["correct"] for r in base)
    assert table["losses"] == sum(r["correct"] and not by_id[r["id"]] for r in base)
    assert table["base_accuracy"] == pytest.approx(sum(r["correct"] for r in base) / 12)
    manifest = json.loads((val / "manifest.json").read_text())
    assert manifest["candidate_adapter"] == str((tmp_path / "adapter").resolve())
    assert main(["report", str(val)]) == 0  # it draws the adapter's own loss curve
    assert "![training loss, the candidate](loss.png)" in (val / "report/report.md").read_text()


def test_extract_code_mbpp_slice(smollm2_backend, tmp_path: Path) -> None:
    """The base model writes code for a few MBPP problems; each is run and graded with a reason."""
    result = extract(
        output_dir=tmp_path,
        categories="code",
        limit=3,
        max_new_tokens=96,
        model=smollm2_backend,
        task_options={"mbpp": {"workers": 2}},
        show_progress=False,
    )
    records = result.records
    assert [r["id"] for r in records] == [f"mbpp/prompt/{i}" for i in range(1, 4)]
    reasons = ("passed", "no_code", "syntax_error", "timeout", "memory", "exited_early", "killed")
    for r in records:
        assert r["reason"].startswith((*reasons, "runtime_error:", "assertion_failed:"))
        assert r["correct"] == (r["reason"] == "passed")
    training = read_jsonl(tmp_path / "code_training_ready.jsonl")
    assert len(training) == 3 - result.summary["code"]["correct"]
    assert all(t["output"].startswith("```python\n") for t in training)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["problem_splits"] == {"mbpp": ["prompt"]}


def test_the_gguf_and_its_converted_folder_load_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loads go through the converted folder (4 s instead of 18 s of dequantising): the
    weights must be the GGUF's own, bit for bit, and the tokenizer must encode the same."""
    from failtune import model_loading
    from failtune.model_loading import load_model, load_tokenizer, resolve_model

    ref = resolve_model("builtin:smollm2")
    converted = load_model(ref, dtype="float32", device="cpu").state_dict()
    folder_tok = load_tokenizer(ref)
    monkeypatch.setenv("FAILTUNE_CACHE", str(tmp_path))  # no folder here, and none made:
    monkeypatch.setattr(model_loading, "CONVERT_BELOW_BYTES", 0)  # read the GGUF itself
    direct = load_model(ref, dtype="float32", device="cpu").state_dict()
    assert not (tmp_path / "models").exists()
    assert converted.keys() == direct.keys()
    assert all(torch.equal(converted[k], direct[k]) for k in direct)
    gguf_tok = load_tokenizer(ref)
    chat = [{"role": "user", "content": "There are 3 jars with 12 stamps in each. How many?"}]
    assert folder_tok.apply_chat_template(chat, add_generation_prompt=True) == (
        gguf_tok.apply_chat_template(chat, add_generation_prompt=True)
    )
    assert (folder_tok.eos_token_id, folder_tok.pad_token_id) == (
        gguf_tok.eos_token_id,
        gguf_tok.pad_token_id,
    )

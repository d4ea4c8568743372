"""The real model (SmolLM2-135M-Instruct, CPU, fp32) on GSM8K prompts: greedy answers are those of
the release before sampling existed, and these 80 seeded samples do not depend on the batch size,
the order of the prompts or a kill and resume, bit for bit (backends.rolling's aligned layout;
benchmarks/sampling_reproducibility.py checks longer answers)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from helpers import GSM8K_TEST

from failtune.backends import GenParams, generate_all, sample_all
from failtune.backends.hf import HFBackend
from failtune.tasks.gsm8k import MATH_STOP_AFTER

pytestmark = pytest.mark.model

GOLDEN = Path(__file__).parent.parent / "data" / "greedy_smollm2_gsm8k.json"
PROBLEMS = GSM8K_TEST[100:120]
PROMPTS = [p.prompt for p in PROBLEMS]
IDS = [p.id for p in PROBLEMS]
SAMPLED = GenParams(
    max_new_tokens=48, stop_after=MATH_STOP_AFTER, temperature=0.8, top_p=0.95, samples=4, seed=1
)


def test_greedy_answers_are_those_before_sampling(smollm2_backend: HFBackend) -> None:
    """16 GSM8K answers recorded with the code before sampling (commit 9f4a313, torch 2.13 CPU):
    the same text, finish reason and token count."""
    golden = json.loads(GOLDEN.read_text())
    problems = GSM8K_TEST[golden["first"] : golden["first"] + golden["count"]]
    assert [p.id for p in problems] == [a["id"] for a in golden["answers"]]
    backend = HFBackend(smollm2_backend.model, smollm2_backend.tokenizer, batch_size=8)
    params = GenParams(max_new_tokens=golden["max_new_tokens"], stop_after=MATH_STOP_AFTER)
    got = generate_all(backend, [p.prompt for p in problems], params)
    answers = [
        {"id": p.id, "text": g.text, "finish_reason": g.finish_reason}
        | {"completion_tokens": g.completion_tokens}
        for p, g in zip(problems, got, strict=True)
    ]
    assert answers == golden["answers"]


@pytest.fixture(scope="module")
def at_batch_8(smollm2_backend: HFBackend) -> list[list]:
    backend = HFBackend(smollm2_backend.model, smollm2_backend.tokenizer, batch_size=8)
    return sample_all(backend, PROMPTS, SAMPLED, IDS)


def test_batch_32_and_another_order_give_the_same_samples(
    smollm2_backend: HFBackend, at_batch_8: list[list]
) -> None:
    texts = [g.text for row in at_batch_8 for g in row]
    assert len(set(texts)) > 0.9 * len(texts)  # sampled: the 4 answers of a problem differ
    backend = HFBackend(smollm2_backend.model, smollm2_backend.tokenizer, batch_size=32)
    order = list(range(len(PROMPTS)))[::3] + [i for i in range(len(PROMPTS)) if i % 3]
    wide = sample_all(backend, [PROMPTS[i] for i in order], SAMPLED, [IDS[i] for i in order])
    assert [wide[order.index(i)] for i in range(len(PROMPTS))] == at_batch_8


def test_a_kill_and_resume_give_the_same_samples(
    smollm2_backend: HFBackend, at_batch_8: list[list]
) -> None:
    """80 answers at batch 8 are two chunks (64 + 16): the run is stopped once 70 answers are
    out, then resumed with those skipped; every answer is the uninterrupted run's."""
    backend = HFBackend(smollm2_backend.model, smollm2_backend.tokenizer, batch_size=8)
    done: dict[tuple[int, int], object] = {}
    for batch in backend.stream_samples(PROMPTS, SAMPLED, keys=IDS):
        done.update(((i, s), g) for i, s, g in batch)
        if len(done) >= 70:
            break  # the kill: the generator is dropped mid-chunk
    assert 70 <= len(done) < 80
    for batch in backend.stream_samples(PROMPTS, SAMPLED, set(done), IDS):
        for i, s, g in batch:
            assert (i, s) not in done
            done[i, s] = g
    assert len(done) == 80
    assert all(g == at_batch_8[i][s] for (i, s), g in done.items())


def test_batch_1_and_32_give_the_same_samples_bit_for_bit(smollm2_backend: HFBackend) -> None:
    """At batch 1 every step is one live row and three ghosts, at 32 a crowd: the same answers,
    and a kill inside a problem's samples resumes to them too."""
    params = dataclasses.replace(SAMPLED, max_new_tokens=32)
    runs = []
    for size in (1, 32):
        backend = HFBackend(smollm2_backend.model, smollm2_backend.tokenizer, batch_size=size)
        runs.append(sample_all(backend, PROMPTS[:3], params, IDS[:3]))
    assert runs[0] == runs[1]
    assert len({g.text for row in runs[0] for g in row}) > 0.9 * 12
    done: dict[tuple[int, int], object] = {}
    for batch in backend.stream_samples(PROMPTS[:3], params, keys=IDS[:3]):
        done.update(((i, s), g) for i, s, g in batch)
        if len(done) >= 5:
            break  # killed inside the second problem's samples
    for batch in backend.stream_samples(PROMPTS[:3], params, set(done), IDS[:3]):
        done.update(((i, s), g) for i, s, g in batch)
    assert all(g == runs[0][i][s] for (i, s), g in done.items()) and len(done) == 12

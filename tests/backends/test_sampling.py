"""Seeded sampling: the draw is exact, each answer's noise is its own, settings are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from failtune.backends import GenParams, sample_all, sample_seed
from failtune.backends.hf import HFBackend
from failtune.backends.sampling import SeededSampler
from failtune.errors import FailtuneError

SAMPLED = GenParams(max_new_tokens=10, temperature=1.0, samples=3, seed=7)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": -0.5}, "temperature must be 0 .greedy. or more, not -0.5"),
        ({"samples": 0, "temperature": 1.0}, "samples must be at least 1, not 0"),
        ({"samples": 4}, "samples = 4 needs a temperature above 0"),
        ({"temperature": 1.0, "top_p": 0.0}, r"top_p must be in \(0, 1\], not 0.0"),
        ({"temperature": 1.0, "top_k": -1}, "top_k must be 0 .no limit. or more, not -1"),
    ],
)
def test_bad_settings_are_one_sentence(options: dict, message: str) -> None:
    with pytest.raises(FailtuneError, match=message):
        GenParams(**options)


def test_seeds_are_stable_and_distinct() -> None:
    # blake2b, not Python's salted hash(): the same value in every process and release, so a
    # run resumed after an upgrade draws the same samples
    assert sample_seed(0, "gsm8k/test/17", 3) == 1707194093286602969
    assert sample_seed(0, "gsm8k/test/17") == 2580240407822958854
    seeds = {sample_seed(seed, key, s) for seed in (0, 1) for key in "ab" for s in range(4)}
    assert len(seeds) == 16
    assert all(0 <= x < 2**62 for x in seeds)


def test_draws_follow_the_softmax() -> None:
    """4,000 independent streams each draw one token from fixed logits: the frequencies match
    softmax(logits / T) (chi-square, 4 degrees of freedom; p < 0.001 rejects at 18.5)."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    params = GenParams(temperature=0.7, samples=2)
    rows = range(4000)
    sampler = SeededSampler(params, [sample_seed(1, "x", r) for r in rows])
    picks = sampler(logits.expand(len(rows), -1), list(rows))[:, 0]
    counts = torch.bincount(picks, minlength=5).double()
    expected = torch.softmax(logits / 0.7, dim=0).double() * len(rows)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 18.5, (counts.tolist(), expected.tolist())


def test_top_k_and_top_p_cut_the_tail() -> None:
    logits = torch.tensor([3.0, 2.9, 0.0, -0.1, -5.0]).expand(2000, -1)
    rows = list(range(2000))
    top2 = SeededSampler(GenParams(temperature=2.0, top_k=2), [r + 1 for r in rows])
    assert set(top2(logits, rows)[:, 0].tolist()) == {0, 1}
    # tokens 0 and 1 hold 0.95 of the mass at T = 1: top_p 0.85 keeps both, never the rest
    nucleus = SeededSampler(GenParams(temperature=1.0, top_p=0.85), [r + 1 for r in rows])
    assert set(nucleus(logits, rows)[:, 0].tolist()) == {0, 1}
    greedy_like = SeededSampler(GenParams(temperature=1.0, top_k=1), rows)
    assert set(greedy_like(logits, rows)[:, 0].tolist()) == {0}


@pytest.mark.parametrize(
    "params",
    [
        GenParams(temperature=1.0, top_p=0.9),  # nucleus of ~3,000 tokens: past the first 256
        GenParams(temperature=0.3, top_p=0.9),  # a narrow one
        GenParams(temperature=1.5, top_k=40, top_p=0.5),
    ],
)
def test_cuts_keep_what_transformers_keeps_and_draw_in_proportion(params: GenParams) -> None:
    """Against transformers' own warpers on a 5,000-token vocabulary: every draw is a token they
    keep, and over 20,000 draws each kept token's frequency matches its renormalised probability
    (chi-square over the tokens expected 5+ times; 4 standard deviations of slack)."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(3)
    logits = torch.randn(1, 5000) * 2
    warpers = [TemperatureLogitsWarper(params.temperature)]
    warpers += [TopKLogitsWarper(params.top_k)] if params.top_k else []
    warpers += [TopPLogitsWarper(params.top_p)]
    scores = logits.double()
    for warp in warpers:
        scores = warp(None, scores)
    reference = torch.softmax(scores, dim=-1)[0]
    rows = list(range(20_000))
    picks = SeededSampler(params, [sample_seed(2, "t", r) for r in rows])(
        logits.expand(len(rows), -1), rows
    )[:, 0]
    assert set(picks.tolist()) <= set(torch.nonzero(reference)[:, 0].tolist())
    counts = torch.bincount(picks, minlength=5000).double()
    expected = reference * len(rows)
    common = expected >= 5
    chi2 = float(((counts[common] - expected[common]) ** 2 / expected[common]).sum())
    dof = int(common.sum()) - 1
    assert chi2 < dof + 4 * (2 * dof) ** 0.5, (chi2, dof)
    if params.temperature == 1.0:  # the wide nucleus: draws beyond the first 256 candidates
        rank = torch.empty(5000, dtype=torch.long)
        rank[reference.argsort(descending=True)] = torch.arange(5000)
        assert int((reference > 0).sum()) > 1024
        assert int((rank[picks] >= 256).sum()) > 1000


def test_a_wide_nucleus_row_draws_alike_alone_and_among_narrow_rows() -> None:
    """A row whose nucleus is redone with every token draws the same token whether its batch
    mates needed that or not."""
    torch.manual_seed(5)
    flat, peaked = torch.randn(3, 5000) * 0.1, torch.randn(3, 5000) * 8
    params = GenParams(temperature=1.0, top_p=0.95)
    seeds = [sample_seed(0, "w", r) for r in range(6)]
    mixed = SeededSampler(params, seeds)(torch.cat([flat, peaked]), list(range(6)))
    assert SeededSampler(params, seeds)(flat, [0, 1, 2]).tolist() == mixed[:3].tolist()
    assert SeededSampler(params, seeds)(peaked, [3, 4, 5]).tolist() == mixed[3:].tolist()


def test_a_rows_draws_do_not_depend_on_its_batch() -> None:
    """Row 5's tokens over 3 steps are the same alone or among 7 other rows, in any position."""
    torch.manual_seed(0)
    steps = [torch.randn(8, 50) for _ in range(3)]
    seeds = [sample_seed(0, "k", r) for r in range(8)]
    params = GenParams(temperature=1.0)
    together, alone = SeededSampler(params, seeds), SeededSampler(params, seeds)
    order = [7, 5, 0, 1, 2, 3, 4, 6]
    for logits in steps:
        batch = together(logits[order], order)[:, 0].tolist()
        assert batch[1] == alone(logits[5:6], [5])[0, 0]
    first = SeededSampler(params, seeds)(steps[0], list(range(8)))
    torch.manual_seed(123)  # the global generator plays no part
    torch.rand(10)
    assert torch.equal(SeededSampler(params, seeds)(steps[0], list(range(8))), first)


def test_batch_size_order_and_resume_do_not_change_samples(tiny_model_dir: Path) -> None:
    """A tiny random model, 7 prompts x 3 samples: batch 2 and batch 7, prompts reversed, and
    a resume that skips some (prompt, sample) pairs all give the same answers."""
    backend = HFBackend.load(str(tiny_model_dir), batch_size=2, device="cpu")
    prompts = [f"question {k}: " + "word " * (k % 4) for k in range(7)]
    narrow = sample_all(backend, prompts, SAMPLED)
    assert [len(row) for row in narrow] == [3] * 7
    texts = [g.text for row in narrow for g in row]
    assert len(set(texts)) == len(texts)  # every sample differs: it really samples
    backend.batch_size = 7
    assert sample_all(backend, prompts, SAMPLED) == narrow
    keys = [f"id{k}" for k in range(7)]
    by_key = sample_all(backend, prompts, SAMPLED, keys)
    assert by_key != narrow  # keys, not positions, seed the samples
    assert sample_all(backend, prompts[::-1], SAMPLED, keys[::-1]) == by_key[::-1]
    other_seed = GenParams(max_new_tokens=10, temperature=1.0, samples=3, seed=8)
    assert sample_all(backend, prompts, other_seed) != narrow
    backend.batch_size = 2
    skip = {(0, 0), (0, 1), (0, 2), (3, 1), (6, 0)}
    resumed = {
        (i, s): g for batch in backend.stream_samples(prompts, SAMPLED, skip) for i, s, g in batch
    }
    assert sorted(resumed) == sorted({(i, s) for i in range(7) for s in range(3)} - skip)
    assert all(g == narrow[i][s] for (i, s), g in resumed.items())


def test_samples_of_a_prompt_share_its_prefill(tiny_model_dir: Path) -> None:
    """3 prompts x 4 samples in 8 slots: the first prefill runs 2 prompts, not 8 rows, and
    each row's answer is the one it gets with a prefill of its own."""
    from failtune.backends import rolling
    from failtune.backends.hf import _StopCheck, prompt_ids

    backend = HFBackend.load(str(tiny_model_dir), batch_size=8, device="cpu")
    tok = backend.tokenizer
    prompts = [prompt_ids(tok, f"prompt {k} " + "z " * k) for k in range(3)]
    rows = [p for p in prompts for _ in range(4)]
    shared = [k for k in range(3) for _ in range(4)]
    prefills: list[int] = []

    def count(module, args, kwargs) -> None:
        if kwargs["input_ids"].shape[1] > 1:
            prefills.append(kwargs["input_ids"].shape[0])

    params = GenParams(max_new_tokens=12, temperature=1.0, samples=4)
    seeds = [sample_seed(0, str(k), s) for k in range(3) for s in range(4)]
    check = _StopCheck(tok, params, [-1])

    def run(share: list[int] | None) -> dict[int, list[int]]:
        got = {}
        for done in rolling.decode(
            backend.model,
            rows,
            slots=8,
            finished=check,
            pad_id=tok.pad_token_id,
            pick=SeededSampler(params, seeds),
            shared=share,
        ):
            got.update((r, tokens) for r, tokens, _ in done)
        return got

    hook = backend.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        together = run(shared)
        assert prefills == [2, 1]  # rows 0-7 (prompts 0, 1), then rows 8-11 (prompt 2)
        prefills.clear()
        apart = run(None)
        assert prefills == [8, 4]
    finally:
        hook.remove()
    assert together == apart
    assert len({tuple(t) for t in together.values()}) == 12


def test_greedy_through_stream_samples_is_stream(tiny_model_dir: Path) -> None:
    backend = HFBackend.load(str(tiny_model_dir), batch_size=3, device="cpu")
    prompts = [f"p{k} " + "q " * k for k in range(5)]
    params = GenParams(max_new_tokens=8)
    streamed = dict(pair for batch in backend.stream(prompts, params) for pair in batch)
    assert sample_all(backend, prompts, params) == [[streamed[k]] for k in range(5)]
    with pytest.raises(ValueError, match="use stream_samples"):
        next(backend.stream(prompts, SAMPLED))


def test_temperature_scales_diversity(tiny_model_dir: Path) -> None:
    """Near-zero temperature gives the greedy answer; a high one spreads the samples."""
    backend = HFBackend.load(str(tiny_model_dir), batch_size=4, device="cpu")
    prompts = ["one prompt"]
    greedy = sample_all(backend, prompts, GenParams(max_new_tokens=8))[0][0]
    cold = sample_all(backend, prompts, GenParams(max_new_tokens=8, temperature=1e-6, samples=4))
    assert cold[0] == [greedy] * 4
    assert len({g.text for g in sample_all(backend, prompts, SAMPLED)[0]}) == 3


def test_aligned_rows_prefill_alone_and_decode_in_steady_counts(tiny_model_dir: Path) -> None:
    """Sampled rows: each distinct prompt is prefilled once, on its own; every decoding step
    has a row count the probe found steady (ghost rows make it up as rows finish); and each
    row's tokens are those it gets decoding alone."""
    from failtune.backends import rolling
    from failtune.backends.hf import prompt_ids

    backend = HFBackend.load(str(tiny_model_dir), batch_size=8, device="cpu")
    tok = backend.tokenizer
    prompts = [prompt_ids(tok, f"prompt {k} " + "z " * k) for k in range(3)]
    rows = [p for p in prompts for _ in range(3)]
    shared = [k for k in range(3) for _ in range(3)]
    params = GenParams(max_new_tokens=12, temperature=1.0, samples=3)
    seeds = [sample_seed(0, str(k), s) for k in range(3) for s in range(3)]

    def finished(tokens: list[int]) -> tuple[int, str] | None:
        """Rows end after 3 to 11 tokens (set by their first token), so the batch shrinks."""
        return (len(tokens), "length") if len(tokens) >= 3 + tokens[0] % 9 else None

    steady = backend._steady()
    shapes: list[tuple[int, int]] = []

    def count(module, args, kwargs) -> None:
        shapes.append(tuple(kwargs["input_ids"].shape))

    def run(slots: int) -> dict[int, list[int]]:
        got = {}
        for done in rolling.decode(
            backend.model,
            rows,
            slots=slots,
            finished=finished,
            pad_id=tok.pad_token_id,
            pick=SeededSampler(params, seeds),
            shared=shared,
            steady=steady,
        ):
            got.update((r, tokens) for r, tokens, _ in done)
        return got

    hook = backend.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        together = run(8)
    finally:
        hook.remove()
    prefills = [rows_ for rows_, width in shapes if width > 1]
    steps = [rows_ for rows_, width in shapes if width == 1]
    # 8 rows (3 prompts) join first, each prompt run alone; the 9th row's prompt runs again
    assert prefills == [1, 1, 1, 1]
    assert len(set(steps)) > 1 and all(steady(n) == n for n in steps)
    assert together == run(1) and len(together) == 9
    assert len({tuple(t) for t in together.values()}) == 9


def test_steady_counts_give_every_row_the_same_bits() -> None:
    """The probe's rule holds for a product it did not probe: rows computed in a batch of a
    steady count are those of a batch of 64; and a count is never below the rows it holds."""
    from failtune.backends.rolling import steady_rows

    model = torch.nn.Sequential(torch.nn.Linear(96, 80), torch.nn.Linear(80, 96))
    steady = steady_rows(model)
    assert all(steady(n) >= n for n in range(1, 80)) and steady(100) == 100
    w = torch.randn(320, 96)
    x = torch.randn(64, 96)
    whole = torch.nn.functional.linear(x, w)
    for n in range(1, 64):
        m = steady(n)
        assert torch.equal(torch.nn.functional.linear(x[:m], w), whole[:m])

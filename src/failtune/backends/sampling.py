"""Seeded sampling of next tokens, one random stream per answer.

torch's global generator (and `model.generate(do_sample=True)`) draws every row's noise from one
stream, so a row's sample depends on which rows shared its batch and in what order: change the
batch size or resume a killed run and every answer changes. Here each answer (a prompt key and a
sample index) owns a generator seeded from (seed, key, sample); at its step t it draws the t-th
vector of uniform noise of that generator whatever else is decoding, and picks its token by the
Gumbel-max trick: argmax(scores + Gumbel noise) is an exact draw from softmax(scores).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from failtune.backends import GenParams


def greedy(logits: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """The most likely next token of each row, as a (rows, 1) tensor."""
    return logits.argmax(dim=-1, keepdim=True)


class SeededSampler:
    """Picks next tokens for rows identified by `seeds[row]`, each from its own noise stream.

    One sampler serves one decoding call (a chunk of rows), so its streams live no longer.

    Temperature, then top-k, then top-p, as transformers' `generate` applies them (its own
    warpers do the work). The noise is float64, so a token's Gumbel draw is capped at ~36
    rather than float32's ~17: the tail that float32 rounding would cut is negligible.
    """

    def __init__(self, params: GenParams, seeds: Sequence[int]) -> None:
        warpers: list = [TemperatureLogitsWarper(params.temperature)]
        if params.top_k:
            warpers.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1:
            warpers.append(TopPLogitsWarper(params.top_p))
        self.warpers = LogitsProcessorList(warpers)
        self.seeds = seeds
        self._streams: dict[int, torch.Generator] = {}

    def __call__(self, logits: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        scores = self.warpers(None, logits.float())  # the warpers ignore input_ids
        noise = torch.stack([self._uniform(r, scores.shape[-1], scores.device) for r in rows])
        gumbel = -torch.log(-torch.log(noise))  # U = 0 gives -inf: that token is never drawn
        return (scores.double() + gumbel).argmax(dim=-1, keepdim=True)

    def _uniform(self, row: int, size: int, device: torch.device) -> torch.Tensor:
        stream = self._streams.get(row)
        if stream is None:
            stream = self._streams[row] = torch.Generator(device=device)
            stream.manual_seed(self.seeds[row])
        return torch.rand(size, generator=stream, dtype=torch.float64, device=device)

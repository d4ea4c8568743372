"""Seeded sampling of next tokens, one random stream per answer.

torch's global generator (and `model.generate(do_sample=True)`) draws every row's noise from one
stream, so a row's sample depends on which rows shared its batch and in what order: change the
batch size or resume a killed run and every answer changes. Here each answer (a prompt key and a
sample index) owns a generator seeded from (seed, key, sample); at its step t it draws the t-th
uniform number of that stream whatever else is decoding, and takes the token where that number
falls in the cumulative distribution (inverse-CDF sampling; the sum is kept in float64).

One number per row and step, not a vector of Gumbel noise over the vocabulary: on SmolLM2's
49,152 tokens at batch 32, per-row Gumbel noise took about a third of a CPU decoding step, this
a few percent (measured side by side on a busy 2-core machine). Top-p looks at the 256 most
likely tokens first (a sort of the whole vocabulary costs about a tenth of a step; real nuclei
at temperature 0.8 held 1 to 37 tokens on GSM8K) and redoes, with every token, only a row whose
nucleus reaches past them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from failtune.backends import GenParams

_CANDIDATES = 256  # tokens a top-p cut looks at first


def greedy(logits: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """The most likely next token of each row, as a (rows, 1) tensor."""
    return logits.argmax(dim=-1, keepdim=True)


class SeededSampler:
    """Picks next tokens for rows identified by `seeds[row]`, each from its own stream.

    softmax(logits / temperature), cut to the `top_k` most likely tokens, then to the smallest
    set of them holding `top_p` of their mass (the order transformers' `generate` and vLLM
    apply them in). One sampler serves one decoding call, so its streams live no longer.
    """

    def __init__(self, params: GenParams, seeds: Sequence[int]) -> None:
        self.temperature, self.top_k, self.top_p = params.temperature, params.top_k, params.top_p
        self.seeds = seeds
        self._streams: dict[int, torch.Generator] = {}

    def __call__(self, logits: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        u = torch.cat([self._uniform(r, probs.device) for r in rows])
        vocab = probs.shape[-1]
        if not self.top_k and self.top_p == 1:
            return _draw(probs, u)
        first = min(self.top_k, vocab) if self.top_k else min(_CANDIDATES, vocab)
        tokens, wide = self._cut(probs, u, first)
        if wide.any():  # a nucleus past the first candidates: those rows again, with all
            tokens[wide] = self._cut(probs[wide], u[wide], vocab)[0]
        return tokens

    def _cut(
        self, probs: torch.Tensor, u: torch.Tensor, width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw among each row's `width` most likely tokens, cut to top-p; and which rows'
        nucleus may reach past them (only without top-k, whose cut is the candidates)."""
        kept, tokens = probs.topk(width, dim=-1)  # most likely first
        wide = torch.zeros(len(kept), dtype=torch.bool, device=kept.device)
        if self.top_p < 1:  # keep a token while the mass before it is below top_p
            mass = kept.sum(dim=-1, keepdim=True) if self.top_k else 1.0
            inside = kept.cumsum(dim=-1) - kept < self.top_p * mass
            kept = kept * inside
            if not self.top_k and width < probs.shape[-1]:
                wide = inside[:, -1]
        return tokens.gather(1, _draw(kept, u)), wide

    def _uniform(self, row: int, device: torch.device) -> torch.Tensor:
        stream = self._streams.get(row)
        if stream is None:
            stream = self._streams[row] = torch.Generator(device=device)
            stream.manual_seed(self.seeds[row])
        return torch.rand(1, generator=stream, dtype=torch.float64, device=device)


def _draw(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row, the position where u (in [0, 1)) falls in the cumulative weights: position j
    with probability weights[j] / sum; a zero weight is never drawn (u * sum rounding up to the
    sum itself, a 2^-53 event, is clamped to the last position)."""
    cdf = weights.cumsum(dim=-1, dtype=torch.float64)
    at = torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True)
    return at.clamp(max=weights.shape[-1] - 1)

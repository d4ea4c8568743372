"""Decoding in a rolling batch: a finished answer leaves at once, a waiting prompt joins.

Why not `model.generate`: a static batch runs until its longest answer ends, so on GSM8K a third
of the rows sit idle for most steps. transformers' own continuous batching (`generate_batch`,
paged attention) ran at 42 tok/s on a 2-core CPU where static batches reach 65 (SmolLM2-135M,
GSM8K, 256 tokens). This loop keeps the model's own forward pass; it only decides which rows
share each step, and keeps their keys and values in buffers that grow in place.

A row is one answer. Sampling K answers to a prompt makes K rows; rows of one prompt that join
together share one prefill, whose keys and values are copied to each (as vLLM's `n` shares a
prompt's cache). Which token a row takes is the caller's `pick`: greedy, or a seeded sampler.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from failtune.backends.sampling import greedy

_SPARE = 64  # columns a layer buffer grows by: one reallocation per 64 decoding steps
# A rolling batch refills once this fraction of its slots is free: a prefill pauses decoding,
# so joining one prompt at a time would stall the batch every few steps.
_REFILL_FRACTION = 4

# Decides when a row is finished from its generated tokens: (tokens kept, finish_reason) or None.
StopCheck = Callable[[list[int]], "tuple[int, str] | None"]
Finished = tuple[int, list[int], str]  # (row index, kept tokens, finish_reason)
# Next token of each row from its last logits: (rows, vocab) logits, row indices -> (rows, 1).
Pick = Callable[[torch.Tensor, Sequence[int]], torch.Tensor]


def _sdpa_gqa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """One decoding step's attention with grouped-query heads left grouped.

    transformers' sdpa copies the key/value heads out to every query head whenever a mask is
    given (a copy of the whole cache per layer per step: 40 % of a CPU step at batch 32);
    torch's kernel reads grouped heads directly, with the same result bit for bit.
    """
    if query.shape[2] > 1 or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        scale=kwargs.get("scaling"),
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("failtune_sdpa_gqa", _sdpa_gqa)
AttentionMaskInterface.register("failtune_sdpa_gqa", sdpa_mask)


def use_grouped_attention(model: Any) -> None:
    """Switch a CPU model on sdpa to the grouped decoding attention (CUDA keeps its kernels)."""
    if model.device.type == "cpu" and model.config._attn_implementation == "sdpa":
        model.set_attn_implementation("failtune_sdpa_gqa")


class _BufferLayer(CacheLayerMixin):
    """One layer's keys and values; the live window is columns [start, end) of a buffer.

    Appending a token writes in place where torch.cat (transformers' dynamic cache) copies the
    whole cache each step; rows are left-padded so every row's newest token is column end - 1.
    """

    is_sliding = False

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        empty = (*key_states.shape[:2], 0, key_states.shape[3])
        self._k, self._v = key_states.new_zeros(empty), value_states.new_zeros(empty)
        self.start = self.end = 0
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if self.end + n > self._k.shape[-2]:
            self._rebuffer(self.end - self.start + n + _SPARE)
        self._k[:, :, self.end : self.end + n] = key_states
        self._v[:, :, self.end : self.end + n] = value_states
        self.end += n
        self._expose()
        return self.keys, self.values

    def _expose(self) -> None:
        self.keys = self._k[:, :, self.start : self.end]
        self.values = self._v[:, :, self.start : self.end]

    def _rebuffer(self, capacity: int) -> None:
        width = self.end - self.start
        k = self._k.new_zeros((*self._k.shape[:2], capacity, self._k.shape[3]))
        v = self._v.new_zeros(k.shape)
        k[:, :, :width] = self._k[:, :, self.start : self.end]
        v[:, :, :width] = self._v[:, :, self.start : self.end]
        self._k, self._v, self.start, self.end = k, v, 0, width

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        return self.end - self.start if self.is_initialized else 0

    def get_max_length(self) -> int:
        return -1

    def select_rows(self, rows: torch.Tensor) -> None:
        self._k, self._v = self._k[rows], self._v[rows]
        self._expose()

    def drop_left(self, n: int) -> None:
        self.start += n
        self._expose()

    def join(self, other: _BufferLayer) -> None:
        """Append `other`'s rows below ours, the narrower window padded with zeros on the left."""
        width = max(self.get_seq_length(), other.get_seq_length())
        rows = self._k.shape[0] + other._k.shape[0]
        k = self._k.new_zeros((rows, self._k.shape[1], width + _SPARE, self._k.shape[3]))
        v = self._v.new_zeros(k.shape)
        top = self._k.shape[0]
        for layer, block in ((self, slice(0, top)), (other, slice(top, rows))):
            k[block, :, width - layer.get_seq_length() : width] = layer.keys
            v[block, :, width - layer.get_seq_length() : width] = layer.values
        self._k, self._v, self.start, self.end = k, v, 0, width
        self._expose()


class _Batch:
    """The rows decoding together: their prompt indices, tokens so far, mask and cache."""

    def __init__(
        self,
        rows: list[int],
        tokens: list[list[int]],
        mask: torch.Tensor,
        cache: Cache,
        last: torch.Tensor,
    ) -> None:
        self.rows, self.tokens, self.mask, self.cache, self.last = rows, tokens, mask, cache, last

    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at positions `keep`, then cut columns no remaining row attends to."""
        if len(keep) == len(self.rows):
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.rows = [self.rows[i] for i in keep]
        self.tokens = [self.tokens[i] for i in keep]
        self.mask, self.last = self.mask[index], self.last[index]
        for layer in self.cache.layers:
            layer.select_rows(index)  # type: ignore[attr-defined]
        if not keep:
            return
        lead = int(self.mask.any(dim=0).int().argmax())
        if lead:
            self.mask = self.mask[:, lead:]
            for layer in self.cache.layers:
                layer.drop_left(lead)  # type: ignore[attr-defined]

    def join(self, other: _Batch) -> None:
        width = max(self.mask.shape[1], other.mask.shape[1])
        self.mask = torch.cat([F.pad(m, (width - m.shape[1], 0)) for m in (self.mask, other.mask)])
        self.last = torch.cat([self.last, other.last])
        self.rows += other.rows
        self.tokens += other.tokens
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.join(theirs)  # type: ignore[attr-defined]


@torch.inference_mode()  # on a generator: on while it runs, off while the caller has a batch
def decode(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    slots: int,
    finished: StopCheck,
    pad_id: int,
    pick: Pick = greedy,
    shared: Sequence[int] | None = None,
) -> Iterator[list[Finished]]:
    """Answers to tokenised prompts, one per row `prompts[r]`, at most `slots` decoding at once.

    Rows join in the order given; yields, after each step, the rows that finished in it. Rows
    with equal `shared[r]` (the same prompt) that join together are prefilled once. The
    schedule depends only on `prompts`, `shared` and `slots`, so the same call gives the same
    tokens.
    """
    waiting = deque(range(len(prompts)))
    batch: _Batch | None = None
    keep_logits = {"logits_to_keep": 1} if keeps_logits(model) else {}
    while waiting or batch is not None:
        joining = _joining(slots - (len(batch.rows) if batch else 0), len(waiting), slots)
        if joining:
            rows = [waiting.popleft() for _ in range(joining)]
            new = _prefill(model, rows, prompts, shared, pad_id, pick, keep_logits)
            done = _finish(new, finished)
            if done:
                yield done
            if new.rows:
                if batch is None:
                    batch = new
                else:
                    batch.join(new)
            continue
        assert batch is not None
        batch.mask = F.pad(batch.mask, (0, 1), value=1)
        out = model(
            input_ids=batch.last,
            attention_mask=batch.mask,
            position_ids=batch.mask.sum(dim=1, keepdim=True) - 1,
            past_key_values=batch.cache,
            use_cache=True,
            **keep_logits,
        )
        batch.last = pick(out.logits[:, -1], batch.rows)
        for tokens, token in zip(batch.tokens, batch.last[:, 0].tolist(), strict=True):
            tokens.append(token)
        done = _finish(batch, finished)
        if done:
            yield done
        if not batch.rows:
            batch = None


def _joining(free: int, waiting: int, slots: int) -> int:
    """How many waiting prompts join the batch now; 0: decode a step first."""
    if waiting and free >= min(waiting, max(1, slots // _REFILL_FRACTION)):
        return min(free, waiting)
    return 0


def schedule(generated: Sequence[int], slots: int) -> tuple[list[int], list[int]]:
    """(rows of each decoding step, rows of each prefill) that `decode` runs for answers
    of `generated` tokens each (the first one made by the prefill), in that order.

    Lets a cost estimate price a whole split from a timed sample: the sample's steps are
    timed, the split's steps are counted here with the very rule the decoder follows.
    """
    waiting = deque(generated)
    left: list[int] = []  # tokens each decoding row still has to make
    decodes: list[int] = []
    prefills: list[int] = []
    while waiting or left:
        joining = _joining(slots - len(left), len(waiting), slots)
        if joining:
            prefills.append(joining)
            left += [n - 1 for n in (waiting.popleft() for _ in range(joining)) if n > 1]
            continue
        decodes.append(len(left))
        left = [n - 1 for n in left if n > 1]
    return decodes, prefills


def _prefill(
    model: Any,
    rows: list[int],
    prompts: Sequence[Sequence[int]],
    shared: Sequence[int] | None,
    pad_id: int,
    pick: Pick,
    keep_logits: dict[str, int],
) -> _Batch:
    """Run the joining rows' prompts, each distinct prompt once, and pick their first tokens."""
    keys = rows if shared is None else [shared[r] for r in rows]
    first: dict[int, int] = {}  # shared key -> position of its prompt in the prefill
    unique: list[int] = []  # a row holding each distinct prompt
    for r, key in zip(rows, keys, strict=True):
        if key not in first:
            first[key] = len(unique)
            unique.append(r)
    inputs = left_padded([prompts[r] for r in unique], pad_id, model.device)
    cache = Cache(layer_class_to_replicate=_BufferLayer)
    out = model(**inputs, past_key_values=cache, use_cache=True, **keep_logits)
    logits, mask = out.logits[:, -1], inputs["attention_mask"]
    if len(unique) < len(rows):  # copy each shared prompt's cache to its rows
        index = torch.tensor([first[k] for k in keys], device=mask.device)
        logits, mask = logits[index], mask[index]
        for layer in cache.layers:
            layer.select_rows(index)  # type: ignore[attr-defined]
    last = pick(logits, rows)
    return _Batch(list(rows), [[t] for t in last[:, 0].tolist()], mask, cache, last)


def left_padded(seqs: Sequence[Sequence[int]], pad_id: int, device: Any) -> dict[str, Any]:
    """Model inputs for token sequences padded on the left, so every row ends at the last
    position; position ids count real tokens only."""
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": (mask.cumsum(dim=1) - 1).clamp(min=0),
    }


def _finish(batch: _Batch, finished: StopCheck) -> list[Finished]:
    """Take finished rows out of `batch` and return them."""
    done, keep = [], []
    for pos, (row, tokens) in enumerate(zip(batch.rows, batch.tokens, strict=True)):
        verdict = finished(tokens)
        if verdict is None:
            keep.append(pos)
        else:
            done.append((row, tokens[: verdict[0]], verdict[1]))
    if done:
        batch.keep(keep)
    return done


def keeps_logits(model: Any) -> bool:
    """Whether the forward pass can compute logits for the last positions only."""
    supports = getattr(model, "_supports_logits_to_keep", None)
    return bool(supports and supports())

"""Decoding in a rolling batch: a finished answer leaves at once, a waiting prompt joins.

Why not `model.generate`: a static batch runs until its longest answer ends, so on GSM8K a third
of the rows sit idle for most steps. transformers' own continuous batching (`generate_batch`,
paged attention) ran at 42 tok/s on a 2-core CPU where static batches reach 65 (SmolLM2-135M,
GSM8K, 256 tokens). This loop keeps the model's own forward pass; it only decides which rows
share each step, and keeps their keys and values in buffers that grow in place.

A row is one answer. Sampling K answers to a prompt makes K rows; rows of one prompt that join
together share one prefill, whose keys and values are copied to each (as vLLM's `n` shares a
prompt's cache). Which token a row takes is the caller's `pick`: greedy, or a seeded sampler.

Two layouts. Left-padded (greedy's, unchanged since the first release): every row's newest
token is the last column, so a row's keys move with the longest row, and its logits' last bits
depend on the rows beside it. Aligned (sampling's): a row's token t is column t, each prompt is
prefilled alone, decoding attention is plain matrix products and the batch keeps a row count
the BLAS treats alike (ghost rows fill up): a row's tokens depend on its prompt and pick only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache
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
    if kwargs.get("aligned_rows"):
        return _aligned_attention(query, key, value, attention_mask, kwargs["scaling"]), None
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        scale=kwargs.get("scaling"),
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def _aligned_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """Decoding attention whose result for a row does not depend on the other rows.

    torch's fused CPU kernel splits its work by the number of rows, so a row's bits change with
    the batch; two batched matrix products and a softmax do not (measured over batch counts 1 to
    40 and widths up to 1,200), provided the row's keys sit at the same columns: the aligned
    layout's. Grouped query heads read their key/value head without copies, and this took half
    the time of the fused kernel at batch 32 on a 2-core CPU.
    """
    rows, heads, _, dim = query.shape
    groups = key.shape[1]
    scores = torch.matmul(query.view(rows, groups, heads // groups, dim), key.transpose(-1, -2))
    scores = (scores * scaling).masked_fill(~attention_mask, float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), value)
    return out.view(rows, 1, heads, dim)


GROUPED_ATTENTION = "failtune_sdpa_gqa"
AttentionInterface.register(GROUPED_ATTENTION, _sdpa_gqa)
AttentionMaskInterface.register(GROUPED_ATTENTION, sdpa_mask)


def use_grouped_attention(model: Any) -> None:
    """Switch a CPU model on sdpa to the grouped decoding attention (CUDA keeps its kernels)."""
    if model.device.type == "cpu" and model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(GROUPED_ATTENTION)


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

    def step(self, model: Any, pick: Pick, keep_logits: dict[str, int]) -> None:
        """Decode one token for every row."""
        self.mask = F.pad(self.mask, (0, 1), value=1)
        out = model(
            input_ids=self.last,
            attention_mask=self.mask,
            position_ids=self.mask.sum(dim=1, keepdim=True) - 1,
            past_key_values=self.cache,
            use_cache=True,
            **keep_logits,
        )
        self.last = pick(out.logits[:, -1], self.rows)
        for tokens, token in zip(self.tokens, self.last[:, 0].tolist(), strict=True):
            tokens.append(token)


class _ColumnLayer(CacheLayerMixin):
    """One layer's keys and values in the aligned layout: a row's token t is column t.

    Each step writes every row's new key at that row's own column (`batch.lengths`) and exposes
    columns [0, batch.width); a row attends to its own columns only (the batch's mask).
    """

    is_sliding = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, batch: _AlignedBatch) -> None:
        super().__init__()
        self.keys, self.values, self.batch = keys, values, batch
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Never called: the layer is built from prefilled keys."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.batch
        self.keys[b.index, :, b.lengths] = key_states[:, :, 0]
        self.values[b.index, :, b.lengths] = value_states[:, :, 0]
        return self.keys[:, :, : b.width], self.values[:, :, : b.width]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.batch.width, 0

    def get_seq_length(self) -> int:
        return self.batch.width - 1

    def get_max_length(self) -> int:
        return -1


class _AlignedBatch:
    """Rows decoding together so that a row's tokens do not depend on which rows they are.

    Two things would make them depend: where a row's keys sit (the left-padded layout moves
    them with the longest row) and how many rows a matrix product has (a CPU BLAS computes a
    row's last bits differently when a product has, say, 3 rows rather than 4). Here a row's
    token t is column t of every layer, and the batch always has a row count `steady` allows,
    made up when short with ghost rows: finished or copied rows whose tokens nobody reads.
    `rows[p]` is None for a ghost.
    """

    def __init__(
        self,
        rows: list[int | None],
        tokens: list[list[int]],
        lengths: torch.Tensor,
        last: torch.Tensor,
        layers: list[tuple[torch.Tensor, torch.Tensor]],
        steady: Callable[[int], int],
    ) -> None:
        self.rows, self.tokens, self.lengths, self.last = rows, tokens, lengths, last
        self.steady = steady
        self.cache = Cache(layers=[_ColumnLayer(k, v, self) for k, v in layers])
        self.index = torch.arange(len(rows), device=lengths.device)
        self.width = 0

    def keep(self, keep: list[int]) -> None:
        """Keep the live rows at positions `keep`, and as few ghosts as make a steady count
        (shortest first; copies of a live row when there are not enough)."""
        if not keep:
            self.rows = []
            return
        need = self.steady(len(keep)) - len(keep)
        kept = set(keep)
        spare = sorted((p for p in range(len(self.rows)) if p not in kept), key=self._length)
        ghosts = (spare + [keep[0]] * need)[:need]
        order = keep + ghosts
        if order == list(range(len(self.rows))) and all(self.rows[p] is None for p in ghosts):
            return
        index = torch.tensor(order, device=self.lengths.device)
        self.rows = [self.rows[p] for p in keep] + [None] * len(ghosts)
        self.tokens = [self.tokens[p] for p in keep] + [[] for _ in ghosts]
        self.lengths, self.last = self.lengths[index], self.last[index]
        self.index = torch.arange(len(order), device=index.device)
        width = int(self.lengths.max()) + 1 + _SPARE
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, :width]  # type: ignore[index]
            layer.values = layer.values[index, :, :width]  # type: ignore[index]

    def _length(self, p: int) -> int:
        return int(self.lengths[p])

    def join(self, other: _AlignedBatch) -> None:
        self.rows += other.rows
        self.tokens += other.tokens
        self.lengths = torch.cat([self.lengths, other.lengths])
        self.last = torch.cat([self.last, other.last])
        self.index = torch.arange(len(self.rows), device=self.lengths.device)
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            width = max(mine.keys.shape[2], theirs.keys.shape[2])  # type: ignore[union-attr]
            mine.keys, mine.values = (
                torch.cat([F.pad(t, (0, 0, 0, width - t.shape[2])) for t in pair])
                for pair in ((mine.keys, theirs.keys), (mine.values, theirs.values))
            )

    def step(self, model: Any, pick: Pick, keep_logits: dict[str, int]) -> None:
        """Decode one token for every live row; a ghost rewrites its last column."""
        self.keep([p for p, r in enumerate(self.rows) if r is not None])
        self.width = int(self.lengths.max()) + 1
        for layer in self.cache.layers:
            if layer.keys.shape[2] < self.width:  # type: ignore[union-attr]
                layer.keys, layer.values = (  # type: ignore[union-attr]
                    F.pad(t, (0, 0, 0, _SPARE)) for t in (layer.keys, layer.values)
                )
        columns = torch.arange(self.width, device=self.lengths.device)
        out = model(
            input_ids=self.last,
            attention_mask=(columns <= self.lengths[:, None])[:, None, None, :],
            position_ids=self.lengths[:, None],
            past_key_values=self.cache,
            use_cache=True,
            aligned_rows=True,
            **keep_logits,
        )
        live = [p for p, r in enumerate(self.rows) if r is not None]
        at = torch.tensor(live, device=self.lengths.device)
        picked = pick(out.logits[at, -1], [self.rows[p] for p in live])  # type: ignore[misc]
        self.last[at] = picked
        self.lengths[at] += 1
        for p, token in zip(live, picked[:, 0].tolist(), strict=True):
            self.tokens[p].append(token)


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
    steady: Callable[[int], int] | None = None,
) -> Iterator[list[Finished]]:
    """Answers to tokenised prompts, one per row `prompts[r]`, at most `slots` decoding at once.

    Rows join in the order given; yields, after each step, the rows that finished in it. Rows
    with equal `shared[r]` (the same prompt) that join together are prefilled once. The
    schedule depends only on `prompts`, `shared` and `slots`, so the same call gives the same
    tokens.

    With `steady` (the row count to give a batch of n rows, see `steady_rows`), rows decode in
    the aligned layout, each prompt prefilled on its own: a row's tokens then depend on its
    prompt and its `pick` alone, not on `slots` or on which rows it shares steps with.
    """
    waiting = deque(range(len(prompts)))
    batch: _Batch | _AlignedBatch | None = None
    keep_logits = {"logits_to_keep": 1} if keeps_logits(model) else {}
    while waiting or batch is not None:
        decoding = sum(r is not None for r in batch.rows) if batch else 0  # ghosts hold no slot
        joining = _joining(slots - decoding, len(waiting), slots)
        if joining:
            rows = [waiting.popleft() for _ in range(joining)]
            if steady is None:
                new = _prefill(model, rows, prompts, shared, pad_id, pick, keep_logits)
            else:
                new = _prefill_aligned(model, rows, prompts, shared, pick, keep_logits, steady)
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
        batch.step(model, pick, keep_logits)
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


def _prefill_aligned(
    model: Any,
    rows: list[int],
    prompts: Sequence[Sequence[int]],
    shared: Sequence[int] | None,
    pick: Pick,
    keep_logits: dict[str, int],
    steady: Callable[[int], int],
) -> _AlignedBatch:
    """Run each distinct prompt of the joining rows on its own (no padding, so the same prompt
    always gives the same bits), lay out their keys from column 0, pick the first tokens."""
    keys = rows if shared is None else [shared[r] for r in rows]
    runs: dict[int, tuple[torch.Tensor, Cache]] = {}
    for r, key in zip(rows, keys, strict=True):
        if key not in runs:
            ids = torch.tensor([list(prompts[r])], device=model.device)
            cache = DynamicCache()
            out = model(input_ids=ids, past_key_values=cache, use_cache=True, **keep_logits)
            runs[key] = out.logits[:, -1], cache
    lengths = [len(prompts[r]) for r in rows]
    layers = []
    for i, layer in enumerate(runs[keys[0]][1].layers):
        k = layer.keys.new_zeros(
            (len(rows), layer.keys.shape[1], max(lengths) + _SPARE, layer.keys.shape[3])
        )  # type: ignore[union-attr]
        v = torch.zeros_like(k)
        for row, key in enumerate(keys):
            prompt = runs[key][1].layers[i]
            k[row, :, : lengths[row]] = prompt.keys[0]  # type: ignore[index]
            v[row, :, : lengths[row]] = prompt.values[0]  # type: ignore[index]
        layers.append((k, v))
    last = pick(torch.cat([runs[key][0] for key in keys]), rows)
    return _AlignedBatch(
        list(rows),
        [[t] for t in last[:, 0].tolist()],
        torch.tensor(lengths, device=model.device),
        last,
        layers,
        steady,
    )


def steady_rows(model: Any, most: int = 64) -> Callable[[int], int]:
    """The row count to decode n rows with so that every row gets the bits it gets in any
    other batch: the smallest m >= n at which each of the model's linear layers, probed with
    random rows, computes rows 0..m-1 exactly as in a product of `most` rows (n itself beyond
    `most`). On a 2-core MKL CPU that is every m >= 12 and the multiples of 4; the rule is the
    BLAS's, hence probed on the machine that decodes."""
    shapes = {
        (m.in_features, m.out_features): m.weight
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m.weight.dtype.is_floating_point
    }
    gen = torch.Generator().manual_seed(0)
    good = [True] * (most + 1)
    with torch.inference_mode():
        for (fan_in, _), weight in shapes.items():
            w = weight[:256]
            x = torch.randn(most, fan_in, generator=gen).to(w)
            whole = F.linear(x, w)
            for m in range(1, most):
                good[m] = good[m] and torch.equal(F.linear(x[:m], w), whole[:m])

    def count(n: int) -> int:
        return next((m for m in range(n, most + 1) if good[m]), n)

    return count


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


def _finish(batch: _Batch | _AlignedBatch, finished: StopCheck) -> list[Finished]:
    """Take finished rows out of `batch` and return them."""
    done, keep = [], []
    for pos, (row, tokens) in enumerate(zip(batch.rows, batch.tokens, strict=True)):
        if row is None:  # a ghost
            continue
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

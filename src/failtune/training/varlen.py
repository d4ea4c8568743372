"""Attention for padding-free batches on sdpa: computed example by example.

A padding-free batch is one row holding every example, with position ids restarting at each.
transformers then builds a block-diagonal mask, which is exact, but sdpa still computes the
whole (Σ Lᵢ)² score matrix: at batch 8 that is several times the attention work of the padded
batch. Flash-attention kernels read the example boundaries (`cu_seq_lens_q`, which TRL's
padding-free collator passes) and cost Σ Lᵢ²; this does the same with one causal sdpa call per
example. Any other batch (generation, padded training) goes to transformers' sdpa unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

NAME = "failtune_varlen_sdpa"


def varlen_sdpa_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: Any = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if cu_seq_lens_q is None or query.shape[0] != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    bounds = cu_seq_lens_q.tolist()
    parts = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            dropout_p=dropout,
            scale=scaling,
            is_causal=True,
        )
        for start, end in itertools.pairwise(bounds)
    ]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def register() -> None:
    """Make NAME a valid attn_implementation (masks built as for sdpa)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, varlen_sdpa_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)


@contextmanager
def per_example_attention(model: Any) -> Iterator[None]:
    """While training padding-free, an sdpa model attends example by example; restored after."""
    if model.config._attn_implementation != "sdpa":  # flash kernels already split; eager: as is
        yield
        return
    register()
    model.set_attn_implementation(NAME)
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")

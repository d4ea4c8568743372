"""What a run cost, from its own measurements, beside what buying the data from an API would cost.

No price lives in this code: the user gives the machine's hourly price and the API's price per
million tokens, and every figure comes with the assumptions it rests on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from failtune.model_loading import load_tokenizer, resolve_model


@dataclass
class CostSummary:
    rows: list[tuple[str, float, float | None]]  # step, wall seconds, USD (None: no price given)
    total_seconds: float
    machine_usd: float | None
    prompt_tokens: int
    completion_tokens: int
    api_usd: float | None
    assumptions: list[str] = field(default_factory=list)


def summarize_cost(
    steps: Mapping[str, Mapping[str, Any]],
    kind_of: Callable[[str], str | None],
    *,
    gpu_hourly_usd: float | None,
    api_usd_per_mtok: float | None,
) -> CostSummary:
    """Cost each recorded step at the given hourly price, and price distillation per token.

    Distillation means asking a teacher API to answer the same extraction prompts; the teacher is
    assumed to write answers as long as the model's own measured ones. `kind_of` names the kind
    of a recorded step (failtune.pipeline.plan), so the extractions are found.
    """
    rate = None if gpu_hourly_usd is None else gpu_hourly_usd / 3600
    rows = [
        (name, float(rec.get("seconds", 0.0)), None if rate is None else rec["seconds"] * rate)
        for name, rec in steps.items()
        if rec.get("status") == "done"
    ]
    total = sum(s for _, s, _ in rows)
    extracts = [
        rec for name, rec in steps.items() if kind_of(name) == "extract" and "problems" in rec
    ]
    prompt = sum(rec["prompt_tokens"] for rec in extracts)
    completion = sum(rec["completion_tokens"] for rec in extracts)
    problems = sum(rec["problems"] for rec in extracts)
    api = None if api_usd_per_mtok is None else (prompt + completion) / 1e6 * api_usd_per_mtok
    assumptions = [
        "Times are the wall-clock seconds this run measured for each step (for a step that was "
        "interrupted and resumed, the sum of its attempts; an attempt killed outright counts "
        "until the last file it wrote).",
        "Machine cost = total measured hours × "
        + (
            f"${gpu_hourly_usd:g} per hour (--gpu-hourly-usd), the whole run billed at that rate."
            if gpu_hourly_usd is not None
            else "an hourly price: none was given (--gpu-hourly-usd), so it is not priced."
        ),
        f"Distillation = a teacher API answering the same {problems} extraction prompts: "
        f"{prompt:,} prompt tokens counted with the model's tokenizer and chat template, and "
        f"{completion:,} completion tokens, assuming the teacher's answers are as long as the "
        "model's measured ones; one flat price for input and output tokens, "
        + (
            f"${api_usd_per_mtok:g} per million (--api-usd-per-mtok); "
            if api_usd_per_mtok is not None
            else "none given (--api-usd-per-mtok), so it is not priced; "
        )
        + "retries and the teacher's own wrong answers are not counted.",
    ]
    return CostSummary(
        rows,
        total,
        None if rate is None else total * rate,
        prompt,
        completion,
        api,
        assumptions,
    )


@functools.cache
def _tokenizer(model: str) -> Any:
    return load_tokenizer(resolve_model(model))


def token_counts(model: str, records: list[dict[str, Any]]) -> dict[str, int]:
    """Measured tokens of an extraction: what a teacher API would be sent and would write."""
    tokenizer = _tokenizer(model)
    prompts = [r["prompt"] for r in records]
    if tokenizer.chat_template:
        rendered = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in rendered]
    else:
        lengths = [len(tokenizer(p).input_ids) for p in prompts]
    return {
        "problems": len(records),
        "prompt_tokens": sum(lengths),
        "completion_tokens": sum(r["completion_tokens"] or 0 for r in records),
    }

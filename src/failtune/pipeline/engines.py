"""The engines a run's steps generate with, kept apart from the run's state.

One model stays open while consecutive steps use it (extract and the baseline share the base
model's weights, or the vLLM engine); it is released before training, which needs the memory.
A model trained in this process stays in memory for the validation that follows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from failtune.backends import Backend, LazyBackend, engine_kind, load_backend
from failtune.config.options import GenerationOptions
from failtune.console import note
from failtune.files import sha256_file
from failtune.model_loading import resolve_model

if TYPE_CHECKING:
    from failtune.training.sft import TrainResult


def open_backend(model: str, o: GenerationOptions, served: str | None = None) -> Backend:
    """How a run opens a model to generate with (`failtune run --estimate` opens it alike)."""
    opened = load_backend(
        served if o.backend == "openai" else model,
        backend=o.backend,
        dtype=o.dtype,
        device=o.device,
        batch_size=o.batch_size,
        server=o.server(),
        **o.engine(),
    )
    return opened.open() if isinstance(opened, LazyBackend) else opened


def served_base(o: GenerationOptions, served_model: str | None, lora_r: int) -> str | None:
    """backend openai: the base model's name on the server, once it is known that the server
    can load the trained adapter later; checked before any work starts."""
    if o.backend != "openai":
        return None
    from failtune.backends.openai import OpenAIBackend

    server = OpenAIBackend.connect(served_model, **o.server())
    server.check_adapter_loading(lora_r)
    return server.model_name


class Engines:
    """The opened model (at most one) and the trained models still in memory."""

    def __init__(self, served: str | None = None) -> None:
        self.served = served  # backend openai: the base model's name on the server
        self._open: dict[str, Backend] = {}
        self.trained: dict[Path, TrainResult] = {}  # adapter folder → its training, in memory
        self.closed: dict[str, Any] = {}  # what vLLM gave back, by the step it was closed for

    def backend(self, model: str, o: GenerationOptions) -> Backend:
        """The opened model, kept while steps use it. Called only inside a step that has work
        to do, so a fully resumed run loads nothing."""
        from failtune.backends.hf import HFBackend

        if model not in self._open:
            self._open.clear()  # the previous round's model is not used again
            self._open[model] = open_backend(model, o, self.served)
        opened = self._open[model]
        if isinstance(opened, HFBackend):  # transformers batches statically; vLLM by itself
            opened.batch_size = o.batch_size
        return opened

    def candidate(self, adapter: Path, o: GenerationOptions) -> Backend:
        """A trained adapter to generate with: with transformers, the model still in memory when
        this process trained it; else the adapter opened lazily by the run's engine (vLLM: LoRA
        or merged, see vllm.serve_merged), or loaded into the OpenAI-compatible server."""
        kind = engine_kind(o.backend, o.device)
        result = self.trained.pop(adapter, None) if kind == "hf" else None
        if kind != "hf":
            self.trained.clear()  # other engines read files
        if kind == "openai":
            return self._served_adapter(adapter, o)
        # A merged model computes slightly differently from base + adapter: only the unmerged
        # one in memory is what a resumed run (which loads base + adapter) would generate with.
        if result is not None and result.merged_dir is None:
            from failtune.backends.hf import HFBackend

            label = resolve_model(str(adapter)).label  # what LazyBackend calls it on a resume
            return HFBackend(result.model, result.tokenizer, batch_size=o.batch_size, label=label)
        return load_backend(
            str(adapter),
            backend=o.backend,
            dtype=o.dtype,
            device=o.device,
            batch_size=o.batch_size,
            **o.engine(),
        )

    def _served_adapter(self, adapter: Path, o: GenerationOptions) -> Backend:
        """The adapter loaded into the server under a name unique to its weights (a resumed
        run, or validation after a sweep's choice, finds it loaded)."""
        from failtune.backends.openai import OpenAIBackend

        server = OpenAIBackend.connect(self.served, **o.server())
        digest = sha256_file(adapter / "adapter_model.safetensors")[:12]
        return server.with_adapter(f"failtune-{digest}", adapter)

    def release(self, before: str | None = None) -> None:
        """Free the generation engine (training needs the memory); note what vLLM gave back."""
        from failtune.backends.vllm import close_engine

        self._open.clear()
        freed = close_engine()
        if freed is None or before is None:
            return
        self.closed[before] = freed
        gpu = (
            f", CUDA allocated {freed['cuda_allocated_mib_before']:.0f} → "
            f"{freed['cuda_allocated_mib_after']:.0f} MiB"
            if "cuda_allocated_mib_before" in freed
            else ""
        )
        note(
            f"vLLM engine closed before {before}: process RSS {freed['rss_mib_before']:.0f} → "
            f"{freed['rss_mib_after']:.0f} MiB{gpu}"
        )

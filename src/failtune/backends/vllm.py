"""vLLM backend: offline `vllm.LLM`, every prompt queued at once, finished answers streamed out.

vLLM schedules its own batches (continuous batching, paged attention), so all prompts go into
the engine together and the engine is stepped here: answers are handed to grading in small
groups as they finish, so results.jsonl grows during the run (a kill loses only answers not yet
handed out) while the engine never waits for a static batch to drain.

vLLM has literal stop strings but no regex stop, so the task's `stop_after` rule (GSM8K: stop
after "The answer is N.") is applied after generation: the text is cut and the token count is
the prefix that reaches the match, exactly as the transformers backend reports it. The cost is
the tokens generated between the match and EOS, which the engine computed for nothing; the
throughput benchmark reports it (`tokens_past_stop_rule`). SmolLM2 on GSM8K usually ends its
turn right after the answer, so the waste is small there.

vLLM cannot read a quantised GGUF on every platform (on CPU not at all), so a GGUF model,
`builtin:smollm2` included, is dequantised once into a cached safetensors folder
(`failtune.model_loading.gguf_as_folder`) and served from there.
"""

from __future__ import annotations

import bisect
import os
import re
import tempfile
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from failtune.backends import (
    BackendInfo,
    Generation,
    GenParams,
    Sampled,
    ScoreRequest,
    apply_stop_rules,
    cannot_score,
    first_samples,
    prompt_keys,
    sample_seed,
    vllm_lora_rank,
)
from failtune.errors import FailtuneError
from failtune.files import read_json
from failtune.model_loading import (
    ModelRef,
    gguf_as_folder,
    load_tokenizer,
    merged_folder,
    resolve_model,
)

# Finished answers are handed to grading in groups of at least this size (or when the engine
# runs dry), so appends stay cheap while a kill loses little.
FLUSH_EVERY = 16

# One engine per process: a second vllm.LLM would fight the first for GPU memory.
_ENGINE: tuple[tuple[Any, ...], Any] | None = None
# vLLM's CPU worker sets the process's torch threads for itself; given back on close.
_TORCH_THREADS: int | None = None


def cpu_defaults() -> None:
    """Settings that make vLLM usable on a CPU box; anything the user exported wins.

    Without them vLLM keeps one core idle, writes its cache to ~/.cache/vllm and starts an
    engine process (slow start, and code must then sit under `if __name__ == "__main__"`).
    """
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache
    if "VLLM_CACHE_ROOT" not in os.environ:
        os.environ["VLLM_CACHE_ROOT"] = tempfile.mkdtemp(prefix="failtune-vllm-")


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def served_path(ref: ModelRef) -> str:
    """What vLLM loads: the model folder or hub id, or the converted folder of a GGUF."""
    return str(gguf_as_folder(ref)) if ref.gguf_file else ref.path


def serve_merged() -> bool:
    """Serve a LoRA adapter folded into its base (a plain model) rather than through vLLM's LoRA.

    vLLM's LoRA kernels are fast on a GPU, where the base engine serves the adapter with no
    merged copy to write. On CPU they are slow: the demo adapter on 200 arith test problems
    (vllm-cpu 0.32, idle 2 cores, benchmarks/adapter_serving.py) took 132 s through LoRA, 54 s
    with transformers and 19 s merged (plus 12 s to merge), all 200 answers text-identical.
    """
    return not _has_gpu()


def _lora_rank(adapter: str) -> int:
    """vLLM sizes its LoRA buffers up front from max_lora_rank: the adapter's r, rounded up."""
    return vllm_lora_rank(int(read_json(Path(adapter) / "adapter_config.json").get("r", 16)))


def _vllm_dtype(dtype: str, gpu: bool) -> str:
    """fp32 on CPU (no fast bf16 there: slower and different output); vLLM's choice on GPU."""
    names = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    if dtype == "auto":
        return "auto" if gpu else "float32"
    if dtype not in ("float32", "bfloat16", "float16", *names):
        raise FailtuneError(f"unknown dtype {dtype!r} (use auto, float32, bfloat16 or float16)")
    return names.get(dtype, dtype)


def open_engine(
    path: str,
    *,
    tokenizer: str | None = None,
    dtype: str = "auto",
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
    max_lora_rank: int | None = None,
    enforce_eager: bool | None = None,
) -> Any:
    """A `vllm.LLM`, reused when asked again with the same settings (engines are slow to start).

    An engine opened with LoRA support also serves the bare base model, so validating an
    adapter against its base needs one engine; any other change closes the old engine first.
    """
    global _ENGINE, _TORCH_THREADS
    gpu = _has_gpu()
    if not gpu:
        cpu_defaults()
    key = (path, tokenizer, dtype, tensor_parallel_size, gpu_memory_utilization, max_model_len)
    if _ENGINE is not None and _ENGINE[0][:-1] == key:
        engine_rank = _ENGINE[0][-1]
        if max_lora_rank is None or (engine_rank is not None and engine_rank >= max_lora_rank):
            return _ENGINE[1]
    close_engine()
    import torch
    from vllm import LLM

    _TORCH_THREADS = torch.get_num_threads()

    options: dict[str, Any] = {}
    if max_lora_rank is not None:
        options.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
    if max_model_len is not None:
        options["max_model_len"] = max_model_len
    if not gpu:
        # A prompt split across scheduler steps makes vLLM rewind its seeded generator, which
        # CPU generators cannot do ("CPU Generator does not use offset"): seeded sampling of
        # many prompts crashed. Whole prompts only (vLLM then sizes a step's token budget to
        # hold the longest prompt the model takes).
        options["enable_chunked_prefill"] = False
    try:
        llm = LLM(
            model=path,
            tokenizer=tokenizer or path,
            dtype=_vllm_dtype(dtype, gpu),
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            # CUDA graphs pay off on a GPU; on CPU compiling takes ~2 min for a few percent.
            enforce_eager=(not gpu) if enforce_eager is None else enforce_eager,
            seed=0,
            # vLLM's weight-loading bar passes disable= itself, so tqdm's switch misses it.
            use_tqdm_on_load=os.environ.get("TQDM_DISABLE") != "1",
            **options,
        )
    except (OSError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FailtuneError(f"vLLM could not open {path}: {first}") from e
    _ENGINE = ((*key, max_lora_rank), llm)
    return llm


def close_engine() -> dict[str, float] | None:
    """Shut the cached engine down and free its memory (its worker processes, its KV cache).

    Returns the process's memory before and after in MiB (RSS; on a GPU also what torch has
    allocated there), so a caller can show that it was given back; None if none was open.
    """
    global _ENGINE
    if _ENGINE is None:
        return None
    before = _memory_mib()
    llm = _ENGINE[1]
    _ENGINE = None
    llm.llm_engine.engine_core.shutdown()
    del llm
    import gc

    import torch

    gc.collect()
    if _has_gpu():
        torch.cuda.empty_cache()
    _trim_heap()
    if _TORCH_THREADS:  # transformers work after this runs on all cores again
        torch.set_num_threads(_TORCH_THREADS)
    after = _memory_mib()
    return {
        f"{k}_{when}": v for when, m in (("before", before), ("after", after)) for k, v in m.items()
    }


def _memory_mib() -> dict[str, float]:
    import psutil  # a dependency of vLLM
    import torch

    found = {"rss_mib": round(psutil.Process().memory_info().rss / 2**20, 1)}
    if _has_gpu():
        found["cuda_allocated_mib"] = round(torch.cuda.memory_allocated() / 2**20, 1)
    return found


def _trim_heap() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise; RSS would lie)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


class VLLMBackend:
    """Generation with a shared `vllm.LLM`, optionally through a LoRA adapter."""

    def __init__(self, llm: Any, tokenizer: Any, *, label: str, adapter: str | None = None):
        from failtune.backends.hf import eos_ids

        self.llm, self.tokenizer = llm, tokenizer
        self.eos_ids = eos_ids(_gen_config(llm), tokenizer)
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest(Path(adapter).name or "adapter", 1, str(Path(adapter)))
        config = llm.llm_engine.vllm_config
        self.info = BackendInfo(
            backend="vllm",
            model=label,
            details={
                "engine": f"vllm {_vllm_version()}",
                "served_path": config.model_config.model,
                "dtype": str(config.model_config.dtype).removeprefix("torch."),
                "device": config.device_config.device_type,
                "tensor_parallel_size": config.parallel_config.tensor_parallel_size,
                "enforce_eager": config.model_config.enforce_eager,
                "lora": str(adapter) if adapter else None,
                "chat_template": bool(tokenizer.chat_template),
            },
        )

    @classmethod
    def load(
        cls,
        model: str,
        *,
        base: str | None = None,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        **_ignored: Any,
    ) -> VLLMBackend:
        """Open `model` (hub id, folder, GGUF, LoRA adapter on its base) in vLLM.

        An adapter is served through vLLM's LoRA support, or folded into its base's weights
        where that is faster (`serve_merged`); either way it answers under the adapter's name.
        """
        ref = resolve_model(model, base=base)
        merged = ref.adapter if ref.adapter and serve_merged() else None
        served = ModelRef(str(merged_folder(ref))) if merged else ref
        llm = open_engine(
            served_path(served),
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            max_lora_rank=_lora_rank(served.adapter) if served.adapter else None,
        )
        backend = cls(llm, load_tokenizer(served), label=ref.label, adapter=served.adapter)
        backend.info.details["merged_adapter"] = merged
        return backend

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
        """Every answer not in `skip` goes into the engine at once; vLLM batches continuously."""
        from failtune.backends.hf import prompt_ids

        # The exact token ids the transformers backend feeds (chat template, no double BOS).
        requests, sampling, answers = [], [], []  # answers: (prompt, its samples) per request
        for i, key in enumerate(prompt_keys(prompts, keys)):
            missing = [s for s in range(params.samples) if (i, s) not in skip]
            if not missing:
                continue
            ids = {"prompt_token_ids": prompt_ids(self.tokenizer, prompts[i])}
            seed = sample_seed(params.seed, key) if params.sampled else None
            # All K at once share the prompt's cache; a resumed prompt asks for what is missing.
            parts = [missing] if len(missing) == params.samples else [[s] for s in missing]
            for samples in parts:
                requests.append(ids)
                sampling.append(self._sampling(params, len(samples), seed, samples[0]))
                answers.append((i, samples))
        internal = self.llm.enqueue(requests, sampling, lora_request=self.lora, use_tqdm=False)
        # enqueue returns vLLM's internal ids ("<counter>-<random>"); outputs carry "<counter>".
        index = {rid.split("-")[0]: (answers[j], rid) for j, rid in enumerate(internal)}
        engine = self.llm.llm_engine
        pending: list[Sampled] = []
        try:
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished and out.request_id in index:
                        (i, samples), _ = index.pop(out.request_id)
                        pending += [
                            (i, samples[done.index], self._generation(done, params))
                            for done in out.outputs
                        ]
                if pending and (len(pending) >= FLUSH_EVERY or not index):
                    yield pending
                    pending = []
            if pending:
                yield pending
        finally:
            if index:  # the caller stopped early (kill, error): free the engine for reuse
                engine.abort_request([rid for _, rid in index.values()], internal=True)

    def _sampling(self, params: GenParams, n: int, seed: int | None, first: int) -> Any:
        """vLLM's settings for `n` answers from sample `first` on (greedy: temperature 0)."""
        from vllm import SamplingParams

        common = {
            "max_tokens": params.max_new_tokens,
            "stop": list(params.stop) or None,
            "stop_token_ids": self.eos_ids,
            "skip_special_tokens": True,
        }
        if seed is None:
            return SamplingParams(temperature=0.0, **common)
        return SamplingParams(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=seed + first,
            **common,
        )

    def loglikelihood(
        self, requests: Sequence[ScoreRequest]
    ) -> Iterator[list[tuple[int, list[float]]]]:
        raise cannot_score("vllm")

    def _generation(self, done: Any, params: GenParams) -> Generation:
        """One of a request's answers (a vLLM CompletionOutput) with the stop rules applied."""
        after = re.compile(params.stop_after) if params.stop_after else None
        tokens = list(done.token_ids)
        n = len(tokens)
        reason = "length" if done.finish_reason == "length" else "stop"
        if after is not None and after.search(done.text):
            n = _first_match_prefix(self.tokenizer, tokens, after)
            reason = "stop"
        if n == len(tokens) and tokens and tokens[-1] in self.eos_ids:
            n -= 1  # the EOS token is not part of the answer (as in the transformers backend)
        return Generation(apply_stop_rules(done.text, params), reason, n)


def _first_match_prefix(tokenizer: Any, tokens: list[int], rule: re.Pattern[str]) -> int:
    """Fewest tokens whose text matches `rule`: where a regex-stopping engine would have stopped.

    A match in a prefix stays a match in every longer prefix, so a binary search needs only
    ~log2(n) decodes.
    """

    class Prefixes:
        def __getitem__(self, k: int) -> bool:
            return bool(rule.search(tokenizer.decode(tokens[: k + 1], skip_special_tokens=True)))

        def __len__(self) -> int:
            return len(tokens)

    first = bisect.bisect_left(Prefixes(), True)  # type: ignore[call-overload]
    return min(first + 1, len(tokens))


def _gen_config(llm: Any) -> Any:
    """The model's generation_config (its EOS ids), as vLLM read it."""
    try:
        from transformers import GenerationConfig

        return GenerationConfig.from_pretrained(llm.llm_engine.model_config.model)
    except OSError:
        return None


def _vllm_version() -> str:
    import vllm

    return str(vllm.__version__)

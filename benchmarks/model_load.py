"""Loading SmolLM2-135M-Instruct with transformers: from the GGUF against its converted folder.

A GGUF is dequantised on every read; failtune loads its converted safetensors folder instead
(failtune.model_loading, made once). Both are timed in the same run, weights and tokenizer
apart, and the weights are compared tensor by tensor. Figures: benchmarks/results/model_load.json.

    python benchmarks/model_load.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from failtune import model_loading
from failtune.manifest import package_versions
from failtune.model_loading import gguf_as_folder, load_model, load_tokenizer, resolve_model


def timed(load: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = load()
    return value, round(time.perf_counter() - t0, 3)


def main() -> None:
    ref = resolve_model("builtin:smollm2")
    folder = gguf_as_folder(ref)  # made once, before timing
    fast_model, fast_model_s = timed(lambda: load_model(ref, dtype="float32", device="cpu"))
    _, fast_tok_s = timed(lambda: load_tokenizer(ref))
    with tempfile.TemporaryDirectory() as empty:
        os.environ["FAILTUNE_CACHE"] = empty  # no folder here, and none made: the GGUF is read
        model_loading.CONVERT_BELOW_BYTES = 0
        gguf_model, gguf_model_s = timed(lambda: load_model(ref, dtype="float32", device="cpu"))
        _, gguf_tok_s = timed(lambda: load_tokenizer(ref))
    a, b = fast_model.state_dict(), gguf_model.state_dict()
    figures = {
        "folder": str(folder),
        "gguf_seconds": {"weights": gguf_model_s, "tokenizer": gguf_tok_s},
        "converted_folder_seconds": {"weights": fast_model_s, "tokenizer": fast_tok_s},
        "weights_identical": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "versions": package_versions(),
    }
    out = Path("benchmarks/results/model_load.json")
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "versions"}, indent=2))


if __name__ == "__main__":
    main()

"""Serving a LoRA adapter for validation: PEFT on transformers, vLLM LoRA, vLLM merged model.

The same adapter answers the same held-out problems three ways; reported are the seconds of
each and how many answers (text, and verdict) agree with transformers'. `vllm.serve_merged`
chooses between the two vLLM ways per device from these figures. Run it on an idle machine:
vLLM pins its threads to the cores, and another busy process slows it many times over.

    failtune run examples/demo.toml --output-dir /tmp/demo --backend hf
    python benchmarks/adapter_serving.py /tmp/demo/round-1/adapter --problems 200
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "adapter_serving.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("adapter", help="a trained adapter folder (e.g. a demo run's round-1/adapter)")
    ap.add_argument("--problems", type=int, default=200, help="arith test problems (demo: 200)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()

    from failtune.backends.hf import HFBackend
    from failtune.backends.vllm import VLLMBackend, close_engine, open_engine, served_path
    from failtune.evaluation.records import evaluate, load_problems
    from failtune.model_loading import load_tokenizer, merged_folder, resolve_model

    problems = load_problems("arith", "test", args.problems, {"arith": {"seed": 0}})
    ref = resolve_model(args.adapter)
    work = Path(tempfile.mkdtemp(prefix="adapter-serving-"))
    records: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}

    def grade(name: str, open_backend: Any) -> None:
        t0 = time.perf_counter()  # opening counts: it is part of what validation pays
        backend = open_backend()
        records[name] = evaluate(problems, work / name, backend=backend, show_progress=False)
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {seconds[name]} s", flush=True)

    grade("transformers", lambda: HFBackend.load(args.adapter))
    lora_rank = int(json.loads((Path(args.adapter) / "adapter_config.json").read_text())["r"])

    def lora() -> VLLMBackend:
        llm = open_engine(served_path(ref), max_lora_rank=max(8, lora_rank))
        return VLLMBackend(llm, load_tokenizer(ref), label=ref.label, adapter=ref.adapter)

    grade("vllm-lora", lora)
    close_engine()
    t0 = time.perf_counter()
    merged = merged_folder(ref)
    merge_seconds = round(time.perf_counter() - t0, 1)
    grade(
        "vllm-merged",
        lambda: VLLMBackend(open_engine(str(merged)), load_tokenizer(ref), label=ref.label),
    )
    freed = close_engine()

    reference = records["transformers"]
    agreement = {
        name: {
            "same_text": sum(
                a["completion"] == b["completion"] for a, b in zip(reference, rows, strict=True)
            ),
            "same_verdict": sum(
                a["correct"] == b["correct"] for a, b in zip(reference, rows, strict=True)
            ),
        }
        for name, rows in records.items()
        if name != "transformers"
    }
    summary = {
        "adapter": args.adapter,
        "problems": len(problems),
        "seconds": seconds,
        "merge_seconds": merge_seconds,
        "accuracy": {k: sum(r["correct"] for r in v) / len(v) for k, v in records.items()},
        "agreement_with_transformers": agreement,
        "engine_closed_mib": freed,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

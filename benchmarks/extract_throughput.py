"""Batched extraction vs one prompt at a time, same prompts, same run.

Runs failtune's extract path (generate, grade, append results.jsonl) with SmolLM2-135M-Instruct
on GSM8K test prompts at each batch size, and prints problems/s and generated tokens/s with the
speed-up over batch size 1. Figures are saved as JSON.

    python benchmarks/extract_throughput.py --problems 64 --batch-sizes 1,16,32,64
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from failtune.backends.hf import HFBackend
from failtune.extract import extract
from failtune.manifest import package_versions


def run(backend: HFBackend, problems: int, max_new_tokens: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = extract(
            output_dir=out,
            categories="math",
            split="test",
            limit=problems,
            max_new_tokens=max_new_tokens,
            model=backend,
            show_progress=False,
        )
        seconds = time.perf_counter() - t0
    tokens = sum(r["completion_tokens"] for r in result.records)
    return {
        "seconds": round(seconds, 2),
        "problems": problems,
        "completion_tokens": tokens,
        "problems_per_s": round(problems / seconds, 3),
        "tokens_per_s": round(tokens / seconds, 2),
        "hit_length_cap": sum(r["finish_reason"] == "length" for r in result.records),
        "accuracy": round(result.summary["math"]["accuracy"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=64, help="GSM8K test prompts (first N)")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated, 1 is the baseline")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument(
        "--output", default=str(Path(__file__).parent / "results" / "extract_throughput.json")
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    backend = HFBackend.load("builtin:smollm2", batch_size=1, device="cpu")
    figures: dict[str, dict[str, float]] = {}
    for size in sizes:
        backend.batch_size = size
        figures[str(size)] = run(backend, args.problems, args.max_new_tokens)
        print(f"batch {size:>3}: {figures[str(size)]}", flush=True)
    if "1" in figures:
        for size, f in figures.items():
            f["speedup_problems_per_s"] = round(
                f["problems_per_s"] / figures["1"]["problems_per_s"], 2
            )
            f["speedup_tokens_per_s"] = round(f["tokens_per_s"] / figures["1"]["tokens_per_s"], 2)
            print(
                f"batch {size:>3}: {f['speedup_problems_per_s']}x problems/s, "
                f"{f['speedup_tokens_per_s']}x tokens/s vs batch 1"
            )
    report = {
        "benchmark": "extract_throughput",
        "model": "SmolLM2-135M-Instruct Q4_1 GGUF (dequantised, fp32)",
        "prompts": f"GSM8K test, first {args.problems}, chat template",
        "max_new_tokens": args.max_new_tokens,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "versions": package_versions(),
        "by_batch_size": figures,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()

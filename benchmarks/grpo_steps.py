"""GRPO step times on the CPU: SmolLM2-135M-Instruct on arith train problems, a few steps.

Runs failtune.training.grpo.train_grpo with the settings given and records each step's wall time,
mean reward, zero-std share, completion length and truncation rate (grpo_metrics.jsonl) with the
machine's load average, as JSON. Run it on an idle machine for real figures.

    python benchmarks/grpo_steps.py --steps 5 --num-generations 4 --batch-size 1 --cap 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from failtune.files import read_jsonl
from failtune.manifest import package_versions
from failtune.rewards.datasets import write_prompt_dataset
from failtune.tasks.arith import Arith
from failtune.training.grpo import train_grpo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1, help="prompts per step")
    parser.add_argument("--cap", type=int, default=128, help="max completion length")
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--model", default="builtin:smollm2")
    parser.add_argument("--out", default="benchmarks/results/grpo_steps.json")
    args = parser.parse_args()
    task = Arith()
    problems = [(task, p) for p in task.load("train")[: args.steps * args.batch_size]]
    with tempfile.TemporaryDirectory() as tmp:
        prompts = write_prompt_dataset(problems, Path(tmp) / "prompts.jsonl")
        started = time.perf_counter()
        result = train_grpo(
            args.model,
            prompts,
            Path(tmp) / "grpo",
            max_steps=args.steps,
            num_generations=args.num_generations,
            batch_size=args.batch_size,
            max_completion_length=args.cap,
            beta=args.beta,
            show_progress=False,
        )
        total = time.perf_counter() - started
        steps = list(read_jsonl(result.metrics_file))
    record = {
        "settings": vars(args),
        "steps": steps,
        "total_seconds_with_model_load": round(total, 1),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "platform": platform.platform(),
        "versions": package_versions(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    for row in steps:
        print(json.dumps(row))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

"""GRPO step times on the CPU: SmolLM2-135M-Instruct on arith train problems, a few steps.

Runs failtune.training.grpo.train_grpo with the settings given and records each step's wall time,
mean reward, zero-std share, completion length and truncation rate (grpo_metrics.jsonl) with the
machine's load average, as JSON. Run it on an idle machine for real figures.

With `--processes 1,2` the same training runs once per process count (2: two gloo processes,
each answering half of every group): the curves should agree within noise (each process samples
from its own random stream, so the answers, and with them the rewards, differ step by step). The
summary compares mean reward and loss over the steps, with each side's step-to-step spread.

    python benchmarks/grpo_steps.py --steps 5 --num-generations 4 --batch-size 1 --cap 128
    python benchmarks/grpo_steps.py --steps 12 --processes 1,2 \
        --out benchmarks/results/grpo_processes.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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
    parser.add_argument("--processes", default="1", help="comma-separated process counts")
    parser.add_argument(
        "--prompts",
        help="a prompt dataset (e.g. an extract's grpo_prompts.jsonl: failures within reach, "
        "where groups can disagree); default: the first arith train problems",
    )
    parser.add_argument("--out", default="benchmarks/results/grpo_steps.json")
    args = parser.parse_args()
    task = Arith()
    problems = [(task, p) for p in task.load("train")[: args.steps * args.batch_size]]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(args.prompts) if args.prompts else Path(tmp) / "prompts.jsonl"
        if not args.prompts:
            write_prompt_dataset(problems, prompts)
        for processes in [int(n) for n in args.processes.split(",")]:
            started = time.perf_counter()
            result = train_grpo(
                args.model,
                prompts,
                Path(tmp) / f"grpo-{processes}",
                max_steps=args.steps,
                num_generations=args.num_generations,
                batch_size=args.batch_size,
                max_completion_length=args.cap,
                beta=args.beta,
                num_processes=processes,
                show_progress=False,
            )
            steps = list(read_jsonl(result.metrics_file))
            runs[str(processes)] = {
                "steps": steps,
                "total_seconds_with_model_load": round(time.perf_counter() - started, 1),
                "summary": {key: _spread([r[key] for r in steps]) for key in SUMMARIZED},
            }
            for row in steps:
                print(processes, json.dumps(row))
    record = {
        "settings": vars(args),
        "runs": runs,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "platform": platform.platform(),
        "versions": package_versions(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    for processes, run in runs.items():
        print(processes, "process(es):", json.dumps(run["summary"]))
    print(f"written to {args.out}")


SUMMARIZED = ("mean_reward", "loss", "mean_completion_length", "step_seconds")


def _spread(values: list[float]) -> dict[str, float]:
    """Mean over the steps, the step-to-step standard deviation, and the standard error."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "mean": round(statistics.fmean(values), 4),
        "sd": round(sd, 4),
        "se": round(sd / len(values) ** 0.5, 4),
    }


if __name__ == "__main__":
    main()

"""Training throughput: TRL's default SFT batches (padded) against failtune's padding-free ones.

Both configurations run failtune's LoRA training on the same examples with the same seed, so the
same examples arrive in the same batches in the same order; the only difference is the collation
(`--no-padding-free` is TRL's default: every batch padded to its longest example). Each
configuration runs in its own subprocess, interleaved and repeated (A B B A ...), and reports:

- real tokens/s: non-pad tokens trained on ÷ training seconds (model loading excluded);
- the padding bound: (examples × longest example) ÷ real tokens over TRL's default batches, the
  most that dropping the padding can gain;
- peak RSS of the subprocess (ru_maxrss);
- the loss of every optimizer step (mean over completion tokens), compared step by step.

A configuration the kernel kills for lack of memory is recorded under `out_of_memory`, with the
memory that was available when it started; that batch size then has no comparison.

Data: `--failures FILE` (a `math_training_ready.jsonl` that `failtune extract` wrote), else the
first `--problems` GSM8K train problems with their own reference solutions, which is what a
failure's training example holds (labelled `gsm8k-train-solutions` in the JSON).

    python benchmarks/train_throughput.py --batch-sizes 8 --steps 10 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from failtune.manifest import package_versions

MODEL = "builtin:smollm2"
RESULTS = Path(__file__).parent / "results" / "train_throughput.json"
CONFIGS = {"trl-default": False, "failtune": True}  # name → padding_free


def write_examples(path: Path, failures: str | None, problems: int) -> str:
    """The training file both configurations read; returns what the data is."""
    if failures:
        path.write_text(Path(failures).read_text())
        return f"failures:{failures}"
    from failtune.tasks.gsm8k import GSM8K

    rows = [{"instruction": p.prompt, "output": p.solution} for p in GSM8K().load("train")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:problems]))
    return f"gsm8k-train-solutions:first-{problems}"


def measure(data: Path, padding_free: bool, batch_size: int, steps: int, seed: int) -> dict:
    """One training run in this process: per-step losses, batch shapes, time, peak RSS."""
    from trl.trainer import sft_trainer

    from failtune.training import sft as module
    from failtune.training.sft import train

    # Instrumentation of this process only: record each collated batch's shape, log every step.
    shapes: list[tuple[int, int, int]] = []  # per collated batch: examples, longest, real tokens
    collate = sft_trainer.DataCollatorForLanguageModeling.torch_call

    def recording(self: Any, examples: list[dict[str, Any]]) -> dict[str, Any]:
        lengths = [len(e["input_ids"]) for e in examples]
        shapes.append((len(lengths), max(lengths), sum(lengths)))
        return collate(self, examples)

    sft_trainer.DataCollatorForLanguageModeling.torch_call = recording
    make_config = module._sft_config

    def every_step(*args: Any, **kwargs: Any) -> Any:
        config = make_config(*args, **kwargs)
        config.logging_steps = 1
        return config

    module._sft_config = every_step
    n = sum(1 for _ in data.open())
    with tempfile.TemporaryDirectory() as out:
        result = train(
            MODEL,
            data,
            out,
            # just under `steps` steps' worth, as the trainer rounds the step count up
            num_train_epochs=(steps - 0.5) / math.ceil(n / batch_size),
            batch_size=batch_size,
            seed=seed,
            show_progress=False,
            resume=False,
            save_steps=10**6,
            padding_free=padding_free,
        )
    history = result.metrics["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    trained = shapes[: len(losses)]  # the dataloader may collate one batch ahead
    real = sum(s[2] for s in trained)
    padded = sum(s[0] * s[1] for s in trained)
    seconds = result.metrics["train_runtime"]  # the training loop, model loading excluded
    return {
        "padding_free": padding_free,
        "steps": result.metrics["steps"],
        "losses": losses,
        "real_tokens": real,
        "padded_tokens_if_padded": padded,
        "trl_num_tokens": next(h["num_tokens"] for h in reversed(history) if "num_tokens" in h),
        "seconds": round(seconds, 2),
        "real_tokens_per_s": round(real / seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_one(data: Path, name: str, batch_size: int, steps: int, seed: int) -> dict[str, Any]:
    """`measure` in a fresh subprocess, so peak RSS and caches belong to that configuration."""
    available_mb = available_memory_mb()
    args = [sys.executable, __file__, "--child", name, "--data", str(data)]
    args += ["--batch-sizes", str(batch_size), "--steps", str(steps), "--seed", str(seed)]
    done = subprocess.run(args, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode == -signal.SIGKILL:  # the kernel's OOM killer: a finding, not a bug
        return {"killed": "SIGKILL, out of memory", "available_mb_before": available_mb}
    if done.returncode:
        sys.exit(f"{name} at batch {batch_size} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def available_memory_mb() -> float | None:
    """MemAvailable (Linux): what a configuration that ran out of memory had to work with."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def compare(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median speed of each configuration, the padding bound and the loss agreement."""
    base, ours = runs["trl-default"], runs["failtune"]

    def median(rows: list[dict[str, Any]], key: str) -> float:
        values = sorted(r[key] for r in rows)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    bound = base[0]["padded_tokens_if_padded"] / base[0]["real_tokens"]
    speedup = median(ours, "real_tokens_per_s") / median(base, "real_tokens_per_s")
    rel = [abs(a - b) / abs(b) for a, b in zip(ours[0]["losses"], base[0]["losses"], strict=True)]
    return {
        "padding_bound": round(bound, 3),
        "padding_share": round(1 - 1 / bound, 3),
        "speedup_real_tokens_per_s": round(speedup, 3),
        "speedup_over_bound": round(speedup / bound, 3),
        "loss_max_relative_difference": round(max(rel), 5),
        "loss_mean_trl_default": round(sum(base[0]["losses"]) / len(rel), 5),
        "loss_mean_failtune": round(sum(ours[0]["losses"]) / len(rel), 5),
        "same_batches": all(
            (r["real_tokens"], r["padded_tokens_if_padded"])
            == (base[0]["real_tokens"], base[0]["padded_tokens_if_padded"])
            for r in base + ours
        ),
        "peak_rss_mb": {name: median(rows, "peak_rss_mb") for name, rows in runs.items()},
        "acceptance": {
            "speed_at_least_0.9_of_bound": speedup >= 0.9 * bound,
            "loss_within_1_percent": max(rel) <= 0.01,
            "peak_rss_not_higher": median(ours, "peak_rss_mb") <= median(base, "peak_rss_mb"),
        },
    }


def compare_all(args: argparse.Namespace, data: Path) -> None:
    """Write the examples, run every configuration at every batch size, save the JSON."""
    source = write_examples(data, args.failures, args.problems)
    report: dict[str, Any] = {
        "model": MODEL,
        "data": source,
        "examples": sum(1 for _ in data.open()),
        "steps_per_run": args.steps,
        "seed": args.seed,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": package_versions(),
        "batch_sizes": {},
    }
    # A B B A ...: a slow spell on a shared machine hits both configurations alike.
    order = [name for i in range(args.repeats) for name in (list(CONFIGS)[:: (-1) ** i])]
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
        entry = report["batch_sizes"][str(batch)] = {"runs": runs}
        for name in order:
            before = load()
            figures = run_one(data, name, batch, args.steps, args.seed)
            figures["load_before_after"] = [before, load()]
            if "killed" in figures:
                entry.setdefault("out_of_memory", {})[name] = figures
                print(
                    f"batch {batch} {name:12s} killed: out of memory "
                    f"({figures['available_mb_before']} MB were available)",
                    flush=True,
                )
                break  # the other configuration alone compares with nothing
            runs[name].append(figures)
            print(
                f"batch {batch} {name:12s} {figures['real_tokens_per_s']:8.1f} real tok/s  "
                f"{figures['seconds']:7.1f} s  rss {figures['peak_rss_mb']:7.0f} MB  "
                f"load {before[0]:.1f}",
                flush=True,
            )
            if all(runs.values()):
                entry.update(compare(runs))
            Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
        summary = {k: v for k, v in entry.items() if k != "runs"}
        print(f"batch {batch}: {json.dumps(summary)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--failures", help="a *_training_ready.jsonl to train on")
    ap.add_argument("--problems", type=int, default=520, help="GSM8K train problems otherwise")
    ap.add_argument("--batch-sizes", default="8", help="comma-separated (default 8)")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    ap.add_argument("--repeats", type=int, default=2, help="runs per configuration")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=str(RESULTS))
    ap.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        figures = measure(
            Path(args.data), CONFIGS[args.child], int(args.batch_sizes), args.steps, args.seed
        )
        print(json.dumps(figures))
        return
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as work:
        data = Path(work) / "math_training_ready.jsonl"
        compare_all(args, data)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()

"""Rewards per second (and per core) of failtune's graders as TRL rewards, for math and code.

Each suite scores batches of `--batch` completions through failtune.rewards.TRLReward, the way
GRPOTrainer calls it, half of them right (the dataset's own solution) and half wrong:

- gsm8k: GSM8K train answers ("The answer is N." or N + 1), graded in the calling (main) thread;
- gsm8k-threads: the same called from a thread, so grading goes to `--workers` worker processes;
- math-verify: LaTeX fractions (\\boxed{}) of a custom task graded by math-verify, from a thread
  (the path where its signal-based timeouts need the worker processes);
- code: MBPP reference solutions and a wrong stub, run in the sandbox with `--workers` programs
  in parallel.

Per core divides by the cores the suite keeps busy (1 in the main thread, else `--workers`, at
most the machine's cores). Figures go to a JSON file with the machine's load average: run it on
an idle machine.

    python benchmarks/reward_throughput.py --workers 2
    python benchmarks/reward_throughput.py --limit 64 --batch 16   # a quick smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from failtune.manifest import package_versions
from failtune.rewards import RewardGrader, TRLReward
from failtune.tasks import MBPP, task_by_name

Batch = tuple[list[str], list[str], list[float]]  # ids, completions, expected rewards


def gsm8k_batches(limit: int, size: int) -> list[Batch]:
    rows = []
    for i, problem in enumerate(task_by_name("gsm8k").load("train")[:limit]):
        gold = problem.expected.replace(",", "")
        right = i % 2 == 0
        text = problem.solution if right else f"Let me see.\nThe answer is {int(gold) + 1}."
        rows.append((problem.id, text, 1.0 if right else 0.0))
    return _batches(rows, size)


def math_verify_task(limit: int, folder: Path) -> tuple[dict[str, Any], list[Batch], int]:
    """A custom task of fractions graded by math-verify, with its completions."""
    rows, cases = [], []
    for i in range(limit):
        a, b = i % 7 + 1, i % 5 + 2
        rows.append({"question": f"What is {a} divided by {b}?", "answer": f"\\frac{{{a}}}{{{b}}}"})
        said = f"\\frac{{{2 * a}}}{{{2 * b}}}" if i % 2 == 0 else f"\\frac{{{a + 1}}}{{{b}}}"
        cases.append((f"custom/test/{i}", f"So the answer is $\\boxed{{{said}}}$.", 1.0 - i % 2))
    path = folder / "fractions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"custom": {"path": str(path), "grader": "math"}}, cases, len(rows)


def code_batches(limit: int, size: int) -> list[Batch]:
    rows = []
    for i, (problem, _) in enumerate(list(MBPP().rows().values())[:limit]):
        right = i % 2 == 0
        stub = "```python\ndef nothing():\n    return None\n```"
        rows.append((problem.id, problem.solution if right else stub, 1.0 if right else 0.0))
    return _batches(rows, size)


def _batches(rows: list[tuple[str, str, float]], size: int) -> list[Batch]:
    return [
        (
            [r[0] for r in rows[i : i + size]],
            [r[1] for r in rows[i : i + size]],
            [r[2] for r in rows[i : i + size]],
        )
        for i in range(0, len(rows), size)
    ]


def timed(reward: TRLReward, batches: list[Batch], threaded: bool) -> dict[str, Any]:
    """Score every batch (in a thread when `threaded`); seconds, rewards/s, verdicts right."""

    def score(batch: Batch) -> list[float]:
        ids, texts, _ = batch
        return reward(prompts=[""] * len(ids), completions=texts, id=ids)

    call: Callable[[Batch], list[float]] = score
    if threaded:
        pool = ThreadPoolExecutor(1)

        def call(batch: Batch) -> list[float]:
            return pool.submit(score, batch).result()

    call(batches[0])  # warm: tasks loaded, sandbox or worker processes started
    started = time.perf_counter()
    found = [call(b) for b in batches]
    seconds = time.perf_counter() - started
    n = sum(len(b[0]) for b in batches)
    agree = all(f == b[2] for f, b in zip(found, batches, strict=True))
    return {
        "rewards": n,
        "seconds": round(seconds, 3),
        "per_second": round(n / seconds, 1),
        "verdicts_as_expected": agree,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=2000, help="completions per suite")
    parser.add_argument("--batch", type=int, default=64, help="completions per reward call")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="benchmarks/results/reward_throughput.json")
    args = parser.parse_args()
    cores = min(args.workers, os.cpu_count() or 1)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        options, cases, _ = math_verify_task(args.limit, Path(tmp))
        code_options = {name: {"workers": args.workers} for name in ("mbpp", "humaneval")}
        suites = [
            (
                "gsm8k",
                RewardGrader(workers=args.workers),
                gsm8k_batches(args.limit, args.batch),
                False,
                1,
            ),
            (
                "gsm8k-threads",
                RewardGrader(workers=args.workers),
                gsm8k_batches(args.limit, args.batch),
                True,
                cores,
            ),
            (
                "math-verify",
                RewardGrader(options, workers=args.workers),
                _batches(cases, args.batch),
                True,
                cores,
            ),
            (
                "code",
                RewardGrader(code_options),
                code_batches(args.limit, args.batch),
                False,
                cores,
            ),
        ]
        for name, grader, batches, threaded, busy in suites:
            figures = timed(TRLReward(grader), batches, threaded)
            figures["cores"] = busy
            figures["per_second_per_core"] = round(figures["per_second"] / busy, 1)
            results[name] = figures
            grader.close()
            print(name, json.dumps(figures))
    record = {
        "suites": results,
        "batch": args.batch,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "platform": platform.platform(),
        "versions": package_versions(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

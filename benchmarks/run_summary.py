"""The figures of a finished `failtune run`, gathered into one JSON file for the record.

A run folder already holds everything (run_state.json, each step's manifest, validation.json,
the graded answers of both sides); this collects what a reader of the README wants next to the
numbers: accuracy and the paired comparison per category, the gates, the learning-rate sweep,
what the failures were, how answers changed (reasons, lengths, truncation) and each step's time.

    python benchmarks/run_summary.py gsm8k-smollm2 --output benchmarks/results/gsm8k_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Any

from failtune.files import read_json, read_jsonl
from failtune.manifest import package_versions


def loops(text: str) -> bool:
    """Whether an answer went round in circles: one of its lines, numbers aside, three times or
    more ("48 + 2 = 50 feet", "50 + 2 = 52 feet", ...), as a small model's greedy decoding does
    once it has learnt a step-per-line format but not when to stop."""
    lines = [re.sub(r"[\d.,]+", "#", line.strip()) for line in text.splitlines() if line.strip()]
    return bool(lines) and Counter(lines).most_common(1)[0][1] >= 3


def side(results: Path) -> dict[str, Any]:
    """How one side answered a category: failure reasons, answer lengths, cut-offs, loops."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in read_jsonl(results):
        by_task.setdefault(r["task"], []).append(r)
    return {
        task: {
            "n": len(rows),
            "correct": sum(r["correct"] for r in rows),
            "reasons": dict(Counter(r["reason"] for r in rows if not r["correct"])),
            "hit_length_cap": sum(r["finish_reason"] == "length" for r in rows),
            "loops": sum(loops(r["completion"]) for r in rows),
            "mean_completion_tokens": round(mean(r["completion_tokens"] for r in rows), 1),
        }
        for task, rows in sorted(by_task.items())
    }


def summarize(run_dir: Path) -> dict[str, Any]:
    state = read_json(run_dir / "run_state.json")
    if not state.get("finished"):
        sys.exit(f"{run_dir}: the run has not finished (no 'finished' in run_state.json)")
    steps = state["steps"]
    rounds = []
    for rnd in state["rounds"]:
        validation_path = run_dir / rnd["validation"]
        validation = read_json(validation_path)
        vdir = validation_path.parent
        rounds.append(
            {
                "round": rnd["round"],
                "gates_passed": rnd["gates_passed"],
                "gates": validation["gates"],
                "categories": validation["categories"],
                "learning_rate_sweep": validation.get("learning_rate_sweep"),
                "answers": {
                    "base": side(vdir / "base" / "results.jsonl"),
                    "candidate": side(vdir / "candidate" / "results.jsonl"),
                },
                "vs_previous": rnd.get("vs_previous"),
                "next": rnd.get("next"),
            }
        )
    keep = ("seconds", "summary", "failures", "problems", "prompt_tokens", "completion_tokens")
    keep += ("examples", "steps", "last_logged_loss", "accuracy", "engine")
    return {
        "run_dir": str(run_dir),
        "config": state["config"],
        "step_seconds": {name: s.get("seconds") for name, s in steps.items()},
        "total_seconds": round(sum(s.get("seconds") or 0 for s in steps.values()), 1),
        "steps": {name: {k: s[k] for k in keep if k in s} for name, s in steps.items()},
        "rounds": rounds,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "versions": package_versions(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path, help="the output_dir of a finished failtune run")
    ap.add_argument("--output", type=Path, help="write the JSON here (default: print it)")
    args = ap.parse_args()
    if not (args.run_dir / "run_state.json").is_file():
        sys.exit(f"{args.run_dir}: no run_state.json; give the output_dir of a failtune run")
    figures = json.dumps(summarize(args.run_dir), indent=1) + "\n"
    if args.output:
        args.output.write_text(figures)
        print(f"wrote {args.output}")
    else:
        print(figures, end="")


if __name__ == "__main__":
    main()

"""Kill `failtune run` at random points, restart it, and check the final numbers are identical.

    python scripts/kill_resume_check.py examples/demo.toml --work /tmp/kill-check

Runs the config once uninterrupted (or reuses --reference, a finished run folder), then runs it
again into another folder, killing it --kills times at random moments (SIGKILL and SIGINT in
turn) and restarting it each time, and finally lets it finish. The final validation.json and the
graded results of both runs must match exactly. Prints and saves the figures as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SIGNALS = (signal.SIGKILL, signal.SIGINT)


def failtune_run(config: str, out: Path, extra: list[str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "failtune.cli", "run", config, "--output-dir", str(out)]
    log = (out.parent / f"{out.name}.log").open("ab")
    return subprocess.Popen([*cmd, "--no-progress", *extra], stdout=log, stderr=log)


def running_step(out: Path) -> str:
    try:
        steps = json.loads((out / "run_state.json").read_text())["steps"]
    except (OSError, ValueError, KeyError):
        return "(not started)"
    busy = [name for name, rec in steps.items() if rec["status"] == "running"]
    return busy[0] if busy else "(between steps)"


def final_numbers(out: Path) -> dict[str, Any]:
    state = json.loads((out / "run_state.json").read_text())
    validation = out / state["rounds"][-1]["validation"]
    graded = {}
    for path in sorted(out.rglob("results.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        graded[str(path.relative_to(out))] = sorted(
            (r["id"], r["completion"], r["correct"]) for r in rows
        )
    adapters = {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.glob("round-*/adapter/adapter_model.safetensors"))
    }
    return {
        "validation": json.loads(validation.read_text()),
        "graded": graded,
        "adapters": adapters,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder")
    ap.add_argument("--reference", type=Path, help="a finished run of the same config")
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    ap.add_argument("--set", action="append", default=[], help="passed to failtune run")
    args = ap.parse_args()
    extra = [x for s in args.set for x in ("--set", s)]
    rng = random.Random(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)

    reference = args.reference
    if reference is None:
        reference = args.work / "reference"
        t0 = time.perf_counter()
        failtune_run(args.config, reference, extra).wait()
        ref_seconds = time.perf_counter() - t0
    else:
        state = json.loads((reference / "run_state.json").read_text())
        ref_seconds = sum(rec.get("seconds", 0) for rec in state["steps"].values()) + 60
    print(f"reference: {reference} ({ref_seconds:.0f} s)", flush=True)

    killed = args.work / "killed"
    kills = []
    t_all = time.perf_counter()
    for k in range(args.kills):
        sig = SIGNALS[k % len(SIGNALS)]
        delay = rng.uniform(0.1, 0.5) * ref_seconds  # each restart reloads, so kills spread out
        proc = failtune_run(args.config, killed, extra)
        try:
            proc.wait(timeout=delay)
            print(f"kill {k + 1}: the run finished before {delay:.0f} s", flush=True)
            kills.append({"after_seconds": round(delay, 1), "signal": None, "step": "finished"})
            continue
        except subprocess.TimeoutExpired:
            pass
        step = running_step(killed)
        proc.send_signal(sig)
        code = proc.wait()
        print(
            f"kill {k + 1}: {sig.name} after {delay:.0f} s during {step} (exit {code})", flush=True
        )
        kills.append(
            {"after_seconds": round(delay, 1), "signal": sig.name, "step": step, "exit": code}
        )
    code = failtune_run(args.config, killed, extra).wait()
    seconds = time.perf_counter() - t_all

    ref, got = final_numbers(reference), final_numbers(killed)
    same_validation = ref["validation"] == got["validation"]
    same_graded = ref["graded"] == got["graded"]
    same_adapters = ref["adapters"] == got["adapters"]
    summary = {
        "config": args.config,
        "set": args.set,
        "kills": kills,
        "final_exit": code,
        "killed_run_seconds": round(seconds, 1),
        "reference_seconds": round(ref_seconds, 1),
        "identical_validation_json": same_validation,
        "identical_graded_results": same_graded,
        "identical_adapter_weights": same_adapters,
        "categories": got["validation"]["categories"],
    }
    (args.work / "kill_resume.json").write_text(json.dumps(summary, indent=2) + "\n")
    for cat, s in got["validation"]["categories"].items():
        print(
            f"{cat}: wins {s['wins']} ties {s['ties']} losses {s['losses']} "
            f"base {s['base_accuracy']:.1%} → candidate {s['candidate_accuracy']:.1%} "
            f"p {s['mcnemar_p']:.3g}"
        )
    print(
        f"identical validation.json: {same_validation}; identical graded results: {same_graded}; "
        f"identical adapter weights: {same_adapters}"
    )
    return 0 if same_validation and same_graded and same_adapters else 1


if __name__ == "__main__":
    sys.exit(main())

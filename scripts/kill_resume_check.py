"""Kill `failtune run` at random points, restart it, and check the final numbers are identical.

    python scripts/kill_resume_check.py examples/demo.toml --work /tmp/kill-check
    python scripts/kill_resume_check.py examples/demo.toml --work /tmp/kill-vllm --backend vllm

Runs the config once uninterrupted (or reuses --reference, a finished run folder), then runs it
again into another folder, killing it --kills times (SIGKILL and SIGINT in turn), each time at a
random moment inside a different randomly chosen step, restarting it after each kill, and
finally lets it finish. The final validation.json and the
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
    return subprocess.Popen(
        [*cmd, "--no-progress", *extra],
        stdout=log,
        stderr=log,
        # A background job inherits SIGINT ignored; give the run Python's Ctrl-C behaviour.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


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
    # validation.json names the training files by path: compare them inside the run folder.
    text = validation.read_text().replace(str(out.resolve()), "<run>").replace(str(out), "<run>")
    return {
        "validation": json.loads(text),
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
    ap.add_argument(
        "--backend",
        choices=("auto", "hf", "vllm", "openai"),
        help="generation engine of both runs (default: the config's)",
    )
    args = ap.parse_args()
    extra = [x for s in args.set for x in ("--set", s)]
    extra += ["--backend", args.backend] if args.backend else []
    rng = random.Random(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)

    reference = args.reference
    if reference is None:
        reference = args.work / "reference"
        failtune_run(args.config, reference, extra).wait()
    ref_steps = json.loads((reference / "run_state.json").read_text())["steps"]
    print(f"reference: {reference} ({ {k: v['seconds'] for k, v in ref_steps.items()} } s)")

    # Each kill lands inside a different step, at a random moment of it (steps in run order).
    targets = sorted(rng.sample(range(len(ref_steps)), min(args.kills, len(ref_steps))))
    names = list(ref_steps)
    killed = args.work / "killed"
    kills = []
    t_all = time.perf_counter()
    for k, target in enumerate(targets):
        sig = SIGNALS[k % len(SIGNALS)]
        name = names[target]
        delay = rng.uniform(0.05, 0.95) * ref_steps[name]["seconds"]
        proc = failtune_run(args.config, killed, extra)
        while proc.poll() is None and running_step(killed) != name:
            time.sleep(0.2)
        time.sleep(delay)
        if proc.poll() is not None:
            print(f"kill {k + 1}: the run finished first", flush=True)
            kills.append({"target": name, "signal": None, "step": "finished"})
            continue
        step = running_step(killed)
        proc.send_signal(sig)
        code = proc.wait()
        print(
            f"kill {k + 1}: {sig.name} {delay:.1f} s into {name} (running: {step}; exit {code})",
            flush=True,
        )
        kills.append(
            {
                "target": name,
                "seconds_into_step": round(delay, 1),
                "signal": sig.name,
                "step": step,
                "exit": code,
            }
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
        "backend": args.backend,
        "kills": kills,
        "final_exit": code,
        "killed_run_seconds": round(seconds, 1),
        "reference_step_seconds": {k: v["seconds"] for k, v in ref_steps.items()},
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

"""Sandboxed code grading vs one program at a time in a fresh interpreter, same programs.

Grades the reference solution of every HumanEval (164) and MBPP (974) problem twice: with
failtune's sandbox (warm forking workers, `--workers` in parallel) and with a plain baseline
that runs each program in its own `python` subprocess, one after the other, and counts it
passed when it exits 0 after printing a sentinel placed after the last assert (openai/
human-eval's pass rule, without its in-process guard). Prints both times, the speed-up, and
whether the verdicts agree; figures are saved as JSON with the machine's load average.

    python benchmarks/code_grading.py --workers 2
    python benchmarks/code_grading.py --workers 2 --isolation userns   # an ordinary user's path

`--isolation userns` takes, even as root, the path an ordinary user's sandbox takes (a user
namespace, capabilities dropped); `landlock` the one where user namespaces are refused. Run by
an ordinary user, `auto` is already the unprivileged path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from failtune.grading.code import build_program, extract_code, program_source
from failtune.grading.isolation import FORCE_ENV
from failtune.grading.sandbox import Limits, Sandbox
from failtune.manifest import package_versions
from failtune.tasks import MBPP, HumanEval


def reference_programs(limit: int | None) -> list[tuple[str, list[tuple[str, str]]]]:
    programs = []
    for task in (HumanEval(), MBPP()):
        for problem, tests in list(task.rows().values())[:limit]:
            code = extract_code(problem.solution, tests.entry_point)
            assert code is not None
            programs.append((problem.id, list(build_program(code, tests))))
    return programs


def baseline(programs: list[list[tuple[str, str]]], timeout: float) -> list[bool]:
    """One interpreter per program, sequentially, each in a fresh temp dir."""
    verdicts = []
    for program in programs:
        sentinel = os.urandom(16).hex()
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "program.py"
            script.write_text(f"{program_source(program)}\nprint({sentinel!r})\n")
            try:
                done = subprocess.run(
                    [sys.executable, str(script)], cwd=tmp, capture_output=True, timeout=timeout
                )
                verdicts.append(done.returncode == 0 and sentinel.encode() in done.stdout)
            except subprocess.TimeoutExpired:
                verdicts.append(False)
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="first N problems of each set")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument(
        "--isolation",
        choices=["auto", "userns", "landlock"],
        default="auto",
        help="the most the sandbox may use (userns: the unprivileged path even as root)",
    )
    parser.add_argument(
        "--output", default=str(Path(__file__).parent / "results" / "code_grading.json")
    )
    args = parser.parse_args()
    if args.isolation != "auto":
        os.environ[FORCE_ENV] = args.isolation
    load_before = os.getloadavg()
    named = reference_programs(args.limit)
    ids, programs = [i for i, _ in named], [p for _, p in named]

    t0 = time.perf_counter()
    with Sandbox(args.workers, Limits(timeout=args.timeout)) as sandbox:
        isolation = {**sandbox.isolation, "detail": sandbox.description}
        outcomes = sandbox.run(programs)
    sandbox_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    plain = baseline(programs, args.timeout)
    baseline_seconds = time.perf_counter() - t0

    ours = [o.passed for o in outcomes]
    disagree = [i for i, a, b in zip(ids, ours, plain, strict=True) if a != b]
    failed = {i: o.reason for i, o in zip(ids, outcomes, strict=True) if not o.passed}
    report = {
        "programs": len(programs),
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "sandbox_seconds": round(sandbox_seconds, 2),
        "baseline_seconds": round(baseline_seconds, 2),
        "speedup": round(baseline_seconds / sandbox_seconds, 2),
        "verdicts_agree": not disagree,
        "disagreements": disagree,
        "passed": {"sandbox": sum(ours), "baseline": sum(plain)},
        "humaneval_passed": sum(o for i, o in zip(ids, ours, strict=True) if "humaneval" in i),
        "mbpp_passed": sum(o for i, o in zip(ids, ours, strict=True) if i.startswith("mbpp")),
        "failed": failed,
        "isolation": isolation,
        "uid": os.getuid(),
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
        "platform": platform.platform(),
        "versions": package_versions(),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{len(programs)} programs: sandbox {sandbox_seconds:.1f} s at --workers {args.workers}, "
        f"baseline {baseline_seconds:.1f} s one at a time: {report['speedup']}x; "
        f"passed {sum(ours)} vs {sum(plain)}; verdicts agree: {not disagree}; "
        f"isolation {isolation['level']} (uid {os.getuid()}); load {load_before[0]:.2f}"
    )
    if failed:
        print("not passed:", failed)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()

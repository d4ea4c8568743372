"""Judging 1,319 pairs (all of GSM8K test) one request at a time vs 16 at a time.

A local OpenAI-compatible stub judge, in its own process, answers every request after a fixed
latency (default 50 ms, like a fast remote API; real judges take longer, which only widens the
gap), preferring the answer that is right and replying in the forms judge models use ("**B**",
"Verdict: T", "The better answer is A.", ...). The same pairs are judged with max_concurrency 1
and 16; reported are the wall seconds of each, the speed-up, and that both runs give the true
wins / ties / losses. The stub's work is a sleep, so the figure barely depends on the machine's
load; it is CPU-light enough to run anywhere.

    python benchmarks/judge_concurrency.py                  # writes benchmarks/results/...
    python benchmarks/judge_concurrency.py --pairs 40 --output /tmp/j.json   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import sys
import tempfile
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "judge_concurrency.json"
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # the tests' stub server
FORMS = {
    "A": ["**A**", "Answer: A", "The better answer is A.", "A. It is correct and well argued."],
    "B": ["B", "Verdict: B", "The better answer is B.", "Answer B is better: it adds up."],
    "T": ["Verdict: T", "T", "Both answers are equally good.", "It's a tie."],
}


def serve(port: int, latency: float, golds: dict[str, str]) -> None:
    """The stub judge: every chat completion answers after `latency` seconds."""
    from servers import StubHandler, chat_answer

    class Handler(StubHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(latency)
            prompt = body["messages"][0]["content"]
            problem = prompt.split("Problem:\n")[1].split("\n\nAnswer A:")[0]
            first = prompt.split("Answer A:\n")[1].split("\n\nAnswer B:")[0]
            second = prompt.split("Answer B:\n")[1].split("\n\nWhich answer")[0]
            right = [a.endswith(f"The answer is {golds[problem]}.") for a in (first, second)]
            letter = "T" if right[0] == right[1] else "A" if right[0] else "B"
            forms = FORMS[letter]
            self.reply(200, chat_answer(forms[(len(problem) + len(first)) % len(forms)], "stop", 1))

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def pairs_and_truth(n: int) -> tuple[list[Any], dict[str, int], dict[str, str]]:
    """Candidate right where i % 3 != 0, reference right where i is even."""
    from failtune.tasks.gsm8k import GSM8K
    from failtune.validation.judge import Pair

    pairs, truth = [], {"wins": 0, "ties": 0, "losses": 0}
    problems = GSM8K().load("test")[:n]
    for i, p in enumerate(problems):
        cand, ref = i % 3 != 0, i % 2 == 0
        body = p.solution.rsplit("\n", 1)[0]
        wrong = str(int(p.expected.replace(",", "")) + 1)

        def answer(good: bool, body: str = body, p: Any = p, wrong: str = wrong) -> str:
            return f"{body}\nThe answer is {p.expected if good else wrong}."

        pairs.append(Pair(p.id, p.prompt, answer(cand), answer(ref)))
        truth["wins" if cand and not ref else "losses" if ref and not cand else "ties"] += 1
    return pairs, truth, {p.prompt: p.expected for p in problems}


def judged(url: str, pairs: list[Any], concurrency: int) -> tuple[float, dict[str, Any]]:
    from failtune.validation.judge import Judge, judge_pairs

    judge = Judge(url, "stub", max_concurrency=concurrency, verdict_format="text")
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        table = judge_pairs(judge, pairs, Path(folder), show_progress=False)
        return time.perf_counter() - t0, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=1319, help="GSM8K test problems (all: 1319)")
    ap.add_argument("--latency", type=float, default=0.05, help="stub seconds per request")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()

    pairs, truth, golds = pairs_and_truth(args.pairs)
    port = _free_port()
    stub = multiprocessing.Process(target=serve, args=(port, args.latency, golds), daemon=True)
    stub.start()
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_for(port)
        runs = {}
        for concurrency in (1, args.concurrency):
            seconds, table = judged(url, pairs, concurrency)
            runs[concurrency] = {"seconds": round(seconds, 2), "table": table}
            print(f"concurrency {concurrency}: {seconds:.1f} s", flush=True)
    finally:
        stub.terminate()
        stub.join()
    serial, parallel = runs[1]["seconds"], runs[args.concurrency]["seconds"]
    result = {
        "what": __doc__.split("\n")[0],
        "pairs": len(pairs),
        "requests_per_run": 2 * len(pairs),
        "stub_latency_seconds": args.latency,
        "seconds": {str(c): r["seconds"] for c, r in runs.items()},
        "speedup": round(serial / parallel, 2),
        "truth": truth,
        "wins_ties_losses": {
            str(c): {k: r["table"][k] for k in (*truth, "unreadable")} for c, r in runs.items()
        },
        "equal_to_truth": all(
            {k: r["table"][k] for k in truth} == truth and r["table"]["unreadable"] == 0
            for r in runs.values()
        ),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_after_run": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "command": f"python benchmarks/judge_concurrency.py --pairs {args.pairs} "
        f"--latency {args.latency} --concurrency {args.concurrency}",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds", "speedup", "equal_to_truth")}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the stub judge did not start")


if __name__ == "__main__":
    main()

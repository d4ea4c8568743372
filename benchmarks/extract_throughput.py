"""Extraction throughput of every engine on the same GSM8K prompts, side by side, in one run.

Engines (each skipped with a note when it is not installed):

- `hf`: failtune's extract path (generate, grade, append results.jsonl) on transformers, at each
  `--batch-sizes` (batch 1 is the baseline of the batching speed-up; rolling batches);
- `lm-eval`: lm-evaluation-harness's `hf` model, `generate_until` (same folder, same chat-template
  prompts, greedy, same max tokens, until EOS);
- `vllm-raw`: `vllm.LLM.generate` on the prompts' token ids, nothing else;
- `vllm`: failtune's extract path on its vLLM backend (same engine), to show that grading and
  writing do not eat the engine's speed;
- `llama-cpp`: llama-cpp-python's OpenAI-compatible server on the GGUF itself (Q4_1 weights,
  so its answers differ), raw HTTP completions with `--concurrency` requests in flight.

Tokens/s counts the answer tokens each engine reports (lm-eval returns text: re-tokenised).
SmolLM2-135M-Instruct, fp32, CPU; figures saved as JSON under benchmarks/results/.

    python benchmarks/extract_throughput.py --problems 128 --batch-sizes 1,32
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from failtune.backends import Backend
from failtune.backends.hf import HFBackend, prompt_ids
from failtune.evaluation.extraction import extract
from failtune.manifest import package_versions
from failtune.model_loading import gguf_as_folder, resolve_model, smollm2_gguf
from failtune.tasks.gsm8k import GSM8K

MODEL = "builtin:smollm2"
ENGINES = ("hf", "lm-eval", "vllm-raw", "vllm", "llama-cpp")


def figures(seconds: float, problems: int, tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 2),
        "problems": problems,
        "completion_tokens": tokens,
        "problems_per_s": round(problems / seconds, 3),
        "tokens_per_s": round(tokens / seconds, 2),
        **extra,
    }


def failtune_extract(backend: Backend, problems: int, max_new_tokens: int) -> dict[str, Any]:
    """failtune's whole extract path: generate, grade, append results, write training file."""
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
    return figures(
        seconds,
        problems,
        sum(r["completion_tokens"] for r in result.records),
        hit_length_cap=sum(r["finish_reason"] == "length" for r in result.records),
        accuracy=round(result.summary["math"]["accuracy"], 4),
    )


def run_hf(prompts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    backend = HFBackend.load(MODEL, batch_size=1, device="cpu")
    by_size: dict[str, Any] = {}
    for size in [int(s) for s in args.batch_sizes.split(",")]:
        backend.batch_size = size
        by_size[str(size)] = failtune_extract(backend, len(prompts), args.max_new_tokens)
        by_size[str(size)]["batch_size"] = size
        print(f"hf batch {size:>3}: {by_size[str(size)]}", flush=True)
    if "1" in by_size:
        for f in by_size.values():
            f["speedup_vs_batch_1"] = round(f["problems_per_s"] / by_size["1"]["problems_per_s"], 2)
    return {"by_batch_size": by_size}


def run_lm_eval(prompts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    folder = gguf_as_folder(resolve_model(MODEL))
    lm = HFLM(pretrained=str(folder), device="cpu", dtype="float32", batch_size=args.lm_eval_batch)
    tok = lm.tokenizer
    contexts = [tok.decode(prompt_ids(tok, p)) for p in prompts]  # chat template, as failtune
    gen = {"until": [tok.eos_token], "max_gen_toks": args.max_new_tokens, "do_sample": False}
    requests = [
        Instance(request_type="generate_until", doc={}, arguments=(c, gen), idx=i)
        for i, c in enumerate(contexts)
    ]
    t0 = time.perf_counter()
    texts = lm.generate_until(requests, disable_tqdm=True)
    seconds = time.perf_counter() - t0
    tokens = sum(len(tok(t, add_special_tokens=False).input_ids) for t in texts)
    return figures(seconds, len(prompts), tokens, batch_size=args.lm_eval_batch)


def run_vllm(prompts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Raw `LLM.generate`, then failtune's backend on the same engine, same prompts."""
    from vllm import SamplingParams

    from failtune.backends.vllm import VLLMBackend, close_engine

    backend = VLLMBackend.load(MODEL)
    llm = backend.llm
    requests = [{"prompt_token_ids": prompt_ids(backend.tokenizer, p)} for p in prompts]
    sampling = SamplingParams(
        temperature=0.0, max_tokens=args.max_new_tokens, stop_token_ids=backend.eos_ids
    )
    llm.generate(requests[:4], sampling, use_tqdm=False)  # warm-up
    llm.reset_prefix_cache()  # neither run may reuse the other's cached prompts
    t0 = time.perf_counter()
    outs = llm.generate(requests, sampling, use_tqdm=False)
    raw_seconds = time.perf_counter() - t0
    engine_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    raw = figures(raw_seconds, len(prompts), engine_tokens)
    print(f"vllm-raw: {raw}", flush=True)
    llm.reset_prefix_cache()
    ours = failtune_extract(backend, len(prompts), args.max_new_tokens)
    # vLLM has no regex stop: tokens after "The answer is N." are generated, then cut.
    ours["engine_tokens_per_s"] = round(engine_tokens / ours["seconds"], 2)
    ours["tokens_past_stop_rule"] = engine_tokens - ours["completion_tokens"]
    ours["problems_per_s_vs_raw"] = round(ours["problems_per_s"] / raw["problems_per_s"], 3)
    print(f"vllm (failtune): {ours}", flush=True)
    close_engine()
    return {"vllm-raw": raw, "vllm": ours, "engine": backend.info.details}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_llama_cpp(prompts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf())]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    cmd += ["--n_threads", str(torch.get_num_threads())]
    url = f"http://127.0.0.1:{port}/v1"
    tok = HFBackend.load(MODEL, batch_size=1, device="cpu").tokenizer
    texts = [tok.decode(prompt_ids(tok, p)) for p in prompts]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as server:
        try:
            _wait_for(f"{url}/models", timeout=120)

            def complete(text: str) -> int:
                body = {"prompt": text, "max_tokens": args.max_new_tokens, "temperature": 0.0}
                req = urllib.request.Request(
                    f"{url}/completions",
                    data=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=600) as resp:
                    return int(json.load(resp)["usage"]["completion_tokens"])

            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                tokens = sum(pool.map(complete, texts))
            seconds = time.perf_counter() - t0
        finally:
            server.terminate()
    return figures(seconds, len(prompts), tokens, concurrency=args.concurrency, weights="Q4_1")


def _wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=2).close()
            return
        time.sleep(1)
    raise RuntimeError(f"server did not answer at {url} within {timeout:.0f} s")


RUNNERS: dict[str, tuple[str, Callable[[list[str], argparse.Namespace], dict[str, Any]]]] = {
    "hf": ("transformers", run_hf),
    "lm-eval": ("lm_eval", run_lm_eval),
    "vllm": ("vllm", run_vllm),  # raw and failtune's backend together, on one engine
    "llama-cpp": ("llama_cpp", run_llama_cpp),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=128, help="GSM8K test prompts (first N)")
    parser.add_argument("--batch-sizes", default="1,32", help="transformers batch sizes")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    parser.add_argument("--lm-eval-batch", type=int, default=32, help="lm-eval's batch size")
    parser.add_argument("--concurrency", type=int, default=4, help="llama.cpp requests in flight")
    parser.add_argument(
        "--output", default=str(Path(__file__).parent / "results" / "extract_throughput.json")
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    wanted = set(args.engines.split(","))
    prompts = [p.prompt for p in GSM8K().load("test")[: args.problems]]
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, (module, runner) in RUNNERS.items():
        if name not in wanted and not (name == "vllm" and "vllm-raw" in wanted):
            continue
        if importlib.util.find_spec(module) is None:
            skipped[name] = f"{module} is not installed"
            print(f"{name}: skipped ({skipped[name]})", flush=True)
            continue
        out = runner(prompts, args)
        results.update(out if name == "vllm" else {name: out})
        if name != "vllm":
            print(f"{name}: {out}", flush=True)
    summary = _summary(results, args.lm_eval_batch)
    for line in summary:
        print(line)
    report = {
        "benchmark": "extract_throughput",
        "model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantised to fp32; llama.cpp: Q4_1)",
        "prompts": f"GSM8K test, first {args.problems}, chat template, greedy",
        "max_new_tokens": args.max_new_tokens,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "versions": package_versions(),
        "engines": results,
        "skipped": skipped,
        "summary": summary,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.output}")


def _summary(results: dict[str, Any], lm_eval_batch: int) -> list[str]:
    """The acceptance ratios, when both sides ran."""
    lines = []
    hf = results.get("hf", {}).get("by_batch_size", {})
    # Same batch size as lm-eval when measured, else failtune's best.
    ours = hf.get(str(lm_eval_batch)) or max(
        hf.values(), key=lambda f: f["problems_per_s"], default=None
    )
    if ours and "lm-eval" in results:
        theirs = results["lm-eval"]
        lines.append(
            f"failtune hf (batch {ours['batch_size']}) vs lm-eval hf (batch {lm_eval_batch}): "
            f"{ours['problems_per_s'] / theirs['problems_per_s']:.2f}x problems/s, "
            f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x tokens/s"
        )
    if "1" in hf:
        for size, f in hf.items():
            if size != "1":
                speedup = f["speedup_vs_batch_1"]
                lines.append(f"failtune hf batch {size} vs batch 1: {speedup:.2f}x problems/s")
    if "vllm" in results:
        lines.append(
            f"failtune vllm vs raw vllm.LLM.generate: "
            f"{results['vllm']['problems_per_s_vs_raw']:.2f}x problems/s"
        )
    return lines


if __name__ == "__main__":
    main()

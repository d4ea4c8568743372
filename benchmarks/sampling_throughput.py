"""Sampling throughput: K answers per problem against greedy decoding, same prompts, one run.

transformers (failtune's rolling batch, at the same `--batch-size` but where noted):

- `greedy`: one greedy answer per problem, the baseline (the left-padded layout greedy decoding
  has always used);
- `greedy_x_k`: K greedy passes over the problems (K answers per problem the old way; all the
  same, which is why sampling is wanted);
- `sampled`: K seeded samples per problem in one pass, in the aligned layout that makes them
  independent of the batch size (the K rows of a problem share its prefill).

vLLM (each skipped with a note when vLLM is not installed), on one engine:

- `vllm-raw`: `vllm.LLM.generate` with `SamplingParams(n=K, ...)` on the prompts' token ids;
- `vllm`: failtune's `VLLMBackend.stream_samples` with the same settings and per-prompt seeds, so
  both generate the same tokens (`same_answers` checks it).

Acceptance: transformers `sampled` keeps >= 0.9x the tokens/s of `greedy`; failtune's vLLM
backend keeps >= 0.9x the tokens/s of `vllm-raw`. Tokens are the answers' own tokens (the stop
rule's cut, no EOS); vLLM's are the engine's (it has no regex stop). GSM8K test prompts with the
task's stop rule, SmolLM2-135M-Instruct, fp32, CPU; figures saved as JSON under
benchmarks/results/.

    python benchmarks/sampling_throughput.py --problems 64 --samples 8 --batch-size 32
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from failtune.backends import Backend, GenParams, sample_seed
from failtune.backends.hf import HFBackend, prompt_ids
from failtune.manifest import package_versions
from failtune.tasks import Problem
from failtune.tasks.gsm8k import GSM8K

MODEL = "builtin:smollm2"
ENGINES = ("hf", "vllm")


def figures(seconds: float, answers: int, tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 2),
        "answers": answers,
        "completion_tokens": tokens,
        "answers_per_s": round(answers / seconds, 3),
        "tokens_per_s": round(tokens / seconds, 2),
        **extra,
    }


def timed_samples(
    backend: Backend, prompts: list[str], params: GenParams
) -> tuple[float, list[tuple[int, int, Any]]]:
    """Seconds to draw every answer through failtune's backend, and the answers."""
    t0 = time.perf_counter()
    answers = [item for batch in backend.stream_samples(prompts, params) for item in batch]
    return time.perf_counter() - t0, answers


def run_hf(
    prompts: list[str], greedy: GenParams, sampled: GenParams, batch_size: int
) -> dict[str, Any]:
    backend = HFBackend.load(MODEL, batch_size=batch_size, device="cpu")
    timed_samples(backend, prompts[:2], GenParams(max_new_tokens=8))  # warm-up
    out: dict[str, Any] = {}
    seconds, answers = timed_samples(backend, prompts, greedy)
    out["greedy"] = figures(seconds, len(answers), sum(g.completion_tokens for *_, g in answers))
    print(f"hf greedy: {out['greedy']}", flush=True)
    seconds, answers = timed_samples(backend, prompts, sampled)
    distinct = len({(i, g.text) for i, _, g in answers})
    out["sampled"] = figures(
        seconds,
        len(answers),
        sum(g.completion_tokens for *_, g in answers),
        distinct_answers=distinct,
        hit_length_cap=sum(g.finish_reason == "length" for *_, g in answers),
    )
    print(f"hf sampled: {out['sampled']}", flush=True)
    total, tokens, count = 0.0, 0, 0
    for _ in range(sampled.samples):
        seconds, answers = timed_samples(backend, prompts, greedy)
        total += seconds
        tokens += sum(g.completion_tokens for *_, g in answers)
        count += len(answers)
    out["greedy_x_k"] = figures(total, count, tokens, passes=sampled.samples)
    print(f"hf greedy x {sampled.samples}: {out['greedy_x_k']}", flush=True)
    for name in ("sampled", "greedy_x_k"):
        out[name]["tokens_per_s_vs_greedy"] = round(
            out[name]["tokens_per_s"] / out["greedy"]["tokens_per_s"], 3
        )
    out["sampled"]["seconds_vs_greedy_x_k"] = round(
        out["sampled"]["seconds"] / out["greedy_x_k"]["seconds"], 3
    )
    return {"batch_size": backend.batch_size, **out}


def run_vllm(prompts: list[str], sampled: GenParams) -> dict[str, Any]:
    """Raw `LLM.generate` with n=K, then failtune's backend on the same engine, same seeds."""
    from vllm import SamplingParams

    from failtune.backends.vllm import VLLMBackend, close_engine

    backend = VLLMBackend.load(MODEL)
    llm = backend.llm
    requests = [{"prompt_token_ids": prompt_ids(backend.tokenizer, p)} for p in prompts]
    settings = [
        SamplingParams(
            n=sampled.samples,
            temperature=sampled.temperature,
            top_p=sampled.top_p,
            top_k=sampled.top_k,
            seed=sample_seed(sampled.seed, p),
            max_tokens=sampled.max_new_tokens,
            stop_token_ids=backend.eos_ids,
            skip_special_tokens=True,
        )
        for p in prompts
    ]
    llm.generate(requests[:2], settings[:2], use_tqdm=False)  # warm-up
    llm.reset_prefix_cache()  # neither run may reuse the other's cached prompts
    t0 = time.perf_counter()
    outs = llm.generate(requests, settings, use_tqdm=False)
    raw_seconds = time.perf_counter() - t0
    engine_tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    raw = figures(raw_seconds, sum(len(o.outputs) for o in outs), engine_tokens)
    print(f"vllm-raw: {raw}", flush=True)
    llm.reset_prefix_cache()
    seconds, answers = timed_samples(backend, prompts, sampled)
    theirs = {(i, c.index): c.text.strip() for i, o in enumerate(outs) for c in o.outputs}
    same = all(theirs[i, s] == g.text for i, s, g in answers) and len(answers) == len(theirs)
    # Same seeds, same tokens: the engine's work is the raw run's, so its tokens/s compare.
    ours = figures(
        seconds,
        len(answers),
        sum(g.completion_tokens for *_, g in answers),
        engine_tokens_per_s=round(engine_tokens / seconds, 2),
        same_answers=same,
    )
    ours["engine_tokens_per_s_vs_raw"] = round(ours["engine_tokens_per_s"] / raw["tokens_per_s"], 3)
    print(f"vllm (failtune): {ours}", flush=True)
    close_engine()
    return {"vllm-raw": raw, "vllm": ours, "engine": backend.info.details}


def sampling_flags(description: str, name: str, **defaults: Any) -> argparse.ArgumentParser:
    """The flags both sampling benchmarks take; `defaults` override some of their defaults."""
    parser = argparse.ArgumentParser(description=description)
    flags: dict[str, tuple[type, Any, str]] = {
        "problems": (int, 64, "GSM8K test prompts (first N)"),
        "samples": (int, 8, "K answers per problem"),
        "max-new-tokens": (int, 256, "answer token cap"),
        "temperature": (float, 0.8, "sampling temperature"),
        "top-p": (float, 0.95, "nucleus mass"),
        "top-k": (int, 0, "most likely tokens kept (0: all)"),
        "seed": (int, 0, "sampling seed"),
    }
    for flag, (kind, default, text) in flags.items():
        default = defaults.get(flag.replace("-", "_"), default)
        parser.add_argument(f"--{flag}", type=kind, default=default, help=text)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / f"{name}.json"))
    return parser


def gsm8k_sampling(args: argparse.Namespace) -> tuple[list[Problem], GenParams, GenParams]:
    """The first `--problems` GSM8K test problems, greedy settings and sampling settings."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    task = GSM8K()
    greedy = GenParams(max_new_tokens=args.max_new_tokens, stop_after=task.stop_after)
    sampled = replace(
        greedy,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        samples=args.samples,
        seed=args.seed,
    )
    return task.load("test")[: args.problems], greedy, sampled


def save_report(name: str, args: argparse.Namespace, body: dict[str, Any]) -> None:
    """Write `body` with the settings, machine and versions to `--output`, as JSON."""
    report = {
        "benchmark": name,
        "model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantised to fp32)",
        "prompts": f"GSM8K test, first {args.problems}, chat template, the task's stop rule",
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "versions": package_versions(),
        **body,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.output}")


def main() -> None:
    parser = sampling_flags(__doc__.splitlines()[0], "sampling_throughput")
    parser.add_argument("--batch-size", type=int, default=32, help="transformers batch size")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    args = parser.parse_args()
    problems, greedy, sampled = gsm8k_sampling(args)
    prompts = [p.prompt for p in problems]
    wanted = set(args.engines.split(","))
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    if "hf" in wanted:
        results["hf"] = run_hf(prompts, greedy, sampled, args.batch_size)
    if "vllm" in wanted:
        if importlib.util.find_spec("vllm") is None:
            skipped["vllm"] = "vllm is not installed"
            print("vllm: skipped (vllm is not installed)", flush=True)
        else:
            results.update(run_vllm(prompts, sampled))
    summary = _summary(results, args.samples)
    for line in summary:
        print(line)
    body = {"engines": results, "skipped": skipped, "summary": summary}
    save_report("sampling_throughput", args, body)


def _summary(results: dict[str, Any], k: int) -> list[str]:
    """The acceptance ratios, when both sides ran."""
    lines = []
    if "hf" in results:
        hf = results["hf"]
        ratio = hf["sampled"]["tokens_per_s_vs_greedy"]
        lines.append(
            f"transformers, batch {hf['batch_size']}: sampling {k} answers per problem runs at "
            f"{ratio:.2f}x greedy tokens/s (acceptance >= 0.9: {'yes' if ratio >= 0.9 else 'no'})"
            f"; it takes {hf['sampled']['seconds_vs_greedy_x_k']:.2f}x the time of {k} greedy "
            "passes"
        )
    if "vllm" in results:
        ratio = results["vllm"]["engine_tokens_per_s_vs_raw"]
        lines.append(
            f"vLLM, n={k}: failtune at {ratio:.2f}x vllm.LLM.generate tokens/s (acceptance "
            f">= 0.9: {'yes' if ratio >= 0.9 else 'no'}); same answers: "
            f"{results['vllm']['same_answers']}"
        )
    return lines


if __name__ == "__main__":
    main()

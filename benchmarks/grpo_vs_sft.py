"""GRPO against SFT on the same failures: arith, SmolLM2-135M-Instruct, validated on held-out
problems with the paired table.

Reuses the folders of benchmarks/targets_comparison.py: its sampled extract (the reach map: GRPO
trains on the near failures, where a group of answers can disagree), its reference-target SFT
adapter and its validation (the SFT arm's figures and the base's answers, which are copied, not
generated again). GRPO's step budget (`--max-steps`) is chosen to take about the SFT arm's wall
time; both times are in the figures. Resumable: training from its checkpoints, validation by
record. Figures: benchmarks/results/grpo_vs_sft_arith.json; the GRPO arm's report (`failtune
report` of its validate folder, with the reward curve) in validate-grpo/report.

    python benchmarks/grpo_vs_sft.py --workdir /tmp/failtune-targets --max-steps 12

GSM8K, after targets_comparison.py's GSM8K run in RUN/targets-gsm8k (its reach map, its
reference arm), validated on all 1,319 test problems:

    python benchmarks/grpo_vs_sft.py --workdir RUN/targets-gsm8k --task math --test-problems 0 \
        --cap 256 --max-steps 48 --temperature 0.8 --backend vllm \
        --out benchmarks/results/grpo_vs_sft_gsm8k.json
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from targets_comparison import table

from failtune.files import atomic_write_json, read_json, read_jsonl
from failtune.reporting.report import write_report
from failtune.training.grpo import METRICS, prompt_dataset_for, train_grpo
from failtune.validation.paired import validate

MODEL = "builtin:smollm2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/failtune-targets")
    parser.add_argument("--task", default="arith")
    parser.add_argument("--test-problems", type=int, default=200, help="0: all")
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2, help="prompts per step")
    parser.add_argument("--cap", type=int, default=128, help="max completion length")
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="of the answers (the reach map's: 0.8)"
    )
    parser.add_argument("--backend", default="hf", help="validation's backend")
    parser.add_argument("--out", default="benchmarks/results/grpo_vs_sft_arith.json")
    args = parser.parse_args()
    work = Path(args.workdir)
    adapter = work / "adapter-grpo"
    prompts = prompt_dataset_for(work / "extract-reference", adapter)
    result = train_grpo(
        MODEL,
        prompts,
        adapter,
        max_steps=args.max_steps,
        num_generations=args.num_generations,
        batch_size=args.batch_size,
        max_completion_length=args.cap,
        learning_rate=args.learning_rate,
        temperature=args.temperature,
        show_progress=False,
    )
    vdir = work / "validate-grpo"
    if not (vdir / "base").exists() and (work / "validate-reference" / "base").exists():
        shutil.copytree(work / "validate-reference" / "base", vdir / "base")
    grpo_table = validate(
        MODEL,
        str(adapter),
        categories=args.task,
        limit=args.test_problems or None,
        output_dir=str(vdir),
        backend=args.backend,
        show_progress=False,
    ).categories[args.task]
    report = write_report(vdir)[0]  # with the reward curve
    steps = list(read_jsonl(adapter / METRICS))
    sft_table = read_json(work / "validate-reference" / "validation.json")["categories"][args.task]
    sft_manifest = read_json(work / "adapter-reference" / "manifest.json")
    figures: dict[str, Any] = {
        "model": MODEL,
        "task": args.task,
        "grpo": {
            "prompts": result.prompts,
            "steps": result.metrics.get("steps"),
            "num_generations": args.num_generations,
            "batch_size": args.batch_size,
            "max_completion_length": args.cap,
            "learning_rate": args.learning_rate,
            "temperature": args.temperature,
            # the steps' own wall time, so a resumed run counts every kept step once
            "train_seconds": round(sum(s["step_seconds"] for s in steps), 1),
            "per_step": steps,
            "mean_zero_std_share": _mean([s["zero_std_share"] for s in steps]),
            "validation": table(grpo_table),
            "report": str(report),
        },
        "sft_reference": {
            "train_seconds": sft_manifest.get("cost", {}).get("wall_seconds"),
            "validation": table(sft_table),
        },
    }
    atomic_write_json(Path(args.out), figures)
    print(json.dumps({k: v for k, v in figures["grpo"].items() if k != "per_step"}, indent=2))


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


if __name__ == "__main__":
    main()

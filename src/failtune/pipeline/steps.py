"""The work of each `failtune run` step, and the engines it opens.

`pipeline` decides which steps run and in what order (input hashes, skip and resume, rounds);
`Run.step` calls the functions here to do a step's work: extract, grade the base, train,
choose among a sweep's candidates, validate. Each returns what the run state records about it,
including the engine that generated (`engine`), which is in no step's input hash.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from failtune.backends import Backend, LazyBackend, engine_kind, load_backend
from failtune.config.options import (
    SECTIONS,
    EngineOptions,
    GenerationOptions,
    ServerOptions,
    fields,
)
from failtune.console import note
from failtune.evaluation.extraction import extract
from failtune.evaluation.records import RESULTS, RESULTS_SOURCE, evaluate
from failtune.files import atomic_write_json, sha256_file
from failtune.model_loading import resolve_model
from failtune.pipeline import sweep
from failtune.reporting.cost import token_counts
from failtune.tasks import scores_loglikelihood
from failtune.validation.paired import validate

if TYPE_CHECKING:
    from failtune.backends.openai import OpenAIBackend
    from failtune.pipeline.runner import Round, Run

# Top-level run keys that choose the generation engine: given to every generating step, in no
# step's input hash (the engine each step used is recorded in its info and manifest instead).
ENGINE_KEYS = tuple(f.name for cls in (EngineOptions, ServerOptions) for f in fields(cls))


def generation_options(config: Mapping[str, Any], section: str, **more: Any) -> Any:
    """The options of a generating step: its table, the run's seed and the run's engine."""
    engine = {k: config[k] for k in ENGINE_KEYS}
    specs = [config["extract"]["categories"], config["validate"]["categories"]]
    if engine["backend"] == "auto" and scores_loglikelihood(specs, config["tasks"]):
        engine["backend"] = "hf"  # vLLM and servers do not score log-likelihoods
    return SECTIONS[section](**config[section], seed=config["seed"], **engine, **more)


def served_base(config: Mapping[str, Any]) -> str | None:
    """backend openai: the base model's name on the server, once it is known that the server
    can load the trained adapter later; checked before any work starts."""
    if config["backend"] != "openai":
        return None
    from failtune.backends.openai import OpenAIBackend

    o = generation_options(config, "validate")
    server = OpenAIBackend.connect(config["served_model"], **o.server())
    server.check_adapter_loading(config["train"]["lora_r"])
    return server.model_name


def open_backend(model: str, o: GenerationOptions, served: str | None = None) -> Backend:
    """How a run opens a model to generate with (`failtune run --estimate` opens it alike)."""
    opened = load_backend(
        served if o.backend == "openai" else model,
        backend=o.backend,
        dtype=o.dtype,
        device=o.device,
        batch_size=o.batch_size,
        server=o.server(),
        **o.engine(),
    )
    return opened.open() if isinstance(opened, LazyBackend) else opened


def train_options(config: Mapping[str, Any], merge: bool, **overrides: Any) -> Any:
    """The train step's options: the [train] table, the run's seed, merging between rounds."""
    return SECTIONS["train"](**{**config["train"], **overrides}, seed=config["seed"], merge=merge)


def extract_step(run: Run, model: str, out_dir: Path) -> dict[str, Any]:
    ex = generation_options(run.config, "extract")
    backend = run.backend(model, ex)
    result = extract(
        model,
        out_dir,
        ex,
        model=backend,
        task_options=run.config["tasks"],
        show_progress=run.show_progress,
    )
    return {
        "summary": result.summary,
        "failures": sum(s["n"] - s["correct"] for s in result.summary.values()),
        **token_counts(model, result.records),
        "engine": backend.info.record(),
    }


def grade_step(run: Run, problems: list, model: str, out_dir: Path, label: str) -> dict[str, Any]:
    val = generation_options(run.config, "validate")
    backend = run.backend(model, val)
    records = evaluate(
        problems,
        out_dir,
        backend=backend,
        max_new_tokens=val.max_new_tokens,
        stop=tuple(val.stop),
        show_progress=run.show_progress,
        label=label,
    )
    return {
        "accuracy": sum(r["correct"] for r in records) / len(records),
        "engine": backend.info.record(),
    }


def train_step(
    run: Run,
    model: str,
    ex_dir: Path,
    adapter: Path,
    merge: bool,
    keep: dict[str, Any],
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    from failtune.training.sft import train

    options = train_options(run.config, merge, **overrides)
    # Weights opened for generation are not needed again in this round: free them for training.
    run.release(f"training {adapter.relative_to(run.dir)}")
    result = train(
        model,
        ex_dir / "*_training_ready.jsonl",
        adapter,
        options,
        show_progress=run.show_progress,  # its bar joins the run's live view
    )
    if result.model is not None:  # trained in this process, not in launched ones
        keep["result"] = result
    # HF's train_loss averages only the steps run by the last process; the log history is kept
    # in checkpoints, so the last logged loss is the same whether or not training was resumed.
    losses = [h["loss"] for h in result.metrics.get("log_history", []) if "loss" in h]
    return {
        "examples": result.examples,
        "steps": result.metrics.get("steps"),
        "last_logged_loss": losses[-1] if losses else None,
    }


def candidate_backend(run: Run, adapter: Path, training: dict[str, Any]) -> Backend:
    """With transformers, the trained model still in memory when this process trained it; else
    the adapter opened lazily by the run's engine (vLLM: LoRA or merged, see vllm.serve_merged),
    or loaded into the OpenAI-compatible server."""
    o = generation_options(run.config, "validate")
    kind = engine_kind(o.backend, o.device)
    if kind != "hf":
        training.pop("result", None)  # the trained model in memory: other engines read files
    result = training.get("result")
    if kind == "openai":
        return _served_adapter(run, adapter)
    # A merged model computes slightly differently from base + adapter: only the unmerged one in
    # memory is what a resumed run (which loads base + adapter) would generate with.
    if result is not None and result.merged_dir is None:
        label = resolve_model(str(adapter)).label  # what LazyBackend would call it on a resume
        from failtune.backends.hf import HFBackend

        return HFBackend(
            result.model,
            result.tokenizer,
            batch_size=run.config["validate"]["batch_size"],
            label=label,
        )
    return load_backend(
        str(adapter),
        backend=o.backend,
        dtype=o.dtype,
        device=o.device,
        batch_size=o.batch_size,
        **o.engine(),
    )


def _served_adapter(run: Run, adapter: Path) -> OpenAIBackend:
    """The adapter loaded into the server under a name unique to its weights (a resumed run,
    or validation after a sweep's choice, finds it loaded); a backend that generates with it."""
    from failtune.backends.openai import OpenAIBackend

    server = OpenAIBackend.connect(
        run.served, **generation_options(run.config, "validate").server()
    )
    digest = sha256_file(adapter / "adapter_model.safetensors")[:12]
    return server.with_adapter(f"failtune-{digest}", adapter)


def validate_step(
    run: Run,
    base_model: str,
    candidate: Callable[[], Backend],
    baseline_dir: Path,
    vdir: Path,
) -> dict[str, Any]:
    base_copy = vdir / "base"
    base_copy.mkdir(parents=True, exist_ok=True)
    for name in (RESULTS, RESULTS_SOURCE):
        shutil.copyfile(baseline_dir / name, base_copy / name)
    options = generation_options(run.config, "validate", output_dir=str(vdir))
    opened = candidate()  # opened only now: the adapter exists once the train step is done
    result = validate(
        # Its answers are the baseline's; a server knows the model by the name it serves.
        run.backend(base_model, options) if options.backend == "openai" else base_model,
        opened,
        options,
        task_options=run.config["tasks"],
        show_progress=run.show_progress,
    )
    return {"passed": result.passed, "engine": opened.info.record()}


def select_step(
    run: Run, rnd: Round, trained: dict[float, Path], select_dir: Path
) -> dict[str, Any]:
    """The base and each candidate answer the selection problems; the best one is kept."""
    val = run.config["validate"]
    problems = sweep.selection_problems(run.config)

    def graded(backend: Backend, out: Path, label: str) -> list[bool]:
        records = evaluate(
            problems,
            out,
            backend=backend,
            max_new_tokens=val["max_new_tokens"],
            stop=tuple(val["stop"]),
            show_progress=run.show_progress,
            label=label,
        )
        return [r["correct"] for r in records]

    opened = run.backend(rnd.model, generation_options(run.config, "validate"))
    base = graded(opened, select_dir / "base", "select: base")
    scores = {
        lr: graded(candidate_backend(run, d, {}), select_dir / d.name, f"select: {d.name}")
        for lr, d in trained.items()
    }
    steps = run.state["steps"]
    training = {
        lr: {
            "final_loss": steps[f"round-{rnd.r}/train-{d.name}"].get("last_logged_loss"),
            "steps": steps[f"round-{rnd.r}/train-{d.name}"].get("steps"),
        }
        for lr, d in trained.items()
    }
    outcome = {
        "selection": sweep.describe(problems, run.config["extract"]["split"]),
        **sweep.choose(base, scores, training),
    }
    shutil.rmtree(rnd.adapter, ignore_errors=True)
    ignore = shutil.ignore_patterns("checkpoints")  # optimizer states: not part of the adapter
    shutil.copytree(trained[outcome["chosen"]], rnd.adapter, ignore=ignore)
    atomic_write_json(select_dir / sweep.SELECTION, outcome)
    note(f"round {rnd.r}: learning rate {outcome['chosen']:g} chosen on the selection problems")
    return outcome

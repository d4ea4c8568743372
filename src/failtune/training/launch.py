"""Training on several processes: accelerate's launcher starts them, failtune only asks it.

`failtune train` runs as it is under `accelerate launch` or `torchrun` (data-parallel: each
process reads its share of every batch, the main process writes). With `num_processes > 1` or
an `accelerate_config`, `train` launches itself that way: a child `failtune train` per process,
started by `python -m accelerate.commands.launch`, so FSDP, DeepSpeed and several machines come
from accelerate's own config file, never from anything written here.

`batch_size` is the global batch of an optimizer step (before gradient accumulation): each of N
processes takes batch_size / N examples, so one config trains the same run on 1 or N processes.
GRPO (`failtune train --method grpo`) launches the same way: each process answers
num_generations / N of every group and TRL compares the rewards over the whole group; the
tasks' options (a run's [tasks]) reach its children as JSON in FAILTUNE_TASK_OPTIONS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from failtune.config.options import GRPOOptions, TrainOptions, to_flags
from failtune.console import LAUNCH_MARK, note
from failtune.errors import FailtuneError

# Set in the processes a launch starts, so none of them launches again.
LAUNCHED = "FAILTUNE_LAUNCHED"
TASK_OPTIONS = "FAILTUNE_TASK_OPTIONS"  # a GRPO launch's task options, for its reward
Options = TrainOptions | GRPOOptions
ERROR_PREFIX = "failtune: error: "


def world_size() -> int:
    """Processes training together: set by accelerate launch and torchrun, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """The process that writes failtune's files (global rank 0)."""
    return int(os.environ.get("RANK", "0")) == 0


def local_device(device: str) -> str:
    """A plain "cuda" means this process's own GPU when several share the machine."""
    local = os.environ.get("LOCAL_RANK")
    return f"cuda:{local}" if device == "cuda" and local is not None else device


def per_process(total: int, processes: int, problem: Callable[[int, int], str]) -> int:
    """This process's share of what the processes split evenly (SFT's global batch, GRPO's
    group of answers); `problem` words the refusal when it does not split."""
    if total % processes:
        raise FailtuneError(problem(total, processes))
    return total // processes


def batch_problem(batch_size: int, processes: int) -> str:
    return _uneven(f"batch_size {batch_size} is the global batch and", batch_size, processes)


def group_problem(num_generations: int, processes: int) -> str:
    what = f"num_generations {num_generations} (a group's answers, shared by the processes)"
    return _uneven(what, num_generations, processes)


def _uneven(what: str, total: int, processes: int) -> str:
    nearest = max(1, total // processes) * processes
    return f"{what} must divide evenly over {processes} processes (try {nearest})"


def task_options_from_env() -> dict[str, Any] | None:
    """The task options a GRPO launch passed to this process (None outside one)."""
    text = os.environ.get(TASK_OPTIONS)
    return json.loads(text) if text else None


def needs_launch(o: Options) -> bool:
    """Several processes asked for and this process is not already one of them."""
    wanted = o.num_processes > 1 or o.accelerate_config is not None
    return wanted and LAUNCHED not in os.environ and "WORLD_SIZE" not in os.environ


def check_launched(o: Options) -> None:
    """A launcher that started another number of processes than asked would change the run."""
    if o.num_processes > 1 and world_size() != o.num_processes:
        raise FailtuneError(
            f"num_processes is {o.num_processes} but the launcher started {world_size()} "
            "process(es); with an accelerate config, its distributed_type must allow several"
        )


def read_accelerate_config(path: str | Path) -> Any:
    """The config as `accelerate launch --config_file` reads it (YAML, or JSON by suffix)."""
    from accelerate.commands.config.config_args import load_config_from_file

    try:
        return load_config_from_file(str(path))
    except Exception as e:  # yaml/json errors, unknown keys (TypeError), wrong values
        text = " ".join(str(e).split())
        raise FailtuneError(
            f"accelerate config {path} cannot be read by accelerate ({text[:200]})"
        ) from None


def processes_allowed(device: str, machines: int) -> tuple[int, str]:
    """(most processes, what limits them): GPUs with CUDA, else CPU cores; times machines."""
    import torch

    if torch.cuda.is_available() and not device.startswith("cpu"):
        count, what = torch.cuda.device_count(), "GPU(s)"
    else:
        count, what = len(os.sched_getaffinity(0)), "CPU core(s)"
    where = "this machine" if machines == 1 else f"each of {machines} machines"
    return count * machines, f"{count} {what} on {where}"


def launch_command(model_name: str, dataset_path: str | Path, out: Path, o: Options) -> list[str]:
    """`accelerate launch … -m failtune.cli train …` with the same options.

    The children write to a pipe, so they show messages, not bars (cli.main).
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if o.accelerate_config is not None:
        cmd += ["--config_file", str(o.accelerate_config)]
    else:  # accelerate starts several local processes only through its multi-GPU launcher
        cmd += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no"]
        cmd += ["--dynamo_backend", "no"]
    if o.num_processes > 1:
        cmd += ["--num_processes", str(o.num_processes)]
    cmd += ["-m", "failtune.cli", "train", "--model_name", model_name]
    cmd += ["--method", "grpo"] if isinstance(o, GRPOOptions) else []
    return [*cmd, "--dataset_path", str(dataset_path), "--output_dir", str(out), *to_flags(o)]


def _import_path() -> str:
    """PYTHONPATH for the children: the failtune this process runs comes first."""
    here = str(Path(__file__).resolve().parents[2])  # src/failtune/training/launch.py → src
    return os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])


def run_processes(
    model_name: str,
    dataset_path: str | Path,
    out: Path,
    o: Options,
    task_options: Mapping[str, Any] | None = None,
) -> None:
    """Train in child processes and wait; a failure becomes one error naming its cause.

    The children's messages are passed on; the launchers' own output (environment notices, a
    crashed rank's traceback) goes to <out>/launch.log, which the error names.
    """
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "launch.log"
    errors: list[str] = []
    tail: deque[str] = deque(maxlen=5)
    how = f"{o.num_processes} processes" if o.num_processes > 1 else "the processes"
    config = f" of {o.accelerate_config}" if o.accelerate_config else ""
    note(f"training on {how}{config} through accelerate launch")
    env = {**os.environ, LAUNCHED: "1", "PYTHONPATH": _import_path()}
    if task_options:
        env[TASK_OPTIONS] = json.dumps(task_options)
    cmd = launch_command(model_name, dataset_path, out, o)
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            text = line.rstrip("\n")
            if text.startswith(LAUNCH_MARK):
                note(text.removeprefix(LAUNCH_MARK))
            elif text.startswith(ERROR_PREFIX):
                errors.append(text.removeprefix(ERROR_PREFIX))
            elif text.strip():
                tail.append(text.strip())
        code = proc.wait()
    if code == 0:
        return
    if errors:
        raise FailtuneError(f"{errors[0]} (training on several processes; log: {log_path})")
    cause = tail[-1] if tail else "no output"
    raise FailtuneError(
        f"training on several processes failed with exit code {code} ({cause[:200]}); "
        f"full output in {log_path}"
    )

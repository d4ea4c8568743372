"""Terminal output: messages and progress bars go to stderr so stdout stays clean for pipes."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Outside a terminal (CI logs, pipes) rich would wrap tables at 80 columns; give them room.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
out = Console(width=None if sys.stdout.isatty() else 140)


_shared: Progress | None = None  # the run-wide live view, when `failtune run` shows one


def _new_progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=err,
        disable=not enabled,
        transient=False,
    )


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress]:
    """A bar with count, elapsed time, ETA and a free-text `info` field (running accuracy).

    Inside `live_view` the bars join that one display (rich allows one live display at a time)
    and are removed when the step ends.
    """
    if _shared is None:
        with _new_progress(enabled) as bar:
            yield bar
        return
    before = set(_shared.task_ids)
    try:
        yield _shared
    finally:
        for task in set(_shared.task_ids) - before:
            _shared.remove_task(task)


@contextlib.contextmanager
def live_view(enabled: bool = True) -> Iterator[Progress]:
    """One display for a whole multi-step run; step bars opened meanwhile appear inside it."""
    global _shared
    with _new_progress(enabled) as view:
        _shared = view
        try:
            yield view
        finally:
            _shared = None


# In the processes of a multi-process training (failtune.training.launch), messages start with this
# mark, so the launching process can pass them on and keep the launchers' own output in a log.
LAUNCH_MARK = "\x1e"
MARK = LAUNCH_MARK if os.environ.get("FAILTUNE_LAUNCHED") else ""


# soft_wrap: a message stays one line however long its paths are (logs are read with grep).
def warn(message: str) -> None:
    err.print(f"{MARK}[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    err.print(f"{MARK}{message}", highlight=False, soft_wrap=True)


def silence() -> None:
    """No messages or bars from this process (the other processes of a training say it all)."""
    err.quiet = out.quiet = True


# Other libraries' own output: it tells a failtune user nothing (a GGUF conversion bar, dataset
# preparation bars, deprecation notices meant for library authors). Environment switches that
# the libraries read when they are imported:
QUIET_ENV = {
    "TQDM_DISABLE": "1",  # plain tqdm bars (transformers' GGUF conversion)
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
}


def quiet_libraries() -> None:
    """Keep other libraries' progress bars, warnings and info logs off the terminal.

    Call before importing them (the CLI does, unless --verbose): several read their switches at
    import. failtune's own messages go through `note`/`warn`, never through `warnings` or
    `logging`, so both are silenced below error level for the whole process.
    """
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)

"""Terminal output: messages and progress bars go to stderr so stdout stays clean for pipes."""

from __future__ import annotations

import contextlib
import sys
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


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def note(message: str) -> None:
    err.print(message, highlight=False)

"""Terminal output: messages and progress bars go to stderr so stdout stays clean for pipes."""

from __future__ import annotations

import sys

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


def progress_bar(enabled: bool = True) -> Progress:
    """A bar with count, elapsed time, ETA and a free-text `info` field (running accuracy)."""
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


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def note(message: str) -> None:
    err.print(message, highlight=False)

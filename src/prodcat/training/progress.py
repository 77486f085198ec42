"""Rich progress bars for long work, silent when asked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

STDERR = Console(stderr=True)  # bars go to stderr, so stdout carries only results


def progress_bar(enabled: bool = True, unit: str = "batches") -> Progress:
    """A bar on stderr with a count, elapsed and remaining time, and a free `info` field."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=STDERR,
        disable=not enabled,
        transient=False,
    )


def file_progress(enabled: bool = True) -> Callable[[str, int, int], None]:
    """A `progress(file, bytes_done, bytes_total)` that draws one bar per file being encoded."""
    state: dict = {}

    def report(name: str, done: int, total: int) -> None:
        if not enabled:
            return
        if state.get("name") != name:
            if "bar" in state:
                state["bar"].stop()
            state["name"] = name
            state["bar"] = progress_bar(True, unit="bytes")
            state["bar"].start()
            state["task"] = state["bar"].add_task(
                f"encoding {Path(name).name}", total=total, info=""
            )
        state["bar"].update(state["task"], completed=done)
        if done >= total:
            state["bar"].stop()
            state.pop("bar")
            state.pop("name")

    return report

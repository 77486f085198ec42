"""Rich progress bars for long work (on stderr, so stdout carries only results), silent when
asked: one bar with a count and times, and one per file for work measured in bytes or rows."""

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

STDERR = Console(stderr=True)


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
    """A `progress(file, done, total)` that draws one bar per file being encoded (into the
    cache, in bytes, or into vectors, in titles), from its first report until `done` reaches
    `total`."""
    state: dict = {}

    def report(name: str, done: int, total: int) -> None:
        if not enabled:
            return
        if state.get("name") != name:
            if "bar" in state:
                state["bar"].stop()
            state["name"] = name
            state["bar"] = progress_bar(True, unit="")
            state["bar"].start()
            description = f"encoding {Path(name).name}"
            state["task"] = state["bar"].add_task(description, total=total, info="")
        state["bar"].update(state["task"], completed=done)
        if done >= total:
            state["bar"].stop()
            state.pop("bar")
            state.pop("name")

    return report

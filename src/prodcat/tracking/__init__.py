"""Where runs are recorded: an MLflow store, or nowhere.

`make_tracker(cfg.tracking)` gives a `Tracker`: an `MlflowTracker` (`mlflow_store.py`, the
one module of prodcat that imports mlflow, the pyfunc model aside) or, with tracking off, a
`NullTracker` whose runs are nothing and whose ids are None, so no caller asks which.
A tracker gives the training loop a callback that records one run, and opens and closes the
runs that nest others (an ensemble's, a sweep's, a study's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from prodcat.config import TrackingConfig
from prodcat.tracking.metadata import DEFAULT_URI, tracking_uri
from prodcat.training.callbacks import Callback

__all__ = ["DEFAULT_URI", "NullTracker", "Tracker", "make_tracker", "tracking_uri"]


class Tracker(Protocol):
    """Records runs."""

    uri: str | None  # the store, None when nothing is recorded

    def check(self) -> None:
        """Raise `TrackingError` now if the store cannot record a run (a tracking server or
        a database that does not answer), before any work is done."""

    def run_logger(self, parent_run_id: str | None = None) -> Callback:
        """The loop's callback that records one run (nested under `parent_run_id`)."""

    def open_parent(
        self, state_file: Path, run_name: str, tags: dict[str, str], params: dict[str, Any]
    ) -> str | None:
        """A run that nests others: the one whose id `state_file` keeps (a resumed sweep's),
        else a new one; its id, or None when nothing is recorded."""

    def close_parent(
        self, run_id: str | None, status: str = "FINISHED", metrics: dict[str, Any] | None = None
    ) -> None:
        """End a run `open_parent` gave, with final `metrics` (None values left out)."""


class NullTracker:
    """Tracking off: nothing is recorded."""

    uri = None

    def check(self) -> None:
        pass

    def run_logger(self, parent_run_id: str | None = None) -> Callback:
        return Callback()

    def open_parent(self, state_file, run_name, tags, params) -> None:
        return None

    def close_parent(self, run_id, status="FINISHED", metrics=None) -> None:
        pass


def make_tracker(cfg: TrackingConfig) -> Tracker:
    """The tracker `cfg` asks for (mlflow is imported only when tracking is on)."""
    if not cfg.enabled:
        return NullTracker()
    from prodcat.tracking.mlflow_store import MlflowTracker

    return MlflowTracker(cfg)

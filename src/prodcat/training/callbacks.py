"""What the loop tells the world: events, and the callbacks that listen to them.

The loop calls every callback at run start, after each batch, at each epoch's end (with that
epoch's metrics), after each checkpoint and at run end. The MLflow tracker is one callback,
early stopping another; a sweep, a tuning pruner or a test adds its own. A callback may ask
the run to stop (`state.stop = True`); one marked `main_only` runs on rank 0 alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from prodcat.config import Config
    from prodcat.data.dataset import Splits
    from prodcat.training.ranks import Rank
    from prodcat.training.result import RunResult


@dataclass
class RunState:
    """The progress of a run: saved in every checkpoint, restored on resume."""

    epoch: int = 0  # epochs completed
    best_score: float = float("-inf")  # best monitored value so far (BAC, or minus the loss)
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one (early stopping's count)
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str | None = None  # the tracker's run, reopened on resume
    partial: dict[str, Any] | None = None  # progress inside the epoch after `epoch`
    improved: bool = False  # the last epoch set a new best
    batch_size: int | None = None  # rows per step, all ranks together (`auto` resolved)
    stop: bool = False  # a callback asks the run to end after this epoch

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "stop"}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunState:
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


@dataclass
class RunInfo:
    """What callbacks see of the run."""

    cfg: Config
    splits: Splits
    output: Path
    device: torch.device
    rank: Rank
    state: RunState
    resumed: bool = False
    init_report: dict[str, float] = field(default_factory=dict)  # e.g. vectors' coverage
    optimizer: Any = None  # to read the learning rate a step used; callbacks never step it
    replaced_run_id: str | None = None  # the tracker's run of the checkpoint a new run replaced
    batches_per_epoch: int = 0  # of this rank


class Callback:
    """Override the events you need; each is a no-op here."""

    main_only: ClassVar[bool] = False  # a side effect only rank 0 may have

    def on_run_start(self, run: RunInfo) -> None: ...

    def on_batch_end(self, run: RunInfo, step: int, rows: int) -> None: ...

    def on_epoch_end(self, run: RunInfo, record: dict[str, float]) -> None: ...

    def on_checkpoint(self, run: RunInfo, path: Path) -> None: ...

    def on_run_end(self, run: RunInfo, result: RunResult | None, status: str) -> None:
        """`status`: FINISHED, KILLED (interrupted) or FAILED; `result` only when FINISHED."""


class Callbacks(Callback):
    """Several callbacks called in order, as one."""

    def __init__(self, callbacks: list[Callback], main: bool = True):
        self.callbacks = [c for c in callbacks if main or not c.main_only]

    def on_run_start(self, run: RunInfo) -> None:
        for c in self.callbacks:
            c.on_run_start(run)

    def on_batch_end(self, run: RunInfo, step: int, rows: int) -> None:
        for c in self.callbacks:
            c.on_batch_end(run, step, rows)

    def on_epoch_end(self, run: RunInfo, record: dict[str, float]) -> None:
        for c in self.callbacks:
            c.on_epoch_end(run, record)

    def on_checkpoint(self, run: RunInfo, path: Path) -> None:
        for c in self.callbacks:
            c.on_checkpoint(run, path)

    def on_run_end(self, run: RunInfo, result: RunResult | None, status: str) -> None:
        for c in self.callbacks:
            c.on_run_end(run, result, status)


class EarlyStopping(Callback):
    """Stop after `patience` epochs without a better monitored value (`training.monitor`)."""

    def __init__(self, patience: int):
        self.patience = patience

    def on_run_start(self, run: RunInfo) -> None:
        if run.resumed and run.state.bad_epochs >= self.patience:
            # The run had stopped early; resuming it means: train on.
            run.state.bad_epochs = 0

    def on_epoch_end(self, run: RunInfo, record: dict[str, float]) -> None:
        state = run.state
        state.bad_epochs = 0 if state.improved else state.bad_epochs + 1
        if state.bad_epochs >= self.patience:
            state.stop = True

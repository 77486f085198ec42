"""`run(cfg)`: config and files in, a trained, tracked, saved model out.

The one library call behind `prodcat train`, the benchmarks, sweeps and tuning, and the
layer that wires data, tracking and training together (`training/` is a plain library below
it): one network is trained by `train.train_model`; a model of models (an ensemble) trains
its members that way, above it (`ensemble.py`); a model that distils a teacher gets the
teacher's probabilities first (`distill.py`). The CLI only parses options and prints the
result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prodcat.config import Config
from prodcat.data.dataset import Splits
from prodcat.errors import ConfigError
from prodcat.models.ensemble import EnsembleConfig
from prodcat.tracking import make_tracker
from prodcat.training.callbacks import Callback
from prodcat.training.ranks import Rank
from prodcat.training.result import RunResult
from prodcat.workflow.distill import prepare_teacher, with_teacher
from prodcat.workflow.ensemble import train_ensemble
from prodcat.workflow.train import (
    check_output,
    default_output,
    prepare_data,
    terminate_as_interrupt,
    train_model,
)

__all__ = ["prepare_data", "run"]


def run(
    cfg: Config,
    output: str | Path | None = None,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    parent_run_id: str | None = None,
    splits: Splits | None = None,
    rank: Rank | None = None,
) -> RunResult:
    """Train `cfg` and save the model folder in `output` (default: runs/FAMILY-TIME).

    The run is tracked as `cfg.tracking` says (nested under `parent_run_id` if given);
    `callbacks` hear its events. `splits` reuses data already prepared with
    `prepare_data(cfg)`. SIGTERM stops it as Ctrl-C does, keeping its checkpoint. A tracking
    server that does not answer fails it before any work; one that goes away during the run
    leaves it unlogged (`RunResult.not_logged`), its model folder whole.
    """
    output = Path(output) if output is not None else default_output(cfg)
    if (rank or Rank.from_env()).main:
        check_output(cfg, output, resume)
        make_tracker(cfg.tracking).check()  # a tracking server that is down fails it now
    with terminate_as_interrupt():
        if isinstance(cfg.model, EnsembleConfig):  # a model of models: its members are runs
            if cfg.training.teacher is not None:
                raise ConfigError(
                    "an ensemble distils no teacher: give training.teacher to a model"
                )
            return train_ensemble(
                cfg, output, resume=resume, callbacks=callbacks, parent_run_id=parent_run_id
            )
        if cfg.training.teacher is not None:  # first the teacher (trained if named by config)
            teacher = prepare_teacher(
                cfg, output, lambda c, o: run(c, o, resume=resume, parent_run_id=parent_run_id)
            )
            splits = with_teacher(cfg, splits or prepare_data(cfg, rank), teacher)
        return train_model(
            cfg, output, resume=resume, callbacks=callbacks, parent_run_id=parent_run_id,
            splits=splits, rank=rank,
        )  # fmt: skip

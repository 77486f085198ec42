"""`run(cfg)`: config and files in, a trained, tracked, saved model out.

The one library call behind `prodcat train`, the benchmarks, and later sweeps and tuning:
read and split the data with the family's featurizer, train with the tracker and the
caller's callbacks, return the typed result. The CLI only parses options and prints it.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from prodcat.config import Config, build_config
from prodcat.data.dataset import Splits, load_splits
from prodcat.data.featurizer import make_featurizer
from prodcat.data.readers import bundled_sample
from prodcat.errors import ConfigError, ProdcatError, Terminated
from prodcat.tracking.tracker import make_tracker
from prodcat.training.callbacks import Callback
from prodcat.training.loop import train
from prodcat.training.progress import file_progress
from prodcat.training.ranks import Rank
from prodcat.training.result import METRICS_FILE, RunResult

log = logging.getLogger(__name__)


def default_output(cfg: Config) -> Path:
    """runs/FAMILY-YYYYmmdd-HHMMSS"""
    return Path("runs") / f"{cfg.model.family}-{datetime.now():%Y%m%d-%H%M%S}"


def prepare_data(cfg: Config, rank: Rank | None = None) -> Splits:
    """The run's splits, encoded by the featurizer its family needs (files from `cfg.data`)."""
    show = cfg.training.progress and (rank or Rank.from_env()).main
    featurizer = make_featurizer(cfg)
    featurizer.show_progress = show
    splits = load_splits(
        cfg.data,
        cfg.data.train or bundled_sample(),
        progress=file_progress(show),
        featurizer=featurizer,
    )
    for line in splits.summary.lines():
        log.info(line)
    return splits


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

    The run is tracked in MLflow when `cfg.tracking.enabled` (nested under `parent_run_id`
    if given); `callbacks` hear its events. `splits` reuses data already prepared with
    `prepare_data(cfg)`.
    """
    output = Path(output) if output is not None else default_output(cfg)
    if (rank or Rank.from_env()).main:
        check_output(cfg, output, resume)
    with terminate_as_interrupt():
        if cfg.model.family == "ensemble":  # each member through this function, then combined
            from prodcat.training.ensemble import train_ensemble

            return train_ensemble(
                cfg, output, resume=resume, callbacks=callbacks, parent_run_id=parent_run_id
            )
        splits = splits if splits is not None else prepare_data(cfg, rank)
        tracker = make_tracker(cfg.tracking, parent_run_id)
        listeners = [*callbacks, *([tracker] if tracker else [])]
        return train(cfg, splits, output, listeners, resume=resume, rank=rank)


def check_output(cfg: Config, output: Path, resume: bool) -> None:
    """Fail before any work if `output` cannot hold this run's model folder.

    It must be a folder (or creatable as one) that this process can write. A folder that holds
    another run (its `config.yaml` differs from `cfg`) is refused unless `resume` continues
    it: two runs' files never mix. The same config again starts that run over.
    """
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output}: --output is a file, not a folder")
    existing = next((p for p in (output, *output.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise ConfigError(f"{output}: cannot create the output folder ({existing} is a file)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(
            f"{output}: cannot write the output folder ({e.strerror or e} in {existing})"
        ) from None
    saved = output / "config.yaml"
    if resume or not saved.is_file():
        return
    try:
        same = build_config(saved).model_dump() == cfg.model_dump()
    except (ProdcatError, OSError, ValueError):
        same = False
    if not same:
        state = "a finished run" if (output / METRICS_FILE).is_file() else "another run"
        raise ConfigError(
            f"{output}: holds {state} with a different config; choose another --output, "
            "or add --resume to continue that run"
        )
    log.warning("%s: holds a run of the same config, which this run replaces", output)


@contextmanager
def terminate_as_interrupt():
    """Turn SIGTERM into `Terminated` (a KeyboardInterrupt) while a run trains, so the loop
    stops at the batch it is in, marks the tracked run KILLED and keeps its checkpoint."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def stop(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

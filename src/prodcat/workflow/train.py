"""One model from its config: read and split the data with its family's featurizer, wire the
tracker and the caller's callbacks to the loop, return the typed result. Also what every run
checks first (its output folder) and how a signal stops it.
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

from prodcat import registry
from prodcat.config import Config, load_config
from prodcat.data.dataset import Splits, load_splits
from prodcat.data.featurizers import Featurizer
from prodcat.data.readers import bundled_sample
from prodcat.errors import ConfigError, ProdcatError, Terminated
from prodcat.progress import file_progress
from prodcat.tracking import make_tracker
from prodcat.training.callbacks import Callback
from prodcat.training.loop import train
from prodcat.training.ranks import Rank
from prodcat.training.result import METRICS_FILE, RunResult

log = logging.getLogger(__name__)


def default_output(cfg: Config) -> Path:
    """runs/FAMILY-YYYYmmdd-HHMMSS"""
    return Path("runs") / f"{cfg.model.family}-{datetime.now():%Y%m%d-%H%M%S}"


def make_featurizer(cfg: Config) -> Featurizer:
    """The unfitted featurizer the configured family reads titles with."""
    family = registry.family(cfg.model.family)
    if family.featurizer is None:
        raise ConfigError(f"the {family.name} family reads no titles itself (its members do)")
    return family.featurizer(cfg.data, cfg.model)


def prepare_data(cfg: Config, rank: Rank | None = None) -> Splits:
    """The run's splits, encoded by the featurizer its family needs (files from `cfg.data`)."""
    show = cfg.training.progress and (rank or Rank.from_env()).main
    featurizer = make_featurizer(cfg)
    splits = load_splits(
        cfg.data,
        cfg.data.train or bundled_sample(),
        progress=file_progress(show),
        featurizer=featurizer,
    )
    for line in splits.summary.lines():
        log.info(line)
    return splits


def train_model(
    cfg: Config,
    output: Path,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    parent_run_id: str | None = None,
    splits: Splits | None = None,
    rank: Rank | None = None,
) -> RunResult:
    """Train one network of `cfg` into `output`, tracked (nested under `parent_run_id` if
    given) as `cfg.tracking` says; `splits` reuses data already prepared with
    `prepare_data(cfg)`."""
    splits = splits if splits is not None else prepare_data(cfg, rank)
    logger = make_tracker(cfg.tracking).run_logger(parent_run_id)
    return train(cfg, splits, output, [*callbacks, logger], resume=resume, rank=rank)


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
        same = load_config(saved).model_dump() == cfg.model_dump()
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

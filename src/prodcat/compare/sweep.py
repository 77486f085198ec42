"""`prodcat compare SWEEP.yaml`: named variants x repeats, each one `run()`, resumable.

A sweep file names a base config, the variants (a config file and/or `--set` overrides, and
tags such as the encoder's language) and the number of repeats. Repeat r of a variant trains
with `training.seed + r` on the same data split (`data.seed` is not varied), so every run of
the sweep is scored on the same test rows and runs can be compared row by row.

Each run is a model folder `OUTPUT/runs/VARIANT/rN` and an MLflow run nested under the
sweep's run. A folder holding `metrics.json` is finished and never trained again; one with
only a checkpoint is resumed from it, so a killed sweep continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

import prodcat.models  # noqa: F401  (the model families a sweep's configs name)
from prodcat.compare.files import SpecFile
from prodcat.compare.runs import RunRecord, records_from_mlflow
from prodcat.compare.study import (
    HEARTBEAT_SECONDS,
    close_as_surplus,
    counted,
    open_storage,
    poll_seconds,
    storage_url,
    work,
)
from prodcat.config import Config, build_config
from prodcat.errors import ConfigError, TrackingError
from prodcat.tracking import Tracker, make_tracker, tracking_uri
from prodcat.tracking.metadata import redacted
from prodcat.training.callbacks import Callback, RunInfo
from prodcat.training.checkpoint import CHECKPOINT
from prodcat.training.result import METRICS_FILE, RunResult

log = logging.getLogger(__name__)

SWEEP_STATE = "sweep.json"
USER_TAGS = "prodcat.tags"  # the sweep's MLflow run id, so a resumed sweep reopens it


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VectorsSpec(_Strict):
    """Word vectors trained before any run on the training file of the first variant that
    reads them, tokenised as that variant tokenises (no labels read)."""

    dim: int = Field(ge=1)
    algorithm: str = "fasttext"
    epochs: int = Field(5, ge=1)
    min_count: int = Field(2, ge=1)


class Variant(_Strict):
    """One model setting of the sweep."""

    config: Path | None = Field(None, description="config file (default: the sweep's)")
    set: list[str] = Field(default_factory=list, description="overrides after the sweep's")
    tags: dict[str, str] = Field(default_factory=dict)
    repeats: int | None = Field(None, ge=1, description="default: the sweep's")


class Sweep(SpecFile):
    """A sweep file: a base config, named variants and how many times to train each."""

    experiment: str = Field(description="the MLflow experiment (and the report's title)")
    description: str = ""
    config: Path | None = Field(None, description="base config file of every variant")
    set: list[str] = Field(default_factory=list, description="overrides of every variant")
    repeats: int = Field(3, ge=1, description="runs per variant, seeds training.seed + r")
    tags: dict[str, str] = Field(default_factory=dict, description="on every run")
    vectors: dict[str, VectorsSpec] = Field(
        default_factory=dict, description="referred to as @vectors/NAME in overrides"
    )
    variants: dict[str, Variant]

    kind: ClassVar[str] = "sweep"

    def check(self, path: Path) -> None:
        if not self.variants:
            raise ConfigError(f"{path}: variants: list at least one")


@dataclass
class PlannedRun:
    """One (variant, repeat) of a sweep, with its config and model folder."""

    variant: str
    repeat: int
    cfg: Config
    folder: Path
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return (self.folder / METRICS_FILE).is_file()

    @property
    def name(self) -> str:
        return f"{self.variant} r{self.repeat}"


def plan(
    sweep: Sweep,
    output: Path,
    overrides: list[str] = (),
    variants: list[str] | None = None,
) -> list[PlannedRun]:
    """Every run of the sweep, in order: variant by variant, repeats inside.

    `overrides` apply to every variant after the sweep's own (e.g. tracking.enabled=false);
    `variants` keeps only those named.
    """
    unknown = sorted(set(variants or []) - set(sweep.variants))
    if unknown:
        raise ConfigError(
            f"unknown variant(s) {', '.join(unknown)}; the sweep has {', '.join(sweep.variants)}"
        )
    vectors_dir = output / "vectors"
    runs = []
    for name, variant in sweep.variants.items():
        if variants and name not in variants:
            continue
        config = variant.config or sweep.config
        settings = [_expand(s, vectors_dir) for s in [*sweep.set, *variant.set, *overrides]]
        try:
            base = build_config(sweep.resolve(config) if config else None, settings)
        except ConfigError as e:
            raise ConfigError(f"variant {name}: {e}") from None
        for repeat in range(variant.repeats or sweep.repeats):
            cfg = base.model_copy(deep=True)
            cfg.training.seed = base.training.seed + repeat
            cfg.training.progress = False  # the sweep draws one display for all its runs
            user = {**sweep.tags, **variant.tags}
            tags = {
                **user,
                "sweep": sweep.experiment,
                "variant": name,
                "repeat": str(repeat),
                USER_TAGS: ",".join(sorted(user)),  # which tags a report groups by
            }
            cfg.tracking.experiment = sweep.experiment
            cfg.tracking.run_name = cfg.tracking.run_name or f"{name}-r{repeat}"
            cfg.tracking.tags = {**cfg.tracking.tags, **tags}
            runs.append(PlannedRun(name, repeat, cfg, output / "runs" / name / f"r{repeat}", tags))
    return runs


def _expand(setting: str, vectors_dir: Path) -> str:
    return setting.replace("@vectors/", f"{vectors_dir}/")


def prepare_vectors(sweep: Sweep, runs: list[PlannedRun], output: Path) -> None:
    """Train the sweep's word vectors (once; kept in OUTPUT/vectors) on the training file of
    the first run that reads them."""
    from prodcat.data.readers import bundled_sample
    from prodcat.data.vectors import train_vectors

    for name, spec in sweep.vectors.items():
        path = output / "vectors" / f"{name}.txt.gz"
        if path.is_file():
            continue
        users = [r for r in runs if str(path) in json.dumps(r.cfg.model.model_dump(mode="json"))]
        if not users:
            continue
        data = users[0].cfg.data
        source = data.train or bundled_sample()
        log.info("training %s-d word vectors '%s' on %s", spec.dim, name, source)
        partial = path.with_suffix(".partial.gz")
        train_vectors(
            source,
            partial,
            data,
            dim=spec.dim,
            algorithm=spec.algorithm,
            epochs=spec.epochs,
            min_count=spec.min_count,
            seed=users[0].cfg.training.seed,
        )
        partial.replace(path)  # a killed sweep never leaves half a vectors file under the name


class _SweepProgress(Callback):
    """Reports each finished epoch of the current run to the sweep's display."""

    def __init__(self, report: Callable[[str], None], name: str):
        self.report, self.name = report, name

    def on_epoch_end(self, run: RunInfo, record: dict[str, float]) -> None:
        self.report(
            f"{self.name}: epoch {int(record['epoch'])}/{run.cfg.training.epochs}, "
            f"validation BAC {record.get('validation_balanced_accuracy', float('nan')):.4f}"
        )


def run_sweep(
    sweep: Sweep,
    output: str | Path,
    *,
    overrides: list[str] = (),
    variants: list[str] | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> list[tuple[PlannedRun, RunResult]]:
    """Train every run of the sweep not yet finished; return all runs with their results.

    `callbacks` hear the events of every run trained (their `run.output` says which).
    """
    runs, parent, close = _open(sweep, Path(output), overrides, variants)
    done: list[tuple[PlannedRun, RunResult]] = []
    todo = [r for r in runs if not r.finished]
    if len(todo) < len(runs):
        log.info("%d of %d runs already finished: kept", len(runs) - len(todo), len(runs))
    with close:
        from prodcat.progress import progress_bar

        with progress_bar(progress, unit="runs") as bar:
            task = bar.add_task(
                sweep.experiment, total=len(runs), completed=len(runs) - len(todo), info=""
            )
            for planned in runs:
                if planned.finished:
                    done.append((planned, RunResult.load(planned.folder)))
                    continue
                result = _train(
                    planned, parent, callbacks, lambda text: bar.update(task, info=text)
                )
                done.append((planned, result))
                bar.update(task, advance=1)
    return done


def share_sweep(
    sweep: Sweep,
    output: str | Path,
    storage: str,
    *,
    overrides: list[str] = (),
    variants: list[str] | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    heartbeat: int = HEARTBEAT_SECONDS,
) -> list[RunRecord] | None:
    """Train the runs of the sweep this worker claims from the study database at `storage`,
    shared with every worker started on the same sweep and storage, until every run is in.

    The worker that finishes the sweep (it trained the last run, or came after the end)
    returns every run's record, read from MLflow where each worker logged its runs (the
    table is built once); the others return None.
    """
    from optuna.trial import TrialState

    from prodcat.progress import progress_bar

    runs, parent, close = _open(sweep, Path(output), overrides, variants)
    if not runs[0].cfg.tracking.enabled:
        raise ConfigError(
            "a sweep shared through --storage needs tracking on: its table is read from MLflow"
        )
    by_key = {_key(r): r for r in runs}
    study = _sweep_study(sweep, list(by_key), storage_url(storage), heartbeat)

    def objective(trial) -> float:
        key = trial.user_attrs.get("run")
        # ask() made a new trial (the queue ran dry after this worker looked), or queued
        # copies of one run raced: the lowest-numbered copy trains, the others close.
        if key not in by_key:
            close_as_surplus(trial, "no run of the sweep waits")
        others = counted(study.get_trials(deepcopy=False, states=live))
        if any(t.user_attrs.get("run") == key and t.number < trial.number for t in others):
            close_as_surplus(trial, f"{key} is trained by another worker")
        planned = by_key[key]
        if planned.finished:  # trained here before, its record lost with the server
            result = RunResult.load(planned.folder)
            trial.set_user_attr("run_id", _logged(planned, result))
        else:
            result = _train(planned, parent, callbacks, lambda text: bar.update(task, info=text))
            if result.not_logged:  # the server is gone: so is this worker, in one line
                raise TrackingError(
                    f"{planned.name} is not logged to MLflow: {result.not_logged}; its folder "
                    "is whole: start this command again once the server is back"
                )
            trial.set_user_attr("run_id", result.run_id)
        return (result.test or result.validation).balanced_accuracy

    live = (TrialState.COMPLETE, TrialState.RUNNING)

    def complete(trials: list) -> set[str]:
        return {t.user_attrs.get("run") for t in trials if t.state == TrialState.COMPLETE}

    def claimable(trials: list) -> bool:
        if any(t.state == TrialState.WAITING for t in trials):
            return True
        if not any(t.state == TrialState.RUNNING for t in trials):
            failed = sorted(set(by_key) - complete(trials))
            raise ConfigError(
                f"sweep {sweep.experiment}: run(s) {', '.join(failed)} failed and are not "
                "queued again; start the command again to retry them"
            )
        return False

    with close, progress_bar(progress, unit="runs") as bar:
        task = bar.add_task(sweep.experiment, total=len(runs), info="")
        share = work(
            study,
            objective,
            settled=lambda trials: complete(trials) >= set(by_key),
            claimable=claimable,
            poll=poll_seconds(heartbeat),
            report=lambda trials: bar.update(task, completed=len(complete(trials))),
        )
    trials = counted(study.get_trials(deepcopy=False))
    if not share.finishes(trials):
        return None
    ids = {t.user_attrs.get("run_id") for t in trials if t.state == TrialState.COMPLETE}
    store = tracking_uri(runs[0].cfg.tracking.uri)
    return records_from_mlflow(sweep.experiment, [store], Path(output) / "mlflow-runs", ids)


def _logged(planned: PlannedRun, result: RunResult) -> str:
    """The MLflow run of a run this machine finished: its own, or, when its tracking server
    was gone, a new one logged from its folder now (as `prodcat log` does)."""
    from prodcat.tracking.mlflow_store import log_model_folder, run_finished

    if run_finished(tracking_uri(planned.cfg.tracking.uri), result.run_id):
        return result.run_id
    log.info("%s: logging its finished folder %s to MLflow", planned.name, planned.folder)
    return log_model_folder(planned.folder)


def _key(planned: PlannedRun) -> str:
    return f"{planned.variant}/r{planned.repeat}"


def _sweep_study(sweep: Sweep, keys: list[str], url: str, heartbeat: int):
    """The sweep's study in the database: one waiting trial per run, queued by the worker
    that created it (and by any worker, again, for runs that failed and wait no more)."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, heartbeat)
    name = f"prodcat sweep {sweep.experiment}"
    try:
        study = optuna.create_study(study_name=name, storage=storage)
        for key in keys:
            study.enqueue_trial({}, user_attrs={"run": key})
        study.set_user_attr("runs", keys)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
    for _ in range(600):  # its creator queues the runs in well under a minute
        planned = study.user_attrs.get("runs")
        if planned is not None:
            break
        time.sleep(0.1)
    else:
        raise ConfigError(
            f"study '{name}' in {redacted(url)} lists no runs: was its creator killed?"
        )
    if sorted(planned) != sorted(keys):
        raise ConfigError(
            f"study '{name}' in {redacted(url)} holds another sweep's runs "
            f"({', '.join(planned)}): give this sweep another experiment name"
        )
    trials = counted(study.get_trials(deepcopy=False))
    alive = {t.user_attrs.get("run") for t in trials if t.state != TrialState.FAIL}
    for key in keys:
        if key not in alive:  # failed for good (an error, or retried twice): once more
            study.enqueue_trial({}, user_attrs={"run": key})
    return study


def _open(sweep: Sweep, output: Path, overrides, variants):
    """The sweep's planned runs, its MLflow parent run, and what closes that run (with the
    status the block ended with)."""
    output.mkdir(parents=True, exist_ok=True)
    runs = plan(sweep, output, list(overrides), variants)
    prepare_vectors(sweep, runs, output)
    tracker = _tracker(sweep, runs)
    parent = tracker.open_parent(
        output / SWEEP_STATE,
        f"sweep {sweep.experiment}",
        {**sweep.tags, "sweep": sweep.experiment, "prodcat.sweep": "parent"},
        {"repeats": sweep.repeats, "variants": ",".join(sweep.variants)},
    )
    return runs, parent, _closing(tracker, parent)


@contextmanager
def _closing(tracker: Tracker, parent: str | None) -> Iterator[None]:
    """Closes the sweep's parent run as the block ends: FINISHED, KILLED (Ctrl-C or SIGTERM:
    the runs' checkpoints are kept) or FAILED."""
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.close_parent(parent, status)


def _train(planned: PlannedRun, parent, callbacks, report: Callable[[str], None]) -> RunResult:
    """One run of the sweep, resumed from its checkpoint if it has one."""
    from prodcat.workflow import run

    report(f"{planned.name}: preparing")
    result = run(
        planned.cfg,
        planned.folder,
        resume=(planned.folder / CHECKPOINT).is_file(),
        callbacks=[_SweepProgress(report, planned.name), *callbacks],
        parent_run_id=parent,
    )
    report(f"{planned.name}: BAC {(result.test or result.validation).balanced_accuracy:.4f}")
    if result.not_logged:
        log.warning(
            "%s is not logged to MLflow (%s): once the server is back, prodcat log %s",
            planned.name,
            result.not_logged,
            planned.folder,
        )
    return result


def _tracker(sweep: Sweep, runs: list[PlannedRun]) -> Tracker:
    """Where the sweep's own run goes: its runs' store, in the sweep's experiment."""
    tracking = runs[0].cfg.tracking if runs else None
    if tracking is None:
        from prodcat.config import TrackingConfig

        tracking = TrackingConfig(enabled=False)
    return make_tracker(tracking.model_copy(update={"experiment": sweep.experiment}))

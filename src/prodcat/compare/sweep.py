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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

import prodcat.models  # noqa: F401  (the model families a sweep's configs name)
from prodcat.compare.files import SpecFile
from prodcat.config import Config, build_config
from prodcat.errors import ConfigError
from prodcat.tracking import Tracker, make_tracker
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
    output = Path(output)
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
    done: list[tuple[PlannedRun, RunResult]] = []
    todo = [r for r in runs if not r.finished]
    if len(todo) < len(runs):
        log.info("%d of %d runs already finished: kept", len(runs) - len(todo), len(runs))
    status = "FAILED"
    try:
        _run_all(runs, done, todo, parent, sweep.experiment, progress, callbacks)
        status = "FINISHED"
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the runs' checkpoints are kept
        status = "KILLED"
        raise
    finally:
        tracker.close_parent(parent, status)
    return done


def _run_all(runs, done, todo, parent, title, progress, callbacks) -> None:
    from prodcat.progress import progress_bar
    from prodcat.workflow import run

    with progress_bar(progress, unit="runs") as bar:
        task = bar.add_task(title, total=len(runs), completed=len(runs) - len(todo), info="")
        for planned in runs:
            if planned.finished:
                done.append((planned, RunResult.load(planned.folder)))
                continue
            bar.update(task, info=f"{planned.name}: preparing")
            watcher = _SweepProgress(lambda text: bar.update(task, info=text), planned.name)
            resume = (planned.folder / CHECKPOINT).is_file()
            result = run(
                planned.cfg,
                planned.folder,
                resume=resume,
                callbacks=[watcher, *callbacks],
                parent_run_id=parent,
            )
            done.append((planned, result))
            bar.update(
                task,
                advance=1,
                info=f"{planned.name}: BAC "
                f"{(result.test or result.validation).balanced_accuracy:.4f}",
            )


def _tracker(sweep: Sweep, runs: list[PlannedRun]) -> Tracker:
    """Where the sweep's own run goes: its runs' store, in the sweep's experiment."""
    tracking = runs[0].cfg.tracking if runs else None
    if tracking is None:
        from prodcat.config import TrackingConfig

        tracking = TrackingConfig(enabled=False)
    return make_tracker(tracking.model_copy(update={"experiment": sweep.experiment}))

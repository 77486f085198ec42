"""`prodcat tune SPACE.yaml`: hyperparameter search with Optuna over prodcat's configs.

TPE samples each trial's values from the search space; every trial is one `run()` (an MLflow
run nested under the study's), reports its validation BAC after each epoch, and is pruned
when the median of earlier trials says it is weak. Trials never read the test rows: the
best trial's model is scored on them once, at the end.

The study lives in SQLite (OUTPUT/optuna.db) or in the database `--storage` names (PostgreSQL
for several machines: `study.py`): run the command again and it goes on to the number of
trials asked, never redoing a finished one; processes started on one study share its trials,
the budget holding across them. A trial's model folder is named after its values, so a trial
stopped midway is tried again with the same values and resumes from its checkpoint (on the
machine that has it; another machine starts it afresh).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

import prodcat.models  # noqa: F401  (the model families a study's configs name)
from prodcat.compare.files import SpecFile
from prodcat.compare.study import (
    HEARTBEAT_SECONDS,
    Share,
    close_as_surplus,
    counted,
    open_storage,
    poll_seconds,
    storage_url,
    work,
)
from prodcat.config import Config, build_config
from prodcat.errors import ConfigError
from prodcat.tracking import make_tracker
from prodcat.training.callbacks import Callback, RunInfo
from prodcat.training.checkpoint import CHECKPOINT
from prodcat.training.result import METRICS_FILE, RunResult, Scores

log = logging.getLogger(__name__)

STUDY_DB = "optuna.db"
BEST_CONFIG = "best.yaml"
METRIC = "validation_balanced_accuracy"


class Range(BaseModel):
    """One dimension of the space: `low`/`high` (ints give an integer range; `log`, `step`)
    or `choices`."""

    model_config = ConfigDict(extra="forbid")

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Range:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices: list at least one value")
        elif self.low is None or self.high is None:
            raise ValueError("give low and high, or choices")
        elif self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        elif self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high)) and (
            self.step is None or float(self.step).is_integer()
        )

    def suggest(self, trial, name: str) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        if self.integer:
            step = int(self.step or 1)
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class TuneSpec(SpecFile):
    """A search-space file."""

    experiment: str = Field(description="the MLflow experiment and the Optuna study's name")
    config: Path | None = Field(None, description="base config file")
    set: list[str] = Field(default_factory=list, description="overrides of every trial")
    trials: int = Field(20, ge=1, description="trials in the study in all")
    seed: int = Field(0, description="the sampler's seed")
    startup_trials: int = Field(5, ge=0, description="trials before TPE and pruning start")
    warmup_epochs: int = Field(1, ge=0, description="epochs before a trial can be pruned")
    space: dict[str, Range]

    kind: ClassVar[str] = "search-space"

    def check(self, path: Path) -> None:
        if not self.space:
            raise ConfigError(f"{path}: space: name at least one config key to tune")

    def config_path(self) -> Path | None:
        return self.resolve(self.config) if self.config is not None else None


class _Pruning(Callback):
    """Reports each epoch's validation BAC to the trial; stops the run when Optuna prunes."""

    def __init__(self, trial):
        self.trial = trial
        self.pruned = False

    def on_epoch_end(self, run: RunInfo, record: dict[str, float]) -> None:
        epoch = int(record["epoch"])
        self.trial.report(record[METRIC], epoch)
        if self.trial.should_prune():
            self.pruned = True
            run.state.stop = True


@dataclass
class TuneResult:
    """The study's best trial: its values, validation BAC, config, folder and test scores."""

    best_values: dict[str, Any]
    best_validation: float
    best_config: Path | None  # None: another worker finishes the study and writes it
    best_folder: Path | None
    test: Scores | None
    trials: list[dict[str, Any]]  # number, state, value, values: every trial
    best_trial: int = 0


def trial_seeded(make: Callable[[int], Any], seed: int):
    """An Optuna sampler that is `make(seed + trial number)` made afresh for each trial, so
    workers sharing a study draw different values (one seed would give each the same) and a
    study run again is the same study. TPE keeps no state between trials but the study's
    trials, which it reads from the storage, so nothing is lost by making it anew."""
    import optuna

    class TrialSeeded(optuna.samplers.BaseSampler):
        def __init__(self):
            self.current = make(seed)

        def before_trial(self, study, trial) -> None:
            self.current = make(seed + trial.number)
            self.current.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.current.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.current.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, name, distribution):
            return self.current.sample_independent(study, trial, name, distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self.current.after_trial(study, trial, state, values)

    return TrialSeeded()


def trial_config(spec: TuneSpec, values: dict[str, Any], overrides: list[str] = ()) -> Config:
    """The config of a trial with these values (dotted keys of the config)."""
    # JSON is YAML: each value is read back as the type it was sampled as.
    tuned = [f"{key}={json.dumps(value)}" for key, value in values.items()]
    try:
        return build_config(spec.config_path(), [*spec.set, *overrides, *tuned])
    except ConfigError as e:
        raise ConfigError(f"search space: {e}") from None


def _folder_name(values: dict[str, Any]) -> str:
    text = json.dumps(values, sort_keys=True, default=str)
    return "trial-" + hashlib.sha1(text.encode()).hexdigest()[:12]


def tune(
    spec: TuneSpec,
    output: str | Path,
    *,
    overrides: list[str] = (),
    trials: int | None = None,
    progress: bool = True,
    storage: str | None = None,
    heartbeat: int = HEARTBEAT_SECONDS,
) -> TuneResult:
    """Run the study up to `trials` (default: the spec's) trials in all, with whichever
    workers share its `storage` (default: SQLite in `output`); the worker that finishes it
    scores the best trial on the test rows and writes its config to OUTPUT/best.yaml."""
    import optuna
    from optuna.trial import TrialState

    from prodcat.progress import progress_bar
    from prodcat.workflow import run

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    total = trials or spec.trials
    base = trial_config(spec, {}, overrides)  # checks the base config before any trial
    unknown = [k for k in spec.space if k not in base.flat()]
    if unknown:
        raise ConfigError(f"search space: unknown config key(s) {', '.join(unknown)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A trial whose process died (kill -9) stops beating; a worker fails it and tries its
    # values again, resuming from the checkpoint in the trial's folder where there is one.
    study = optuna.create_study(
        study_name=spec.experiment,
        storage=open_storage(
            storage_url(storage or f"sqlite:///{(output / STUDY_DB).resolve()}"), heartbeat
        ),
        direction="maximize",
        load_if_exists=True,
        sampler=trial_seeded(
            lambda seed: optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=spec.startup_trials
            ),
            spec.seed,
        ),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_epochs
        ),
    )
    _retry_interrupted(study)
    tracker = make_tracker(base.tracking.model_copy(update={"experiment": spec.experiment}))
    parent = tracker.open_parent(
        output / "study.json", f"study {spec.experiment}", {"prodcat.study": "parent"}, {}
    )
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)

    def objective(trial) -> float:
        # Claimed beyond the budget (another worker took the last place first): not run.
        every = counted(study.get_trials(deepcopy=False))
        ahead = [t for t in every if t.number < trial.number and t.state in live]
        if len(ahead) >= total:
            close_as_surplus(trial, f"the study's {total} trials are taken")
        # Failed values queued again by two workers that started at once: the first copy runs.
        fixed = next(t for t in every if t.number == trial.number).system_attrs.get("fixed_params")
        if fixed and any(t.params == fixed for t in ahead):
            close_as_surplus(trial, "these values are tried by another worker")
        values = {key: dim.suggest(trial, key) for key, dim in spec.space.items()}
        cfg = trial_config(spec, values, overrides)
        cfg.training.score_test = False  # tuned on validation rows only
        cfg.training.progress = False
        cfg.tracking.experiment = spec.experiment
        cfg.tracking.run_name = f"trial {trial.number}"
        cfg.tracking.tags = {
            **cfg.tracking.tags,
            "study": spec.experiment,
            "trial": str(trial.number),
        }
        folder = output / "trials" / _folder_name(values)
        trial.set_user_attr("folder", str(folder))
        if (folder / METRICS_FILE).is_file():
            result = RunResult.load(folder)
            for record in result.history:
                trial.report(record[METRIC], int(record["epoch"]))
        else:
            pruning = _Pruning(trial)
            result = run(
                cfg,
                folder,
                resume=(folder / CHECKPOINT).is_file(),
                callbacks=[pruning],
                parent_run_id=parent,
            )
            if pruning.pruned:
                raise optuna.TrialPruned()
        if result.run_id:
            trial.set_user_attr("run_id", result.run_id)
        return result.validation.balanced_accuracy

    def settled(trials: list) -> int:
        return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)

    def claimable(trials: list) -> bool:
        waiting = any(t.state == TrialState.WAITING for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        return waiting or settled(trials) + running < total

    done = settled(counted(study.get_trials(deepcopy=False)))
    log.info("study %s: %d of %d trials done", spec.experiment, min(done, total), total)
    status = "FAILED"
    try:
        with progress_bar(progress and done < total, unit="trials") as bar:
            task = bar.add_task(spec.experiment, total=total, completed=min(done, total), info="")

            def report(trials: list) -> None:
                bar.update(task, completed=min(settled(trials), total))

            share = work(
                study,
                objective,
                settled=lambda trials: settled(trials) >= total,
                claimable=claimable,
                poll=poll_seconds(heartbeat),
                report=report,
            )
        status = "FINISHED"
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the trial's checkpoint is kept
        status = "KILLED"
        raise
    finally:
        tracker.close_parent(parent, status)
    return _finish(study, spec, output, overrides, share)


def _retry_interrupted(study) -> None:
    """Trials that failed (interrupted, or an error) are tried again once with their values,
    unless those values already finished or wait in the queue."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    settled = {
        json.dumps(t.params, sort_keys=True)
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)
        or t.system_attrs.get("prodcat_retried")
    }
    for t in trials:
        key = json.dumps(t.params, sort_keys=True)
        if t.state == TrialState.FAIL and t.params and key not in settled:
            study.enqueue_trial(t.params)
            study._storage.set_trial_system_attr(t._trial_id, "prodcat_retried", True)
            settled.add(key)


def _finish(study, spec: TuneSpec, output: Path, overrides, share: Share) -> TuneResult:
    """The best trial's config written as YAML and its model scored on the test rows once,
    by the worker that finishes the study; the others report the best trial alone."""
    from optuna.trial import TrialState

    every = counted(study.get_trials(deepcopy=False))
    trials = [
        {"number": t.number, "state": t.state.name, "value": t.value, "values": t.params}
        for t in every
    ]
    complete = [t for t in every if t.state == TrialState.COMPLETE]
    if not complete:
        raise ConfigError(f"study {spec.experiment}: no trial finished")
    best = study.best_trial  # of the complete trials: never a surplus one (those failed)
    cfg = trial_config(spec, best.params, overrides)
    if not share.finishes(every):
        log.info("study %s: finished by the worker of its last trial", spec.experiment)
        return TuneResult(
            best.params, float(best.value), None, None, None, trials, best_trial=best.number
        )
    path = output / BEST_CONFIG
    header = (
        f"# Best of {len(complete)} finished trials of study '{spec.experiment}' "
        f"(prodcat tune): validation BAC {best.value:.4f}.\n"
        f"# Tuned values: {json.dumps(best.params, default=str)}\n"
    )
    path.write_text(header + cfg.to_yaml(), encoding="utf-8")
    folder = _best_folder(best, cfg)
    test = score_test(cfg, folder) if folder is not None else None
    return TuneResult(
        best.params, float(best.value), path, folder, test, trials, best_trial=best.number
    )


def _best_folder(best, cfg: Config) -> Path | None:
    """The best trial's model folder: on this machine, or downloaded from its MLflow run
    (a trial another machine trained); None when neither has it."""
    folder = Path(best.user_attrs["folder"])
    if (folder / METRICS_FILE).is_file():
        return folder
    run_id = best.user_attrs.get("run_id")
    if run_id and cfg.tracking.enabled:
        from prodcat.tracking import tracking_uri
        from prodcat.tracking.mlflow_store import download_model_folder

        return download_model_folder(f"runs:/{run_id}/model", tracking_uri(cfg.tracking.uri))
    log.warning(
        "the best trial's model is on the machine that trained it (%s), and no MLflow run "
        "holds it: train best.yaml to score it on the test rows",
        folder,
    )
    return None


def score_test(cfg: Config, folder: Path) -> Scores | None:
    """The model in `folder` scored on the test rows of `cfg`'s data (None without any)."""
    import torch

    from prodcat.data.dataset import load_splits
    from prodcat.data.readers import bundled_sample
    from prodcat.evaluation.evaluate import evaluate_split
    from prodcat.serving.predictor import Classifier

    classifier = Classifier.load(folder)
    splits = load_splits(
        cfg.data, cfg.data.train or bundled_sample(), featurizer=classifier.featurizer
    )  # the test rows as the trial's data settings carved them
    if splits.test is None:
        return None
    if list(splits.labels.names) != list(classifier.categories):
        raise ConfigError(f"{folder}: its categories differ from the data's; was it moved?")
    scores, _ = evaluate_split(
        classifier.model,
        splits.test,
        cfg.training.eval_batch_size,
        torch.device("cpu"),
        temperature=classifier.temperature,
    )
    return Scores(**scores)

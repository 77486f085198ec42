"""`prodcat tune SPACE.yaml`: hyperparameter search with Optuna over prodcat's configs.

TPE samples each trial's values from the search space; every trial is one `run()` (an MLflow
run nested under the study's), reports its validation BAC after each epoch, and is pruned
when the median of earlier trials says it is weak. Trials never read the test rows: the
best trial's model is scored on them once, at the end.

The study lives in SQLite (OUTPUT/optuna.db): run the command again and it goes on to the
number of trials asked, never redoing a finished one; several processes may share it. A
trial's model folder is named after its values, so a trial stopped midway is tried again
with the same values and resumes from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

import prodcat.models  # noqa: F401  (the model families a study's configs name)
from prodcat.compare.files import SpecFile
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
    best_config: Path
    best_folder: Path
    test: Scores | None
    trials: list[dict[str, Any]]  # number, state, value, values: every trial


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
) -> TuneResult:
    """Run the study up to `trials` (default: the spec's) trials in all; score the best
    trial on the test rows; write its config to OUTPUT/best.yaml."""
    import optuna

    from prodcat.workflow import run

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    total = trials or spec.trials
    base = trial_config(spec, {}, overrides)  # checks the base config before any trial
    unknown = [k for k in spec.space if k not in base.flat()]
    if unknown:
        raise ConfigError(f"search space: unknown config key(s) {', '.join(unknown)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A trial whose process died (kill -9) stops beating; the next run fails it and tries
    # its values again, resuming from the checkpoint in the trial's folder.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{(output / STUDY_DB).resolve()}",
            heartbeat_interval=60,
            grace_period=180,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=2
            ),
        )
    study = optuna.create_study(
        study_name=spec.experiment,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.startup_trials),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_epochs
        ),
    )
    _retry_interrupted(study)
    tracker = make_tracker(base.tracking.model_copy(update={"experiment": spec.experiment}))
    parent = tracker.open_parent(
        output / "study.json", f"study {spec.experiment}", {"prodcat.study": "parent"}, {}
    )

    def objective(trial) -> float:
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
        return result.validation.balanced_accuracy

    done = _counted(study)
    if done < total:
        log.info(
            "study %s: %d of %d trials done, %d to go", spec.experiment, done, total, total - done
        )
        status = "FAILED"
        try:
            study.optimize(objective, n_trials=total - done, show_progress_bar=progress)
            status = "FINISHED"
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the trial's checkpoint is kept
            status = "KILLED"
            raise
        finally:
            tracker.close_parent(parent, status)
    else:
        log.info("study %s: all %d trials done", spec.experiment, total)
        tracker.close_parent(parent)
    return _finish(study, spec, output, overrides)


def _counted(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


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


def _finish(study, spec: TuneSpec, output: Path, overrides) -> TuneResult:
    """The best trial's config written as YAML; its model scored on the test rows once."""
    from optuna.trial import TrialState

    trials = [
        {"number": t.number, "state": t.state.name, "value": t.value, "values": t.params}
        for t in study.get_trials(deepcopy=False)
    ]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ConfigError(f"study {spec.experiment}: no trial finished")
    best = study.best_trial
    cfg = trial_config(spec, best.params, overrides)
    path = output / BEST_CONFIG
    header = (
        f"# Best of {len(complete)} finished trials of study '{spec.experiment}' "
        f"(prodcat tune): validation BAC {best.value:.4f}.\n"
        f"# Tuned values: {json.dumps(best.params, default=str)}\n"
    )
    path.write_text(header + cfg.to_yaml(), encoding="utf-8")
    folder = Path(best.user_attrs["folder"])
    test = score_test(cfg, folder)
    return TuneResult(best.params, float(best.value), path, folder, test, trials)


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

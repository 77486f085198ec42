"""The end of every run, one path for every model folder, a single network's or an
ensemble's: calibrate on the validation rows, score the test rows (or the validation rows
when there are none), and write the model folder with its predictions, per-category report,
plots and `metrics.json`, atomically (`metrics.json`, the mark of a finished run, last).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from prodcat.config import Config
from prodcat.data.dataset import Split
from prodcat.data.featurizers import Featurizer
from prodcat.data.vocab import LabelMap
from prodcat.evaluation.calibration import Calibration
from prodcat.evaluation.evaluate import Predictions, evaluate_split, save_predictions
from prodcat.evaluation.metrics import write_category_report
from prodcat.evaluation.plots import plot_history
from prodcat.models.folder import staging_folder, write_model_files
from prodcat.training.result import METRICS_FILE, RunResult

log = logging.getLogger(__name__)


@dataclass
class Scored:
    """What the end of a run measured of its model."""

    calibration: Calibration | None  # None: not calibrated (`training.calibrate: false`)
    validation: dict[str, float]  # metrics of every validation row (calibrated), if measured
    report: Split  # the split the predictions are of: test, or validation without one
    scores: dict[str, float]  # its metrics
    predictions: Predictions
    scored_test: bool

    @property
    def temperature(self) -> float | None:
        return self.calibration.temperature if self.calibration is not None else None


def score(
    cfg: Config,
    model: torch.nn.Module,
    validation: Split,
    test: Split | None,
    device: torch.device,
    autocast: bool,
    *,
    calibrate: bool,
    rescore_validation: bool = False,
) -> Scored:
    """Calibrate `model` on the validation rows if asked (`model.calibrate`: a temperature,
    and an ensemble's weights), then score the test rows (the validation rows when there are
    none, or the run is not to read them). `rescore_validation`: the epochs scored a sample
    of the validation rows, so an uncalibrated model is scored on all of them here."""
    t = cfg.training
    calibration, metrics = None, {}
    if calibrate:  # its metrics are those of every validation row, calibrated
        calibration, metrics = model.calibrate(validation, t.eval_batch_size, device, autocast)
    elif rescore_validation:
        metrics, _ = evaluate_split(model, validation, t.eval_batch_size, device, autocast)
    temperature = calibration.temperature if calibration is not None else 1.0
    scored_test = test is not None and t.score_test
    report = test if scored_test else validation
    scores, predictions = evaluate_split(
        model, report, t.eval_batch_size, device, autocast, top_k=5, temperature=temperature
    )
    return Scored(calibration, metrics, report, scores, predictions, scored_test)


def write_run_folder(
    output: Path,
    cfg: Config,
    model: torch.nn.Module,
    featurizer: Featurizer | None,
    labels: LabelMap,
    scored: Scored,
    result: RunResult,
    in_place: Mapping[str, Path] | None = None,
) -> None:
    """The model folder of a finished run, written aside and renamed into place,
    `metrics.json` last: a folder that has it is whole. `in_place`: files already in the
    folder that its manifest covers (an ensemble's members)."""
    with staging_folder(output, last=(METRICS_FILE,)) as staging:
        write_model_files(staging, cfg, model, featurizer, labels, scored.calibration, in_place)
        save_predictions(staging, scored.report, scored.predictions, labels)
        write_category_report(
            scored.report.labels,
            scored.predictions.top_ids[:, 0],
            labels.names,
            staging / "category_report.csv",
        )
        if result.history:
            plot_history(result.history, staging)
        result.save(staging)
    log.info("saved the model in %s", output)

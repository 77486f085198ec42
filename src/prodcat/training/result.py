"""What a run produced, as one typed object; `metrics.json` in the model folder is its dump."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

METRICS_FILE = "metrics.json"


class Scores(BaseModel):
    """Metrics of a model on one labelled split."""

    model_config = ConfigDict(extra="forbid")

    balanced_accuracy: float
    accuracy: float
    macro_f1: float
    loss: float
    rows: int
    # Calibration of the top-1 probability (evaluation/calibration.py); None in folders saved
    # before it was measured.
    ece: float | None = None
    auto_label_share_95: float | None = None  # share of rows auto-labelled at 95 % precision
    auto_label_threshold_95: float | None = None  # ... by accepting this confidence or more
    auto_label_share_99: float | None = None
    auto_label_threshold_99: float | None = None


class RunResult(BaseModel):
    """Metrics per split, the best epoch, times, device and where the model folder is."""

    model_config = ConfigDict(extra="forbid")

    family: str
    output_dir: Path
    best_epoch: int
    epochs_run: int
    validation: Scores  # at the best epoch
    test: Scores | None = None
    train_rows: int
    batch_size: int | None = None  # rows per optimizer step (what `batch_size: auto` found)
    train_seconds: float
    titles_per_second: float
    device: str
    device_type: str
    parameters: int
    history: list[dict[str, float]]  # one record per epoch: losses, validation metrics, times
    run_id: str | None = None  # the tracker's run
    init_report: dict[str, float] = {}  # what the model started from (vectors' coverage, ...)
    temperature: float | None = None  # what calibration.json divides the logits by (None: off)
    members: int | None = None  # an ensemble's: its members' runs are in members/
    _model: Any = PrivateAttr(default=None)  # the best weights, on the training device
    _not_logged: str | None = PrivateAttr(default=None)  # set by the tracker that lost its store

    @property
    def model(self):
        """The trained model with its best weights, in eval mode (in memory only)."""
        return self._model

    @property
    def not_logged(self) -> str | None:
        """Why the run is not (wholly) logged, when its tracking store stopped answering;
        None when it is, or when nothing was to be logged (in memory only)."""
        return self._not_logged

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / METRICS_FILE
        path.write_text(self.model_dump_json(indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> RunResult:
        """The result saved in a model folder."""
        return cls.model_validate_json((Path(folder) / METRICS_FILE).read_text(encoding="utf-8"))

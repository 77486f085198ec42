"""The one place that talks to MLflow: a callback of the training loop."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prodcat.config import TrackingConfig
from prodcat.training.callbacks import Callback, RunInfo
from prodcat.training.checkpoint import CHECKPOINT
from prodcat.training.device import device_name

if TYPE_CHECKING:
    from prodcat.training.result import RunResult

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"


class MlflowTracker(Callback):
    """Records a run in MLflow: params, tags, per-epoch metrics, test metrics and the folder.

    A callback of the loop, on rank 0 only. A resumed run reopens its MLflow run; with
    `parent_run_id` the run is nested under that one (a sweep's or a study's run).
    """

    main_only = True

    def __init__(
        self,
        uri: str | None = None,
        experiment: str = "prodcat",
        run_name: str | None = None,
        parent_run_id: str | None = None,
        tags: dict[str, str] | None = None,
    ):
        import mlflow  # imported here: it takes seconds, and only tracked runs need it

        self.mlflow = mlflow
        self.uri = tracking_uri(uri)
        self.experiment = experiment
        self.run_name = run_name
        self.parent_run_id = parent_run_id
        self.tags = dict(tags or {})
        self.run_id: str | None = None

    def start(self, run_id: str | None = None) -> str:
        """Start a run, or reopen `run_id` when a run is resumed."""
        mlflow = self.mlflow
        mlflow.set_tracking_uri(self.uri)
        if run_id is None:
            mlflow.set_experiment(self.experiment)
            tags = dict(self.tags)
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            run = mlflow.start_run(run_name=self.run_name, tags=tags or None)
        else:
            run = mlflow.start_run(run_id=run_id)
        self.run_id = run.info.run_id
        return self.run_id

    def on_run_start(self, run: RunInfo) -> None:
        run.state.run_id = self.start(run.state.run_id)
        self.log_params(run.cfg.flat())
        summary = run.splits.summary
        self.set_tags(
            {
                "device": device_name(run.device),
                "device_type": run.device.type,
                "git_commit": git_commit() or "unknown",
                "categories": len(run.splits.labels),
                "vocabulary": run.splits.featurizer.vocab_size,
                **{f"data.{role}_file": path for role, path in summary.files.items()},
                **{f"data.{role}_rows": n for role, n in summary.sizes.items()},
                **{f"data.rows_read.{Path(f).name}": n for f, n in summary.rows_read.items()},
                **{f"version.{k}": v for k, v in library_versions().items()},
            }
        )
        if run.init_report and not run.resumed:
            self.log_metrics(run.init_report)

    def on_epoch_end(self, run: RunInfo, record: dict[str, float]) -> None:
        metrics = {k: v for k, v in record.items() if k != "epoch"}
        self.log_metrics(metrics, step=int(record["epoch"]))

    def on_run_end(self, run: RunInfo, result: RunResult | None, status: str) -> None:
        if self.mlflow.active_run() is None:
            return
        if result is not None:
            if result.test is not None:
                scores = result.test.model_dump()
                self.log_metrics({f"test_{k}": v for k, v in scores.items()})
            self.log_metrics(
                {
                    "best_validation_balanced_accuracy": result.validation.balanced_accuracy,
                    "train_seconds": result.train_seconds,
                }
            )
            for path in sorted(Path(result.output_dir).iterdir()):
                if path.is_file() and path.name != CHECKPOINT:
                    self.mlflow.log_artifact(str(path), artifact_path="model")
        self.mlflow.end_run(status=status)

    def log_params(self, params: dict[str, Any]) -> None:
        # MLflow refuses to change a logged param, which a resumed run would try.
        logged = self.mlflow.get_run(self.run_id).data.params
        fresh = {k: _param(v) for k, v in params.items() if k not in logged}
        if fresh:
            self.mlflow.log_params(fresh)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})


def tracking_uri(uri: str | None = None) -> str:
    """The store runs go to: `uri`, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _param(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 500 else text[:497] + "..."


def make_tracker(
    tracking_cfg: TrackingConfig, parent_run_id: str | None = None
) -> MlflowTracker | None:
    """An MLflow tracker callback, or None when tracking is off."""
    if not tracking_cfg.enabled:
        return None
    return MlflowTracker(
        tracking_cfg.uri,
        tracking_cfg.experiment,
        tracking_cfg.run_name,
        parent_run_id,
        tags=tracking_cfg.tags,
    )


def git_commit() -> str | None:
    """The commit of the working directory's repository, if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("prodcat", "torch", "numpy", "pyarrow", "mlflow", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out

"""The one place that talks to MLflow. `NullTracker` stands in when tracking is off."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"


class NullTracker:
    """Records nothing; the loop calls it exactly as it calls MLflow."""

    run_id: str | None = None

    def start(self, run_id: str | None = None) -> str | None:
        return None

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def set_tags(self, tags: dict[str, Any]) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def end(self, status: str = "FINISHED") -> None: ...


class MlflowTracker(NullTracker):
    """An MLflow run: params, per-epoch metrics, tags and artifacts."""

    def __init__(
        self, uri: str | None = None, experiment: str = "prodcat", run_name: str | None = None
    ):
        import mlflow  # imported here: it takes seconds, and only tracked runs need it

        self.mlflow = mlflow
        self.uri = tracking_uri(uri)
        self.experiment = experiment
        self.run_name = run_name
        self.run_id = None

    def start(self, run_id: str | None = None) -> str:
        """Start a run, or reopen `run_id` when a run is resumed."""
        mlflow = self.mlflow
        mlflow.set_tracking_uri(self.uri)
        if run_id is None:
            mlflow.set_experiment(self.experiment)
            run = mlflow.start_run(run_name=self.run_name)
        else:
            run = mlflow.start_run(run_id=run_id)
        self.run_id = run.info.run_id
        return self.run_id

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

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.mlflow.active_run() is not None:
            self.mlflow.end_run(status=status)


def tracking_uri(uri: str | None = None) -> str:
    """The store runs go to: `uri`, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _param(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 500 else text[:497] + "..."


def make_tracker(tracking_cfg) -> NullTracker:
    """An MLflow tracker, or a `NullTracker` when tracking is off."""
    if not tracking_cfg.enabled:
        return NullTracker()
    return MlflowTracker(tracking_cfg.uri, tracking_cfg.experiment, tracking_cfg.run_name)


def device_name(device) -> str:
    """GPU type, or the CPU's model name."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


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

"""The one place that talks to MLflow: a callback of the training loop."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prodcat.config import TrackingConfig
from prodcat.fault_points import pause_point
from prodcat.training.callbacks import Callback, RunInfo
from prodcat.training.checkpoint import CHECKPOINT
from prodcat.training.device import device_name

if TYPE_CHECKING:
    from prodcat.training.result import RunResult

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"
LR_POINTS_PER_EPOCH = 50  # batch_lr values logged per epoch, at most (and the last batch's)
BEST_EPOCH_METRICS = ("train_loss",)  # besides validation_*: logged again from the best epoch
DATASET_CONTEXTS = {"train": "training", "validation": "validation", "test": "test"}
PLOTS = ("validation_bac.png", "loss.png")
DIGEST_BLOCK = 1 << 20
DIGEST_BLOCKS = 16


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
        self._stamp = 0  # the last metric timestamp (ms)
        self._lr: float | None = None  # the rate the next batch uses
        self._batches = 0  # batches per epoch
        self._sampled = False  # epochs scored a sample of the validation rows
        self._lr_points: list[tuple[int, float]] = []  # (batch, rate), logged each epoch

    def start(self, run_id: str | None = None) -> str:
        """Start a run, or reopen `run_id` when a run is resumed."""
        mlflow = self.mlflow
        mlflow.set_tracking_uri(self.uri)
        with sqlite_store_lock(self.uri):
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
        if self.run_name is None:
            self.run_name = default_run_name(run.cfg.model.family, run.output)
        if run.replaced_run_id:
            self.close_stale(run.replaced_run_id)
        run.state.run_id = self.start(run.state.run_id)
        params = run.cfg.flat()
        if params.get("training.batch_size") == "auto":
            params["training.batch_size_found"] = run.batch_size
        self.log_params(params)
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
                **source_tags(),
            }
        )
        self.log_datasets(run)
        if run.init_report and not run.resumed:
            self.log_metrics(run.init_report)
        self._lr = _learning_rate(run)
        self._batches = run.batches_per_epoch
        sample = run.cfg.training.validation_rows_during
        self._sampled = sample is not None and sample < len(run.splits.validation)

    def on_batch_end(self, run: RunInfo, step: int, rows: int) -> None:
        # The optimizer has already moved to the next step's rate: this batch used the last one.
        used, self._lr = self._lr, _learning_rate(run)
        every = max(1, self._batches // LR_POINTS_PER_EPOCH)
        if used is not None and (step % every == 0 or step == self._batches):
            batch = run.state.epoch * self._batches + step  # counted from the run's start
            self._lr_points.append((batch, used))

    def on_epoch_end(self, run: RunInfo, record: dict[str, float]) -> None:
        self._flush_lr()
        metrics = {k: v for k, v in record.items() if k != "epoch"}
        self.log_metrics(metrics, step=int(record["epoch"]))

    def on_run_end(self, run: RunInfo, result: RunResult | None, status: str) -> None:
        if self.mlflow.active_run() is None:
            return
        self._flush_lr()
        if result is not None:
            step = self.log_final_metrics(result)
            pause_point("mlflow")  # a test kills the process while it logs the run's end
            for path in sorted(Path(result.output_dir).iterdir()):
                if path.is_file() and path.name != CHECKPOINT:
                    self.mlflow.log_artifact(str(path), artifact_path="model")
            self.log_model(result.output_dir)
            self.log_plots(result.output_dir, step)
        self.mlflow.end_run(status=status)

    def log_model(self, folder: str | Path) -> None:
        """Log the model folder as an MLflow Model too (pyfunc flavor, at `model`, beside the
        folder's files), so `mlflow.pyfunc.load_model("runs:/<id>/model")` and the registry
        work. The folder is already logged: a failure here is a warning, not a failed run."""
        from mlflow.exceptions import MlflowException

        from prodcat.serving.pyfunc import log_pyfunc_model

        try:
            log_pyfunc_model(folder, name="model")
        except (MlflowException, OSError) as e:
            log.warning("the model folder is logged, but not as an MLflow Model: %s", e)

    def close_stale(self, run_id: str) -> None:
        """Mark KILLED a run still RUNNING whose process died without ending it (kill -9,
        a lost machine) and whose folder a new run now takes over."""
        client = self.mlflow.MlflowClient(self.uri)
        try:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, "KILLED")
                log.info("closed MLflow run %s, left RUNNING by a killed process", run_id)
        except self.mlflow.exceptions.MlflowException:
            pass  # another store, or deleted: nothing to close here

    def log_params(self, params: dict[str, Any]) -> None:
        # MLflow refuses to change a logged param, which a resumed run would try.
        logged = self.mlflow.get_run(self.run_id).data.params
        fresh = {k: _param(v) for k, v in params.items() if k not in logged}
        if fresh:
            self.mlflow.log_params(fresh)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        # Each call is stamped after the last, so a value logged again at a step becomes the
        # one MLflow shows (its latest value is the one of highest (step, timestamp)).
        self._stamp = max(int(time.time() * 1000), self._stamp + 1)
        self.mlflow.log_metrics(
            {k: float(v) for k, v in metrics.items()}, step=step, timestamp=self._stamp
        )

    def log_final_metrics(self, result: RunResult) -> int:
        """Log what the saved model (the best epoch's weights) scores at the last epoch's step,
        so the run shows the best epoch's metrics as final; return that step."""
        history = result.history
        step = int(history[-1]["epoch"]) if history else 0
        best = next((h for h in history if h["epoch"] == result.best_epoch), None)
        final: dict[str, float] = {}
        if best is not None and best is not history[-1]:
            final.update(
                {
                    k: v
                    for k, v in best.items()
                    if k in BEST_EPOCH_METRICS or k.startswith("validation_")
                }
            )
        if self._sampled:  # the epochs scored a sample; the saved model was scored on all rows
            final.update(
                {
                    f"validation_{k}": getattr(result.validation, k)
                    for k in ("balanced_accuracy", "accuracy", "macro_f1")
                }
            )
        if result.test is not None:
            final.update(
                {f"test_{k}": v for k, v in result.test.model_dump().items() if v is not None}
            )
        # The saved model's probabilities are calibrated, the epochs' were not: its figures.
        final.update(
            {
                f"validation_{k}": v
                for k, v in result.validation.model_dump().items()
                if k.startswith(("ece", "auto_label_")) and v is not None
            }
        )
        if result.temperature is not None:
            final["temperature"] = result.temperature
        final.update(
            best_epoch=result.best_epoch,
            best_validation_balanced_accuracy=result.validation.balanced_accuracy,
            train_seconds=result.train_seconds,
        )
        self.log_metrics(final, step=step)
        return step

    def log_datasets(self, run: RunInfo) -> None:
        """Each data file the run read as an MLflow dataset input (context training,
        validation or test) with a digest of its content and the rows the run used."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource

        summary = run.splits.summary
        for role, file in summary.files.items():
            path = Path(file).resolve()
            dataset = MetaDataset(
                LocalArtifactDatasetSource(str(path)), name=path.name, digest=file_digest(path)
            )
            rows = {"rows_read": summary.rows_read.get(file), "rows_used": summary.sizes.get(role)}
            self.mlflow.log_input(
                dataset,
                context=DATASET_CONTEXTS.get(role, role),
                tags={k: str(v) for k, v in rows.items() if v is not None},
            )

    def log_plots(self, folder: Path, step: int) -> None:
        """The run's plots as MLflow images, which the chart view shows side by side across
        runs (the copies in model/ are the model folder's)."""
        from PIL import Image

        for name in PLOTS:
            path = Path(folder) / name
            if path.is_file():
                with Image.open(path) as image:
                    self.mlflow.log_image(
                        image.convert("RGB"), key=path.stem, step=step, synchronous=True
                    )

    def _flush_lr(self) -> None:
        if not self._lr_points or self.run_id is None:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric("batch_lr", lr, stamp, batch) for batch, lr in self._lr_points]
        client = self.mlflow.MlflowClient()
        for start in range(0, len(metrics), 1000):  # MLflow takes 1,000 metrics per batch
            client.log_batch(self.run_id, metrics=metrics[start : start + 1000])
        self._lr_points = []

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})


@contextmanager
def sqlite_store_lock(uri: str) -> Iterator[None]:
    """Hold a lock on the folder of a SQLite store while a run opens it: two runs starting at
    once would both create a new store's tables (MLflow's migrations do not expect company)
    or its experiment, and one would fail. Other stores need no lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    folder = Path(uri.removeprefix("sqlite:///")).parent
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # no such folder: MLflow says so in its own words
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def tracking_uri(uri: str | None = None) -> str:
    """The store runs go to: `uri`, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def open_parent_run(
    uri: str | None,
    experiment: str,
    state_file: Path,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, Any] | None = None,
) -> str:
    """The run of a sweep or a study, which its runs nest under: the one whose id
    `state_file` keeps, set RUNNING again when the sweep or study resumes; else a new one in
    `experiment`, its id written to `state_file`."""
    import mlflow

    from prodcat.atomic import write_text_atomic

    client = mlflow.MlflowClient(tracking_uri(uri))
    if state_file.is_file():
        run_id = json.loads(state_file.read_text(encoding="utf-8")).get("parent_run_id")
        try:
            client.update_run(run_id, status="RUNNING")
            return run_id
        except mlflow.exceptions.MlflowException:
            pass  # another store, or the run was deleted: start a new one
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
    for key, value in (params or {}).items():
        client.log_param(run_id, key, value)
    write_text_atomic(state_file, json.dumps({"parent_run_id": run_id}))
    return run_id


def log_run_metrics(uri: str | None, run_id: str | None, metrics: dict[str, float]) -> None:
    """Log final metrics on a run this process does not hold open (an ensemble's, which its
    members nest under); None values are left out. No-op without a run."""
    if run_id is None:
        return
    import mlflow
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    values = [
        Metric(key, float(value), stamp, 0) for key, value in metrics.items() if value is not None
    ]
    mlflow.MlflowClient(tracking_uri(uri)).log_batch(run_id, metrics=values)


def close_parent_run(uri: str | None, run_id: str | None, status: str = "FINISHED") -> None:
    """End a sweep's or study's run (no-op without one)."""
    if run_id is None:
        return
    import mlflow

    mlflow.MlflowClient(tracking_uri(uri)).set_terminated(run_id, status)


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


def git_commit(folder: str | Path | None = None) -> str | None:
    """The commit checked out in `folder`'s repository (default: prodcat's source), if any."""
    return _git(folder, "rev-parse", "HEAD")


def _git(folder: str | Path | None, *args: str) -> str | None:
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def source_tags() -> dict[str, str]:
    """MLflow's standard source tags: the entry point's name, and the commit and branch of
    prodcat's source when it runs from a git checkout."""
    entry = Path(sys.argv[0])  # `prodcat`, a script, or a package's __main__.py (python -m)
    name = (entry.parent if entry.name == "__main__.py" else entry).name
    tags = {"mlflow.source.name": name or "python"}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        branch = _git(None, "rev-parse", "--abbrev-ref", "HEAD")
        if branch and branch != "HEAD":
            tags["mlflow.source.git.branch"] = branch
    return tags


def default_run_name(family: str, output: str | Path) -> str:
    """The model folder's name (`mlp-20250101-120000` by default), led by the family when the
    name does not already say it."""
    name = Path(output).resolve().name
    return name if family in name else f"{family}-{name}"


def file_digest(path: str | Path) -> str:
    """A fingerprint of a file's content, the same wherever the file lies: SHA-256 of its size
    and bytes (for files over 16 MiB, of 16 evenly spaced 1 MiB blocks); 12 hex digits."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= DIGEST_BLOCK * DIGEST_BLOCKS:
            digest.update(f.read())
        else:
            for i in range(DIGEST_BLOCKS):
                f.seek(
                    i * (size - DIGEST_BLOCK) // (DIGEST_BLOCKS - 1)
                )  # the last one ends the file
                digest.update(f.read(DIGEST_BLOCK))
    return digest.hexdigest()[:12]


def _learning_rate(run: RunInfo) -> float | None:
    optimizer = run.optimizer
    return float(optimizer.param_groups[0]["lr"]) if optimizer is not None else None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("prodcat", "torch", "numpy", "pyarrow", "mlflow", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out

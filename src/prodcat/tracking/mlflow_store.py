"""The one module of prodcat that talks to MLflow (the pyfunc model MLflow loads aside):
recording runs, the runs that nest them, a model folder as an MLflow Model (or as a whole run,
afterwards: `prodcat log`), and reading runs and models back (`prodcat report`,
`predict runs:/...`).

A tracking server that is down fails a command at once, in one line; one that goes away
during a run costs the run its record, never its training: the loop goes on, the model folder
is written whole, and `prodcat log FOLDER` records it once the server is back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import requests
import sqlalchemy
import sqlalchemy.exc
import sqlalchemy.pool
from mlflow.exceptions import MlflowException

from prodcat.atomic import write_text_atomic
from prodcat.config import TrackingConfig, load_config
from prodcat.errors import ConfigError, ProdcatError, TrackingError
from prodcat.fault_points import pause_point
from prodcat.models.manifest import listed_files
from prodcat.tracking.metadata import (
    default_run_name,
    file_digest,
    git_commit,
    library_versions,
    redacted,
    source_tags,
    tracking_uri,
)
from prodcat.training.callbacks import Callback, RunInfo
from prodcat.training.checkpoint import CHECKPOINT
from prodcat.training.device import device_name
from prodcat.training.result import METRICS_FILE, RunResult
from prodcat.version import __version__

log = logging.getLogger(__name__)

# MLflow retries a failed request 7 times over about 4 minutes by default, so a run whose
# tracking server is gone would stall that long at its next event (and at exit). Prodcat's
# defaults, where the user set none: 5 retries over about 30 s, which a server's restart fits.
CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    # The run's URL MLflow prints at its end would land in the result on stdout (`--json`).
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
REACH_SECONDS = 10  # how long `check_reachable` waits for a tracking server's answer
# What a store that cannot be reached raises: a server (or the database behind it) that does
# not answer, after MLflow's retries; a database store that refuses its first connection.
STORE_ERRORS = (MlflowException, requests.RequestException, sqlalchemy.exc.OperationalError)
DATABASES = ("postgresql", "mysql", "mssql")  # SQLAlchemy's URI schemes MLflow stores runs in

LR_POINTS_PER_EPOCH = 50  # batch_lr values logged per epoch, at most (and the last batch's)
BEST_EPOCH_METRICS = ("train_loss",)  # besides validation_*: logged again from the best epoch
DATASET_CONTEXTS = {"train": "training", "validation": "validation", "test": "test"}
PLOTS = ("validation_bac.png", "loss.png")
MODEL_FOLDER = "model_folder"  # the prodcat folder's name among an MLflow Model's artifacts


class MlflowTracker:
    """The `Tracker` of an MLflow store (`prodcat.tracking`)."""

    def __init__(self, cfg: TrackingConfig):
        set_client_defaults()
        self.cfg = cfg
        self.uri = tracking_uri(cfg.uri)

    def check(self) -> None:
        """Fail at once, before any training, when the store is a server that does not answer
        (a run that cannot be recorded is not what `tracking.enabled` asks for)."""
        check_reachable(
            self.uri,
            "start it, point tracking.uri or $MLFLOW_TRACKING_URI at one that runs, "
            "or train without tracking (--no-track)",
        )

    def run_logger(self, parent_run_id: str | None = None) -> MlflowRun:
        cfg = self.cfg
        return MlflowRun(self.uri, cfg.experiment, cfg.run_name, parent_run_id, cfg.tags)

    def open_parent(
        self, state_file: Path, run_name: str, tags: dict[str, str], params: dict[str, Any]
    ) -> str:
        """The run of a sweep, a study or an ensemble, which its runs nest under: the one
        whose id `state_file` keeps, set RUNNING again when it resumes; else a new one in the
        experiment, its id written to `state_file`. A server that does not answer fails it
        at once (`check`)."""
        self.check()
        with sqlite_store_lock(self.uri):  # the client creates a new store's tables
            client = mlflow.MlflowClient(self.uri)
        if state_file.is_file():
            run_id = json.loads(state_file.read_text(encoding="utf-8")).get("parent_run_id")
            try:
                client.update_run(run_id, status="RUNNING")
                return run_id
            except MlflowException as e:
                if unreachable(e):
                    raise TrackingError(
                        f"{redacted(self.uri)} stopped answering ({reason(e)})"
                    ) from None
                # another store, or the run was deleted: start a new one
        try:
            with sqlite_store_lock(self.uri):
                experiment = experiment_id(client, self.cfg.experiment)
            run_id = client.create_run(experiment, run_name=run_name, tags=tags).info.run_id
            for key, value in params.items():
                client.log_param(run_id, key, value)
        except STORE_ERRORS as e:
            if not unreachable(e):
                raise
            raise TrackingError(f"{redacted(self.uri)} stopped answering ({reason(e)})") from None
        write_text_atomic(state_file, json.dumps({"parent_run_id": run_id}))
        return run_id

    def close_parent(
        self, run_id: str | None, status: str = "FINISHED", metrics: dict[str, Any] | None = None
    ) -> None:
        if run_id is None:
            return
        client = mlflow.MlflowClient(self.uri)
        stamp = int(time.time() * 1000)
        values = [
            mlflow.entities.Metric(key, float(value), stamp, 0)
            for key, value in (metrics or {}).items()
            if value is not None
        ]
        try:
            if values:
                client.log_batch(run_id, metrics=values)
            client.set_terminated(run_id, status)
        except STORE_ERRORS as e:
            if not unreachable(e):
                raise
            # Its runs' folders are written: a record left unfinished fails nothing.
            log.warning(
                "MLflow run %s is left unfinished: %s stopped answering (%s)",
                run_id, redacted(self.uri), reason(e),
            )  # fmt: skip


class MlflowRun(Callback):
    """Records a run in MLflow: params, tags, per-epoch metrics, test metrics and the folder.

    A callback of the loop, on rank 0 only. A resumed run reopens its MLflow run; with
    `parent_run_id` the run is nested under that one (a sweep's, a study's or an ensemble's).
    When the store stops answering, the run goes on unrecorded: one warning, no more requests,
    and the result says why it is not logged (`RunResult.not_logged`).
    """

    main_only = True

    def __init__(
        self,
        uri: str,
        experiment: str = "prodcat",
        run_name: str | None = None,
        parent_run_id: str | None = None,
        tags: dict[str, str] | None = None,
    ):
        self.uri = uri
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
        self.lost: str | None = None  # why the store no longer records this run

    def start(self, run_id: str | None = None) -> str:
        """Start a run, or reopen `run_id` when a run is resumed."""
        mlflow.set_tracking_uri(self.uri)
        with sqlite_store_lock(self.uri):
            if run_id is None:
                mlflow.set_experiment(
                    experiment_id=experiment_id(mlflow.MlflowClient(self.uri), self.experiment)
                )
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
        self.unless_unreachable(self.record_start, run)

    def record_start(self, run: RunInfo) -> None:
        if run.replaced_run_id:
            self.close_stale(run.replaced_run_id)
        run.state.run_id = self.start(run.state.run_id)
        params = run.cfg.flat()
        if params.get("training.batch_size") == "auto":
            params["training.batch_size_found"] = run.state.batch_size
        self.log_params(params)
        summary = run.splits.summary
        self.set_tags(
            {
                "device": device_name(run.device),
                "device_type": run.device.type,
                "git_commit": git_commit() or "unknown",
                "categories": len(run.splits.labels),
                "vocabulary": summary.vocabulary,
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
        self.unless_unreachable(self.record_epoch, record)

    def record_epoch(self, record: dict[str, float]) -> None:
        self._flush_lr()
        metrics = {k: v for k, v in record.items() if k != "epoch"}
        self.log_metrics(metrics, step=int(record["epoch"]))

    def on_run_end(self, run: RunInfo, result: RunResult | None, status: str) -> None:
        self.unless_unreachable(self.record_end, result, status)
        if self.lost is not None and result is not None:
            result._not_logged = self.lost

    def record_end(self, result: RunResult | None, status: str) -> None:
        if mlflow.active_run() is None:
            return
        self._flush_lr()
        if result is not None:
            self.log_outputs(result.output_dir, result)
        mlflow.end_run(status=status)

    def log_outputs(self, folder: str | Path, result: RunResult) -> None:
        """What a finished run logs at its end: the final metrics, the model folder's files
        (at `model/`, with the MLflow Model beside them) and the plots."""
        step = self.log_final_metrics(result)
        pause_point("mlflow")  # a test kills the process while it logs the run's end
        for path in sorted(Path(folder).iterdir()):
            if path.is_file() and path.name != CHECKPOINT:
                mlflow.log_artifact(str(path), artifact_path="model")
        self.log_model(folder)
        self.log_plots(Path(folder), step)

    def unless_unreachable(self, record: Callable[..., None], *args: Any) -> None:
        """`record(*args)` unless the store was lost; when it stops answering there, lose it:
        warn once, drop the run from MLflow's active runs (one quick try to end it), go on."""
        if self.lost is not None:
            return
        try:
            record(*args)
        except STORE_ERRORS as e:
            if not unreachable(e):
                raise
            self.lost = f"{redacted(self.uri)} stopped answering ({reason(e)})"
            log.warning("MLflow: %s; training goes on, this run is not logged", self.lost)
            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                # Pops the run (marked FAILED if the server is back), so that nothing waits
                # on it again, not even MLflow's end of the process.
                with one_quick_try(), contextlib.suppress(*STORE_ERRORS):
                    mlflow.end_run(status="FAILED")

    def log_model(self, folder: str | Path) -> None:
        """Log the model folder as an MLflow Model too (pyfunc flavor, at `model`, beside the
        folder's files), so `mlflow.pyfunc.load_model("runs:/<id>/model")` and the registry
        work. The folder is already logged: a failure here is a warning, not a failed run."""
        try:
            log_pyfunc_model(folder, name="model")
        except (MlflowException, OSError) as e:
            if unreachable(e):
                raise
            log.warning("the model folder is logged, but not as an MLflow Model: %s", e)

    def close_stale(self, run_id: str, status: str = "KILLED") -> None:
        """Mark KILLED (or `status`) a run still RUNNING whose process died without ending it
        (kill -9, a lost machine) and whose folder a new run now takes over, or whose store
        stopped answering (FAILED: `log_model_folder` logs its folder again)."""
        client = mlflow.MlflowClient(self.uri)
        try:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, status)
                log.info("closed MLflow run %s, left RUNNING (now %s)", run_id, status)
        except MlflowException as e:
            if unreachable(e):
                raise
            # another store, or deleted: nothing to close here

    def log_params(self, params: dict[str, Any]) -> None:
        # MLflow refuses to change a logged param, which a resumed run would try.
        logged = mlflow.get_run(self.run_id).data.params
        fresh = {k: _param(v) for k, v in params.items() if k not in logged}
        if fresh:
            mlflow.log_params(fresh)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        # Each call is stamped after the last, so a value logged again at a step becomes the
        # one MLflow shows (its latest value is the one of highest (step, timestamp)).
        self._stamp = max(int(time.time() * 1000), self._stamp + 1)
        mlflow.log_metrics(
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
            mlflow.log_input(
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
                    mlflow.log_image(
                        image.convert("RGB"), key=path.stem, step=step, synchronous=True
                    )

    def _flush_lr(self) -> None:
        if not self._lr_points or self.run_id is None:
            return
        stamp = int(time.time() * 1000)
        metric = mlflow.entities.Metric
        metrics = [metric("batch_lr", lr, stamp, batch) for batch, lr in self._lr_points]
        client = mlflow.MlflowClient()
        for start in range(0, len(metrics), 1000):  # MLflow takes 1,000 metrics per batch
            client.log_batch(self.run_id, metrics=metrics[start : start + 1000])
        self._lr_points = []

    def set_tags(self, tags: dict[str, Any]) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})


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


def experiment_id(client, name: str) -> str:
    """The id of experiment `name`, created if new. Workers that start together on one
    store (a sweep's, on a tracking server) race to create it: the loser finds it made."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


def set_client_defaults() -> None:
    """MLflow's client settings prodcat wants (`CLIENT_DEFAULTS`), where the user set none."""
    for name, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)


def check_reachable(uri: str, advice: str) -> None:
    """Raise `TrackingError` (with `advice`) at once when `uri` is a tracking server that does
    not answer (any answer will do: a login page, a 404) or a database that refuses to
    connect. Local stores are left for MLflow to open, as it says in its own words."""
    scheme = urlparse(uri).scheme.split("+")[0]
    try:
        if scheme in ("http", "https"):
            requests.get(uri, timeout=REACH_SECONDS, allow_redirects=False, stream=True).close()
        elif scheme in DATABASES:
            # One try: MLflow's own first connection retries for 100 s.
            engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
            try:
                engine.connect().close()
            finally:
                engine.dispose()
    except requests.exceptions.SSLError:
        return  # it answers; whether MLflow trusts its certificate is MLflow's to say
    except STORE_ERRORS as e:
        if not unreachable(e):
            raise
        what = "tracking server" if scheme.startswith("http") else "database"
        raise TrackingError(
            f"cannot reach the MLflow {what} at {redacted(uri)} ({reason(e)}): {advice}"
        ) from None


def unreachable(error: BaseException) -> bool:
    """Whether `error` says the store cannot record anything now (no connection, no answer,
    a server error), rather than that a request was wrong (a bug: raised as it is)."""
    if isinstance(error, (requests.RequestException, sqlalchemy.exc.OperationalError)):
        return True
    return isinstance(error, MlflowException) and error.get_http_status_code() >= 500


def reason(error: BaseException) -> str:
    """The gist of a failed request, in a few words: "connection refused", "timed out"."""
    if isinstance(error, sqlalchemy.exc.OperationalError):
        # The driver's last words: "connection failed: ... port 1 failed: Connection refused"
        first = str(error.orig or error).strip().splitlines()[0]
        return first.rsplit(":", 1)[-1].strip().lower() or first
    text = str(error)
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found.group(1).strip().lower()
    if isinstance(error, requests.Timeout) or "timed out" in text.lower():
        return "timed out"
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return first if len(first) <= 160 else first[:157] + "..."


@contextmanager
def one_quick_try() -> Iterator[None]:
    """MLflow's requests inside try once and wait 5 s at most (for a server already lost)."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    saved = {name: os.environ.get(name) for name in quick}
    os.environ.update(quick)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _param(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 500 else text[:497] + "..."


def _learning_rate(run: RunInfo) -> float | None:
    optimizer = run.optimizer
    return float(optimizer.param_groups[0]["lr"]) if optimizer is not None else None


# -- a model folder as an MLflow Model --------------------------------------------------------

# What `Classifier.load` reads of a folder without a manifest; plots, predictions and reports
# stay in the run's artifacts.
FOLDER_FILES = (
    "config.yaml",
    "featurizer.json",
    "vocab.txt",
    "labels.txt",
    "model.safetensors",
    "calibration.json",
)
INPUT_EXAMPLE = ["Placa De Sonido - Behringer Umc22"]
# Installed beside the model by `mlflow models serve` (prodcat itself is not on PyPI: serve
# with `--env-manager local` from an environment that has it).
REQUIREMENTS = (
    "prodcat",
    "torch",
    "mlflow",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "pyyaml",
    "safetensors",
)


def model_signature():
    """Titles in; the best category and its probability out; `top_k` as a parameter.

    The input is typed Any, not string: MLflow's serving would turn `[1, null]` into the
    titles "1" and "None"; the model refuses what is not text itself (serving/pyfunc.py)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import AnyType

    return ModelSignature(
        inputs=Schema([ColSpec(AnyType())]),
        outputs=Schema(
            [ColSpec(DataType.string, "category"), ColSpec(DataType.double, "probability")]
        ),
        params=ParamSchema([ParamSpec("top_k", DataType.long, 1)]),
    )


def requirements() -> list[str]:
    """Pinned versions of what loading the model needs, from this environment."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def log_pyfunc_model(folder: str | Path, name: str = "model") -> str:
    """Log a model folder as an MLflow Model (the `python_function` flavor) under the active
    run; return its URI. The MLflow Model holds the files `Classifier.load` reads as its
    `model_folder` artifact and loads them with the code file `prodcat/serving/pyfunc.py`
    (logged as code, not pickled), so `mlflow.pyfunc.load_model("runs:/<id>/model")`,
    `mlflow models serve` and the registry work."""
    folder = Path(folder)
    # MLflow checks the logged model by downloading it again, with a progress bar per file
    # that would break into prodcat's own output (a user's setting wins).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A file MLflow runs to load the model, not a module imported here.
    code = resources.files("prodcat") / "serving" / "pyfunc.py"
    with tempfile.TemporaryDirectory() as staging, resources.as_file(code) as code_file:
        copy = Path(staging) / MODEL_FOLDER
        copy.mkdir()
        # The manifest lists every file that rebuilds the model (a transformer's tokenizer
        # folder, an ensemble's members), and the copy is checked against it when loaded.
        for file in listed_files(folder) or FOLDER_FILES:
            if (folder / file).is_file():
                (copy / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / file, copy / file)
        mlflow_3 = int(mlflow.__version__.split(".")[0]) >= 3
        where = {"name": name} if mlflow_3 else {"artifact_path": name}
        info = mlflow.pyfunc.log_model(
            python_model=str(code_file),
            artifacts={MODEL_FOLDER: str(copy)},
            signature=model_signature(),
            input_example=INPUT_EXAMPLE,
            pip_requirements=requirements(),
            metadata={"prodcat_version": __version__},
            **where,
        )
    return info.model_uri


def download_model_folder(uri: str, store: str | None = None) -> Path:
    """The prodcat model folder an MLflow URI (`runs:/<id>/model`, `models:/<name>/<version>`)
    holds, downloaded (from `store`, default: MLflow's tracking URI): a run's `model` artifact
    holds the folder's files beside the MLflow Model's; a registered model holds them under
    `artifacts/model_folder`."""
    set_client_defaults()
    check_reachable(store or mlflow.get_tracking_uri(), f"{uri} cannot be downloaded")
    try:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=store))
    except MlflowException as e:
        raise ProdcatError(f"{uri}: cannot download it from MLflow ({e.message})") from None
    for folder in (root, root / "artifacts" / MODEL_FOLDER):
        if (folder / "config.yaml").is_file():
            return folder
    raise ProdcatError(f"{uri}: holds no prodcat model folder (no config.yaml)")


# -- a finished model folder, logged afterwards ------------------------------------------------


def log_model_folder(
    folder: str | Path,
    uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
) -> str:
    """Log a finished model folder as a new MLflow run, as its training would have: the config
    as params, each epoch's metrics, the final ones, the folder's files and the MLflow Model.
    Where to: the folder's `tracking` settings unless given. The run its training left
    unfinished (the store stopped answering) is marked FAILED. Returns the new run's id."""
    folder = Path(folder)
    if not (folder / METRICS_FILE).is_file():
        raise ConfigError(f"{folder}: not a finished model folder (no {METRICS_FILE})")
    cfg = load_config(folder / "config.yaml", check_family=False)
    result = RunResult.load(folder)
    tracking = cfg.tracking
    set_client_defaults()
    uri = tracking_uri(uri or tracking.uri)
    check_reachable(uri, "start it, or give another store with --store")
    name = run_name or tracking.run_name or default_run_name(cfg.model.family, folder)
    logger = MlflowRun(uri, experiment or tracking.experiment, name, tags=tracking.tags)
    sample = cfg.training.validation_rows_during
    logger._sampled = sample is not None and sample < result.validation.rows
    try:
        if result.run_id is not None:
            logger.close_stale(result.run_id, "FAILED")
        logger.start()
        try:
            logger.log_params(cfg.flat())
            # What the folder says of its training (its machine's commit and versions are
            # not recorded there, and this one's would mislead).
            logger.set_tags(
                {
                    "logged_from": str(folder.resolve()),
                    "device": result.device,
                    "device_type": result.device_type,
                }
            )
            for record in result.history:
                metrics = {k: v for k, v in record.items() if k != "epoch"}
                logger.log_metrics(metrics, step=int(record["epoch"]))
            logger.log_outputs(folder, result)
        except BaseException:
            with one_quick_try(), contextlib.suppress(*STORE_ERRORS):
                mlflow.end_run(status="FAILED")
            raise
        mlflow.end_run()
    except STORE_ERRORS as e:
        if not unreachable(e):
            raise
        raise TrackingError(
            f"{redacted(uri)} stopped answering ({reason(e)}): {folder} is not logged; "
            "run the same command again once the server is back"
        ) from None
    return logger.run_id


def run_finished(uri: str, run_id: str | None) -> bool:
    """Whether `run_id` is a FINISHED run of the store at `uri` (False for None)."""
    if run_id is None:
        return False
    try:
        return mlflow.MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
    except MlflowException as e:
        if unreachable(e):
            raise TrackingError(f"{redacted(uri)} stopped answering ({reason(e)})") from None
        return False  # another store, or deleted


# -- reading runs back ----------------------------------------------------------------------


@dataclass
class FinishedRun:
    """A finished run of a store: its id, tags, and its files a report reads, downloaded."""

    store: str
    run_id: str
    tags: dict[str, str]
    metrics: Path  # metrics.json
    predictions: Path | None  # predictions.parquet, when the run kept it


def finished_runs(
    experiment: str, stores: list[str], files: tuple[str, str], download_to: Path
) -> list[FinishedRun]:
    """Every finished run of `experiment` with a `variant` tag in the given stores (URIs:
    sqlite:///..., a folder, http://...), merged, the same run found twice counted once;
    `files`: the names of its metrics and predictions files, downloaded into `download_to`."""
    metrics_name, predictions_name = files
    runs, seen, found_experiment = [], set(), False
    set_client_defaults()
    for uri in stores:
        check_reachable(uri, "start it, or leave this --store out")
        client = mlflow.MlflowClient(uri)
        try:
            exp = client.get_experiment_by_name(experiment)
        except MlflowException as e:
            raise ConfigError(f"{uri}: cannot read this MLflow store: {e}") from None
        if exp is None:
            log.warning("%s: no experiment named '%s'", uri, experiment)
            continue
        found_experiment = True
        for run in client.search_runs(
            [exp.experiment_id], filter_string="attributes.status = 'FINISHED'"
        ):
            run_id, tags = run.info.run_id, run.data.tags
            if "variant" not in tags or run_id in seen:
                continue
            seen.add(run_id)
            folder = download_to / run_id
            folder.mkdir(parents=True, exist_ok=True)
            metrics = _download(client, run_id, metrics_name, folder)
            if metrics is None:
                log.warning("run %s (%s) has no %s: skipped", run_id, uri, metrics_name)
                continue
            predictions = _download(client, run_id, predictions_name, folder)
            runs.append(FinishedRun(uri, run_id, dict(tags), metrics, predictions))
    if not found_experiment:
        raise ConfigError(f"no experiment named '{experiment}' in {', '.join(stores)}")
    return runs


def _download(client, run_id: str, name: str, folder: Path) -> Path | None:
    """The run's artifact `name` (logged under model/), or None when it has none."""
    for artifact_path in (f"model/{name}", name):
        try:
            local = client.download_artifacts(run_id, artifact_path, str(folder))
        except Exception:  # MLflow raises several types for a missing artifact
            continue
        return Path(local)
    return None

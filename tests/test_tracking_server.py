"""prodcat against a real MLflow tracking server (`mlflow server` on PostgreSQL, artifacts
proxied by the server), as a team runs it: a run trained through the server predicts from the
server alone; a server that is down fails training at once, in one line; a server that goes
away during a run costs the run its record, not its model, and `prodcat log` records it once
the server is back. Skipped where PostgreSQL is not installed (tests/servers.py)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

import prodcat.workflow
from prodcat.training.callbacks import Callback
from tests.servers import free_port

pytest.importorskip("mlflow")

# A few seconds of training on the bundled sample (the default MLP, narrowed).
SETTINGS = [
    "training.epochs=2",
    "training.lr=0.05",
    "model.embedding_dim=16",
    "model.hidden_layers=[16]",
]
TITLES = ["Freezer Electrolux 400l Como Nuevo", "Calculadora De Escritorio", "Disco De Freno"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One data cache for the module: the sample is encoded once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def no_leftover_tracking_uri(monkeypatch, cache):
    """Each test's tracking URI dies with it: MLflow keeps the last one it was given (in
    $MLFLOW_TRACKING_URI too), which would point later tests at a stopped server."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PRODCAT_CACHE", str(cache))
    yield
    mlflow.set_tracking_uri(None)


def train_args(output: Path, *extra: str) -> list[str]:
    return ["train", "-o", str(output), "-q", *(x for s in SETTINGS for x in ("--set", s)), *extra]


def sample_categories() -> set[str]:
    import gzip

    from prodcat.data.readers import bundled_sample

    with gzip.open(bundled_sample(), "rt", encoding="utf-8") as f:
        return {json.loads(line)["category"] for line in f}


def predictions(run_cli, model: str) -> list[dict]:
    """`prodcat predict MODEL TITLES --format jsonl`, parsed."""
    code, out, err = run_cli(["predict", model, *TITLES, "--format", "jsonl"])
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_a_run_trained_through_the_server_predicts_from_the_server_alone(
    tracking_server, tmp_path, run_cli, monkeypatch
):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.uri)
    model = tmp_path / "run"
    tags = ["--set", "tracking.tags.variant=mlp"]  # what `prodcat report` reads
    code, out, err = run_cli(train_args(model, "--json", *tags))
    assert code == 0, err
    result = json.loads(out)  # stdout is the JSON alone: MLflow prints no run URL there
    run_id = result["run_id"]
    expected = predictions(run_cli, str(model))
    assert {row["categories"][0]["category"] for row in expected} <= sample_categories()

    client = MlflowClient(tracking_server.uri)
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params["training.epochs"] == "2"
    test_bac = logged.data.metrics["test_balanced_accuracy"]
    assert test_bac == pytest.approx(result["test"]["balanced_accuracy"])
    assert test_bac > 0.5  # a model that learned something from the sample's 7,663 titles
    # The server stored the artifacts (proxied), in its own folder, not the client's.
    assert list((tracking_server.root / "artifacts").rglob("model.safetensors"))

    # No file of the run is left here: the server alone holds it.
    shutil.rmtree(model)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert predictions(run_cli, f"runs:/{run_id}/model") == expected
    version = mlflow.register_model(f"runs:/{run_id}/model", "prodcat-mlp").version
    assert predictions(run_cli, f"models:/prodcat-mlp/{version}") == expected

    code, out, err = run_cli(
        ["report", "--experiment", "prodcat", "--store", tracking_server.uri, "-o", "report"]
    )
    assert code == 0, err
    assert "mlp" in out and (elsewhere / "report" / "report.html").is_file()


@pytest.mark.parametrize("scheme", ["http", "postgresql"])
def test_a_store_that_is_down_fails_training_at_once_in_one_line(
    scheme, tmp_path, run_cli, monkeypatch
):
    port = free_port()
    if scheme == "http":
        uri = shown = f"http://127.0.0.1:{port}"
        store = "tracking server"
    else:  # MLflow would retry its first connection for 100 s
        pytest.importorskip("psycopg")
        uri = f"postgresql://postgres:secret@127.0.0.1:{port}/mlflow"
        shown = f"postgresql://postgres:***@127.0.0.1:{port}/mlflow"  # no password shown
        store = "database"
    model = tmp_path / "run"
    started = time.monotonic()
    code, out, err = run_cli(train_args(model, "--set", f"tracking.uri={uri}"))
    assert (code, out) == (2, "")
    assert err == (
        f"error: cannot reach the MLflow {store} at {shown} (connection refused): start it, "
        "point tracking.uri or $MLFLOW_TRACKING_URI at one that runs, or train without "
        "tracking (--no-track)\n"
    )
    assert not model.exists()  # refused before any work
    if scheme == "http":  # nor is a model of that server waited for
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        code, out, err = run_cli(["predict", "runs:/0123456789abcdef/model", "Disco De Freno"])
        assert (code, out) == (2, "")
        assert err == (
            f"error: cannot reach the MLflow tracking server at {uri} (connection refused): "
            "runs:/0123456789abcdef/model cannot be downloaded\n"
        )
    assert time.monotonic() - started < 15  # MLflow's retries would take minutes


class StopServer(Callback):
    """Stops the tracking server at the end of an epoch, before the tracker logs it."""

    def __init__(self, server, epoch: int = 1):
        self.server, self.epoch = server, epoch

    def on_epoch_end(self, run, record):
        if record["epoch"] == self.epoch:
            self.server.stop()


def test_a_server_gone_during_a_run_costs_its_record_not_its_model(
    mlflow_server, tmp_path, run_cli, monkeypatch
):
    from mlflow import MlflowClient

    from prodcat.serving.predictor import Classifier

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the user's setting wins
    # `prodcat train`, with a callback that stops the server after the first epoch.
    real_run = prodcat.workflow.run

    def run_stopping_the_server(cfg, output=None, **options):
        return real_run(cfg, output, callbacks=[StopServer(mlflow_server)], **options)

    monkeypatch.setattr(prodcat.workflow, "run", run_stopping_the_server)
    model = tmp_path / "run"
    code, out, err = run_cli(train_args(model, "--set", f"tracking.uri={mlflow_server.uri}"))
    uri = mlflow_server.uri
    assert code == 2
    assert "Traceback" not in err
    warning, error = err.splitlines()
    assert warning == (
        f"WARNING MLflow: {uri} stopped answering (connection refused); training goes on, "
        "this run is not logged"
    )
    assert error == (
        f"error: the run is not logged to MLflow: {uri} stopped answering (connection "
        f"refused); its model folder is whole: once the server is back, log it with "
        f"`prodcat log {model}`"
    )
    assert "best epoch 2 of 2" in out  # the result is printed all the same
    classifier = Classifier.load(model)
    [[(category, _)]] = classifier.predict_top_k(TITLES[:1], 1)
    assert category in sample_categories()
    expected = predictions(run_cli, str(model))

    # Logging it while the server is still down: one line.
    code, out, err = run_cli(["log", str(model)])
    assert code == 2 and err.startswith(f"error: cannot reach the MLflow tracking server at {uri}")
    assert err.count("\n") == 1

    mlflow_server.start()
    half_logged = json.loads((model / "metrics.json").read_text())["run_id"]
    code, out, err = run_cli(["log", str(model)])
    assert code == 0, err
    run_id = out.split()[2].rstrip(":")
    assert out == f"MLflow run {run_id}: prodcat predict runs:/{run_id}/model TITLE\n"
    client = MlflowClient(uri)
    assert client.get_run(half_logged).info.status == "FAILED"
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == "mlp-run"
    assert logged.data.params["model.embedding_dim"] == "16"
    metrics = json.loads((model / "metrics.json").read_text())
    history = client.get_metric_history(run_id, "validation_loss")
    assert [(m.step, m.value) for m in history] == [
        (h["epoch"], pytest.approx(h["validation_loss"])) for h in metrics["history"]
    ]
    assert logged.data.metrics["test_balanced_accuracy"] == pytest.approx(
        metrics["test"]["balanced_accuracy"]
    )

    shutil.rmtree(model)
    assert predictions(run_cli, f"runs:/{run_id}/model") == expected

"""A tracked run's model is an MLflow Model: `mlflow.pyfunc.load_model('runs:/<id>/model')`
and the registry's `models:/` URIs give `Classifier`'s predictions, and `Classifier.load`
and `prodcat predict` accept those URIs (MLflow on SQLite in a temporary folder)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from prodcat import Classifier
from prodcat.cli.main import main
from prodcat.errors import ProdcatError
from tests.test_training import write_titles

TITLES = [
    "Placa De Sonido Usb Behringer",
    "Lavarropas Drean 8 Kilos Carga Frontal",
    "Disco De Freno Fremax Ventilado Par",
    "Mochila Maternal Bolso Bebe Pañalero",
]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """(model folder, run id, tracking URI) of one tiny run logged to SQLite."""
    root = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    data = write_titles(root / "train.jsonl", rows_per_category=40)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("PRODCAT_CACHE", str(root / "cache"))
        mp.chdir(root)
        with pytest.raises(SystemExit) as done:
            main(
                ["train", "--train", str(data), "--output", str(root / "model"), "-q"]
                + ["--set", "training.epochs=3", "--set", "training.lr=0.05"]
                + ["--set", "model.embedding_dim=16"]
            )
    assert done.value.code == 0
    run_id = json.loads((root / "model" / "metrics.json").read_text())["run_id"]
    return root / "model", run_id, uri


@pytest.fixture
def tracking(tracked_run, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked_run[2])
    mlflow.set_tracking_uri(tracked_run[2])
    return tracked_run


def test_the_run_logs_a_pyfunc_model_that_predicts_as_classifier(tracking):
    import mlflow

    folder, run_id, _ = tracking
    clf = Classifier.load(folder)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert "python_function" in model.metadata.flavors  # logged as code, not as a pickle
    assert type(model.unwrap_python_model()).__name__ == "ClassifierModel"

    out = model.predict(pd.DataFrame({"title": TITLES}), params={"top_k": 2})
    assert list(out.columns) == ["category", "probability", "categories", "probabilities"]
    expected = clf.predict_top_k(TITLES, 2)
    assert out["category"].tolist() == clf.predict(TITLES)
    assert out["categories"].tolist() == [[c for c, _ in row] for row in expected]
    np.testing.assert_allclose(
        np.array(out["probabilities"].tolist()),
        [[p for _, p in row] for row in expected],
        rtol=0,
        atol=1e-6,
    )
    assert out["category"].tolist() == ["SOUND_CARDS", "WASHING_MACHINES", "BRAKE_DISCS"] + [
        "DIAPER_BAGS"
    ]
    # A list of titles; the default top_k is 1.
    listed = model.predict(TITLES)
    assert listed["category"].tolist() == clf.predict(TITLES)
    assert [len(c) for c in listed["categories"]] == [1] * len(TITLES)
    np.testing.assert_allclose(
        listed["probability"], clf.predict_proba(TITLES).max(1), rtol=0, atol=1e-6
    )


def test_classifier_and_predict_load_runs_and_registry_uris(tracking, run_cli):
    import mlflow

    folder, run_id, _ = tracking
    expected = Classifier.load(folder).predict_proba(TITLES)
    from_run = Classifier.load(f"runs:/{run_id}/model")
    np.testing.assert_allclose(from_run.predict_proba(TITLES), expected, rtol=0, atol=1e-7)

    version = mlflow.register_model(f"runs:/{run_id}/model", "tiny-titles").version
    uri = f"models:/tiny-titles/{version}"
    registered = Classifier.load(uri)
    np.testing.assert_allclose(registered.predict_proba(TITLES), expected, rtol=0, atol=1e-7)
    served = mlflow.pyfunc.load_model(uri).predict(TITLES)
    assert served["category"].tolist() == registered.predict(TITLES)

    code, out, err = run_cli(["predict", f"runs:/{run_id}/model", TITLES[1], "-f", "jsonl"])
    assert code == 0, err
    assert json.loads(out)["categories"][0]["category"] == "WASHING_MACHINES"

    with pytest.raises(ProdcatError, match="cannot download it from MLflow"):
        Classifier.load("runs:/0123456789abcdef/model")


def test_mlflow_serving_refuses_what_is_not_text(tracking):
    """`mlflow models serve` (its scoring app, in-process) answers non-text titles with a 400
    naming the row; MLflow would otherwise have made "1" and "None" of `[1, null]`."""
    import mlflow
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    _, run_id, _ = tracking
    app = scoring_server.init(mlflow.pyfunc.load_model(f"runs:/{run_id}/model"))
    with TestClient(app) as client:
        good = client.post("/invocations", json={"inputs": TITLES[:2]})
        assert good.status_code == 200, good.text
        assert [p["category"] for p in good.json()["predictions"]] == [
            "SOUND_CARDS",
            "WASHING_MACHINES",
        ]
        for body, where in (
            ({"inputs": [1, None]}, "inputs[0]: a title must be a string, got float 1.0"),
            ({"inputs": [TITLES[0], None]}, "inputs[1]: a title must be a string, got null"),
            ({"dataframe_records": [{"title": TITLES[0]}, {"title": 2.5}]}, "title[1]"),
        ):
            answer = client.post("/invocations", json=body)
            assert answer.status_code == 400, answer.text
            assert where in answer.json()["message"]

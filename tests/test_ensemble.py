"""Ensembles as models: `model.family: ensemble` trained by `prodcat train`, folders combined
by `prodcat ensemble`, both loaded by `Classifier.load` like any model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prodcat.config import build_config
from prodcat.errors import ConfigError
from prodcat.workflow import run
from tests.test_training import WORDS, small_overrides, write_titles

TITLES = ["Placa Sonido Usb Behringer", "Disco Freno Ventilado", "Mochila Bebe", "Usb Bebe Freno"]
MEMBERS = [
    {"family": "mlp", "embedding_dim": 16},
    {"model": {"family": "cnn", "embedding_dim": 16, "num_filters": 8}, "training": {"lr": 0.01}},
]


def ensemble_config(tmp_path, members=MEMBERS, **extra):
    settings = small_overrides(tmp_path, **extra)
    settings = {k: v for k, v in settings.items() if not k.startswith("model.")}
    settings.update({"model.family": "ensemble", "model.members": members})
    settings.setdefault("training.epochs", 3)
    return build_config(overrides=settings)


@pytest.fixture(scope="module")
def trained_ensemble(tmp_path_factory):
    """An ensemble of an MLP and a CNN trained by `run` on the tiny titles."""
    root = tmp_path_factory.mktemp("ensemble")
    data = write_titles(root / "train.jsonl", rows_per_category=30)
    cfg = ensemble_config(root)
    cfg.data.train = data
    result = run(cfg, root / "model")
    return root, result


def test_trained_ensemble_folder_round_trip(trained_ensemble):
    from prodcat.models.ensemble import EnsembleModel, MemberReader
    from prodcat.serving.predictor import Classifier

    root, result = trained_ensemble
    folder = root / "model"
    assert result.family == "ensemble" and result.test is not None
    assert 0 <= result.test.ece <= 1 and result.temperature > 0
    spec = json.loads((folder / "ensemble.json").read_text())
    assert spec["members"] == ["members/0", "members/1"]
    assert sum(spec["weights"]) == pytest.approx(1) and min(spec["weights"]) >= 0
    listed = json.loads((folder / "manifest.json").read_text())["files"]
    for name in ("config.yaml", "labels.txt", "ensemble.json", "calibration.json"):
        assert name in listed
    for member in ("members/0", "members/1"):
        assert not (folder / member / "checkpoint.safetensors").exists()  # members keep none
        assert f"{member}/model.safetensors" in listed
        assert f"{member}/calibration.json" in listed
        assert json.loads((folder / member / "metrics.json").read_text())["family"] in (
            "mlp",
            "cnn",
        )
    assert json.loads((folder / "metrics.json").read_text())["family"] == "ensemble"

    clf = Classifier.load(folder)  # the one Classifier, whatever the folder holds
    assert type(clf) is Classifier and isinstance(clf.model, EnsembleModel)
    assert isinstance(clf.reader, MemberReader) and len(clf.reader.members) == 2
    assert set(clf.categories) == set(WORDS)
    probs = clf.predict_proba(TITLES)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    # The model in memory after training gives the reloaded folder's probabilities.
    with torch.no_grad():
        logits = result.model(clf.batch(TITLES)) / result.temperature
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), probs, rtol=1e-4, atol=1e-6)
    again = Classifier.load(folder)
    np.testing.assert_array_equal(again.predict_proba(TITLES), probs)
    assert again.predict(TITLES) == [clf.categories[i] for i in probs.argmax(1)]


def test_predict_and_evaluate_take_an_ensemble_folder(trained_ensemble, run_cli):
    root, _ = trained_ensemble
    folder = root / "model"
    code, out, err = run_cli(["predict", str(folder), *TITLES, "--json", "--top-k", "2"])
    assert code == 0, err
    assert len(out.splitlines()) == len(TITLES)
    data = write_titles(root / "eval.jsonl", rows_per_category=5, seed=4)
    code, out, err = run_cli(["evaluate", str(folder), "--data", str(data), "--json"])
    assert code == 0, err
    assert json.loads(out)["rows"] == 20
    code, out, err = run_cli(["export", str(folder)])  # one graph (tests/test_export.py)
    assert code == 0 and (folder / "model.onnx").is_file(), err
    # Served like any model folder.
    from fastapi.testclient import TestClient

    from prodcat.serving.app import create_app
    from prodcat.serving.predictor import Classifier

    with TestClient(create_app(Classifier.load(folder))) as client:
        answer = client.post("/predict", json={"titles": TITLES, "top_k": 2})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == len(TITLES)
        assert client.get("/model").json()["family"] == "ensemble"


def test_prodcat_ensemble_combines_trained_folders(trained_ensemble, run_cli, tmp_path):
    from prodcat.serving.predictor import Classifier

    root, _ = trained_ensemble
    members = [str(root / "model" / "members" / i) for i in ("0", "1")]
    validation = write_titles(tmp_path / "validation.jsonl", rows_per_category=8, seed=5)
    out_dir = tmp_path / "combined"
    code, out, err = run_cli(
        ["ensemble", *members, "--output", str(out_dir), "--validation", str(validation), "--json"]
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["validation"]["rows"] == 32
    assert sum(summary["weights"]) == pytest.approx(1)
    combined = Classifier.load(out_dir)
    assert combined.model.fitted_on == "validation.jsonl"
    assert len(combined.predict(TITLES)) == len(TITLES)
    # Without a validation file: equal weights, no temperature beyond the members'.
    code, out, err = run_cli(["ensemble", *members, "--output", str(tmp_path / "eq"), "--json"])
    assert code == 0, err
    assert json.loads(out)["weights"] == pytest.approx([0.5, 0.5])
    assert Classifier.load(tmp_path / "eq").temperature == 1.0
    # An output folder that holds something is left alone.
    code, _, err = run_cli(["ensemble", *members, "--output", str(out_dir)])
    assert code == 2 and "not empty" in err


def test_prodcat_ensemble_refuses_other_label_sets(trained_ensemble, run_cli, tmp_path):
    root, _ = trained_ensemble
    three = tmp_path / "three.jsonl"
    lines = write_titles(tmp_path / "all.jsonl", rows_per_category=20).read_text().splitlines()
    three.write_text("\n".join(x for x in lines if "DIAPER_BAGS" not in x) + "\n")
    cfg = build_config(overrides={**small_overrides(tmp_path), "training.epochs": 1})
    cfg.data.train = three
    run(cfg, tmp_path / "three")
    code, _, err = run_cli(
        [
            "ensemble",
            str(root / "model" / "members" / "0"),
            str(tmp_path / "three"),
            "--output",
            str(tmp_path / "bad"),
        ]
    )
    assert code == 2
    assert "share one label set" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_ensemble_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot be an ensemble"):
        ensemble_config(tmp_path, members=[{"family": "ensemble", "members": MEMBERS}, MEMBERS[0]])
    with pytest.raises(ConfigError, match="members"):
        ensemble_config(tmp_path, members=[MEMBERS[0]])
    with pytest.raises(ConfigError, match="learning_rate"):
        ensemble_config(
            tmp_path, members=[MEMBERS[0], {"model": {}, "training": {"learning_rate": 1}}]
        )
    # A member from a config file: its model and training sections.
    member = tmp_path / "cnn.yaml"
    member.write_text("model: {family: cnn, num_filters: 4}\ntraining: {lr: 0.005}\n")
    cfg = ensemble_config(tmp_path, members=[MEMBERS[0], str(member)])
    second = cfg.model.member_config(cfg, 1)
    assert (second.model.family, second.model.num_filters, second.training.lr) == ("cnn", 4, 0.005)
    assert second.training.batch_size == cfg.training.batch_size


def test_prodcat_train_sums_up_an_ensemble_by_its_members(trained_ensemble, capsys):
    from prodcat.cli.main import _print_result

    root, result = trained_ensemble
    _print_result(result, build_config(root / "model" / "config.yaml"))
    out = capsys.readouterr().out
    assert f"ensemble — 2 members, {result.epochs_run} epochs in all" in out
    assert "best epoch" not in out


def test_members_trained_at_once_give_the_ensemble_trained_one_by_one(trained_ensemble, tmp_path):
    """`workers: 2` trains the members in two processes: the same weights, so the same
    ensemble as members trained one after another (one thread each: the same arithmetic)."""
    from prodcat.serving.predictor import Classifier

    root, _ = trained_ensemble
    results = {}
    for workers in (1, 2):
        cfg = ensemble_config(root, **{"training.threads": 1})
        cfg.data.train = root / "train.jsonl"
        cfg.model.workers = workers
        results[workers] = run(cfg, tmp_path / str(workers))
    for member in ("members/0", "members/1"):
        assert (tmp_path / "1" / member / "model.safetensors").read_bytes() == (
            tmp_path / "2" / member / "model.safetensors"
        ).read_bytes()
    assert results[1].validation.balanced_accuracy == results[2].validation.balanced_accuracy
    np.testing.assert_array_equal(
        Classifier.load(tmp_path / "1").predict_proba(TITLES),
        Classifier.load(tmp_path / "2").predict_proba(TITLES),
    )


def test_each_member_draws_its_own_seed_unless_it_sets_one(tmp_path):
    members = [MEMBERS[0], MEMBERS[0], {"model": MEMBERS[0], "training": {"seed": 7}}]
    cfg = ensemble_config(tmp_path, members=members, **{"training.seed": 10})
    seeds = [cfg.model.member_config(cfg, i).training.seed for i in range(3)]
    assert seeds == [10, 11, 7]
    assert cfg.model.member_config(cfg, 1).data.seed == cfg.data.seed  # the same rows

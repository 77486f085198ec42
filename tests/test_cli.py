"""The command line: evaluate, predict, help and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from prodcat import Classifier
from prodcat.cli.main import main
from tests.test_training import write_titles


def prodcat(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "prodcat.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(small_model):
    return small_model.parent


def test_evaluate_prints_metrics_as_json(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRODCAT_CACHE", str(tmp_path / "cache"))
    held_out = write_titles(tmp_path / "other.jsonl", rows_per_category=10, seed=7)
    with pytest.raises(SystemExit) as done:
        main(["evaluate", str(trained / "model"), "--data", str(held_out), "--json"])
    assert done.value.code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["rows"] == 40
    assert metrics["balanced_accuracy"] >= 0.9
    assert set(metrics) >= {"balanced_accuracy", "accuracy", "macro_f1", "loss"}
    assert metrics == pytest.approx(Classifier.load(trained / "model").evaluate(held_out))


def test_evaluate_names_an_unknown_category(trained, tmp_path, monkeypatch):
    env = {**__import__("os").environ, "PRODCAT_CACHE": str(tmp_path / "cache")}
    bad = tmp_path / "bad.csv"
    bad.write_text("title,category\nPlaca De Sonido Usb,SOUND_CARDS\nTaladro Percutor,DRILLS\n")
    result = prodcat("evaluate", trained / "model", "--data", bad, env=env)
    assert result.returncode == 2
    assert f"{bad}:3" in result.stderr and "DRILLS" in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_shows_top_categories(trained, capsys):
    with pytest.raises(SystemExit):
        main(["predict", str(trained / "model"), "Placa Sonido Usb Behringer", "--top-k", "2"])
    header, line = capsys.readouterr().out.strip().splitlines()
    assert header == "line,title,category_1,probability_1,category_2,probability_2"
    assert line.startswith("1,Placa Sonido Usb Behringer,SOUND_CARDS,")


def test_help_explains_every_command():
    result = prodcat("--help")
    assert result.returncode == 0
    for command in ("train", "evaluate", "predict", "data"):
        assert command in result.stdout
    train_help = prodcat("train", "--help").stdout
    assert "--set" in train_help and "--resume" in train_help and "course" in train_help


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--train", "missing.csv", "--no-track"], "missing.csv: no such file"),
        (["train", "--set", "model.hidden_sise=3", "--no-track"], "model.hidden_sise"),
        (["train", "--set", "model.family=bert", "--no-track"], "unknown model family"),
        (["train", "--config", "nope.yaml"], "nope.yaml: no such config file"),
        (["evaluate", "no-model", "--data", "x.csv"], "not a model folder"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_code_2(tmp_path, args, message):
    result = prodcat(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr

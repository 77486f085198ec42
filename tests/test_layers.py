"""The house's walls: the layers of src/prodcat hold (import-linter's contracts in
pyproject.toml), and a new model family is one file plus nothing else."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prodcat import Classifier, registry
from tests.test_training import write_titles

ROOT = Path(__file__).resolve().parents[1]


def test_the_layers_hold_and_no_package_has_an_import_cycle():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    done = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "layers KEPT" in done.stdout and "no import cycles KEPT" in done.stdout
    assert "Contracts: 2 kept, 0 broken." in done.stdout


@pytest.fixture
def sum_family(monkeypatch):
    """tests/throwaway_family.py imported, its registration undone after the test."""
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    module = importlib.import_module("tests.throwaway_family")
    importlib.reload(module)  # registers "sum" in this test's copy of the registry
    return module


def test_a_new_family_is_one_file(sum_family, run_cli, tmp_path, isolated_cache):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=30)
    folder = tmp_path / "sum"
    settings = {"model.family": "sum", "model.scale": 0.5, "model.embedding_dim": 16}
    settings |= {"training.epochs": 4, "training.lr": 0.05}
    args = ["train", "--train", str(data), "--output", str(folder), "--no-track", "-q"]
    code, _, err = run_cli(args + [x for k, v in settings.items() for x in ("--set", f"{k}={v}")])
    assert code == 0, err
    # Trained, saved, reloaded and served like any family, its own setting kept.
    clf = Classifier.load(folder)
    assert type(clf.model) is sum_family.SumClassifier and clf.model.cfg.scale == 0.5
    assert clf.predict(["Placa Sonido Usb Behringer"]) == ["SOUND_CARDS"]
    code, out, err = run_cli(["evaluate", str(folder), "--data", str(data), "--json"])
    assert code == 0 and '"balanced_accuracy"' in out, err
    # Its settings are its own: one of another family is an error naming this one.
    code, _, err = run_cli(args + ["--set", "model.family=sum", "--set", "model.hidden_size=8"])
    assert code == 2 and "model.hidden_size: not a setting of the sum family" in err

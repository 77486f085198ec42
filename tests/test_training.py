"""The training loop end to end: the CLI with MLflow on SQLite, resume, early stopping."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from prodcat.cli.main import main
from prodcat.config import build_config
from prodcat.data.dataset import load_splits
from prodcat.training.callbacks import Callback
from prodcat.training.checkpoint import CHECKPOINT, load_checkpoint
from prodcat.training.loop import train
from prodcat.workflow.train import make_featurizer

WORDS = {
    "SOUND_CARDS": "placa sonido audio interfaz usb behringer focusrite",
    "WASHING_MACHINES": "lavarropas lavar maquina electrolux drean kilos carga",
    "BRAKE_DISCS": "disco freno freio fremax ventilado gol par",
    "DIAPER_BAGS": "mochila maternal bolso bebe cuero pañalero",
}


def write_titles(path, rows_per_category=30, seed=0, language="spanish"):
    rng = random.Random(seed)
    lines = []
    for category, words in WORDS.items():
        words = words.split()
        for _ in range(rows_per_category):
            title = " ".join(rng.choice(words) for _ in range(rng.randint(3, 7))).title()
            lines.append(
                json.dumps(
                    {
                        "title": title,
                        "category": category,
                        "language": language,
                        "label_quality": rng.choice(["reliable", "unreliable"]),
                    },
                    ensure_ascii=False,
                )
            )
    rng.shuffle(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def small_overrides(tmp_path, **extra):
    return {
        "model.embedding_dim": 16,
        "model.hidden_layers": [16],
        "data.cache_dir": str(tmp_path / "c"),
        "tracking.enabled": False,
        "training.progress": False,
        "training.batch_size": 16,
        **extra,
    }


def small_config(tmp_path, **extra):
    return build_config(overrides=small_overrides(tmp_path, **extra))


def test_cli_train_logs_the_run_to_mlflow_on_sqlite(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    data = write_titles(tmp_path / "train.jsonl")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PRODCAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(
            [
                "train",
                "--train",
                str(data),
                "--output",
                str(tmp_path / "run"),
                "-q",
                "--set",
                "training.epochs=2",
                "--set",
                "model.embedding_dim=16",
                "--run-name",
                "tiny",
            ]
        )
    assert done.value.code == 0

    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("prodcat").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny"
    params = run.data.params
    assert params["model.family"] == "mlp"
    assert params["training.epochs"] == "2"
    assert params["model.embedding_dim"] == "16"
    history = client.get_metric_history(run.info.run_id, "validation_balanced_accuracy")
    assert [m.step for m in history] == [1, 2]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    assert len(client.get_metric_history(run.info.run_id, "epoch_seconds")) == 2
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run.data.metrics["test_balanced_accuracy"] == pytest.approx(
        metrics["test"]["balanced_accuracy"]
    )
    assert metrics["run_id"] == run.info.run_id
    tags = run.data.tags
    assert tags["data.train_file"] == str(data)
    assert tags["data.train_rows"] == str(metrics["train_rows"])
    assert tags["device_type"] == "cpu" and tags["device"]
    assert tags["version.torch"] == torch.__version__
    assert "git_commit" in tags
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    for name in (
        "config.yaml",
        "vocab.txt",
        "labels.txt",
        "model.safetensors",
        "metrics.json",
        "category_report.csv",
        "validation_bac.png",
        "loss.png",
        "featurizer.json",
        "predictions.parquet",
    ):
        assert f"model/{name}" in artifacts
    assert f"model/{CHECKPOINT}" not in artifacts


def assert_same_weights(folder, other):
    """The two model folders hold bit-identical weights."""
    a = load_file(folder / "model.safetensors")
    b = load_file(other / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)


class InterruptAtEpoch(Callback):
    """Stops the run as a Ctrl-C would, after `epoch` - 1 complete epochs."""

    def __init__(self, epoch):
        self.epoch = epoch
        self.ended = None

    def on_epoch_end(self, run, record):
        if record["epoch"] == self.epoch:
            raise KeyboardInterrupt

    def on_run_end(self, run, result, status):
        self.ended = status


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    data = write_titles(tmp_path / "train.jsonl")
    cfg = small_config(
        tmp_path, **{"training.epochs": 3, "model.dropout": 0.3, "training.patience": None}
    )
    splits = load_splits(cfg.data, data)
    train(cfg, splits, tmp_path / "straight")

    interrupt = InterruptAtEpoch(2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, splits, tmp_path / "killed", callbacks=[interrupt])
    assert interrupt.ended == "KILLED"
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    # Epoch 1, the checkpoint's, is the best so far: its weights are stored once.
    assert load_checkpoint(tmp_path / "killed")["best_weights"] == "model"
    resumed = train(cfg, splits, tmp_path / "killed", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]

    assert_same_weights(tmp_path / "straight", tmp_path / "killed")


class CountCheckpoints(Callback):
    def __init__(self):
        self.epochs = []

    def on_checkpoint(self, run, path):
        self.epochs.append(run.state.epoch)


def test_without_a_checkpoint_every_epoch_a_killed_run_redoes_the_epochs_since_the_last(tmp_path):
    data = write_titles(tmp_path / "train.jsonl")
    settings = {"training.epochs": 4, "model.dropout": 0.3, "training.patience": None}
    straight = small_config(tmp_path, **settings)
    splits = load_splits(straight.data, data)
    every = CountCheckpoints()
    train(straight, splits, tmp_path / "straight", callbacks=[every])
    assert every.epochs == [1, 2, 3, 4]

    # Only the run's last epoch, as no checkpoint_minutes pass in it.
    sparse = small_config(tmp_path, **settings, **{"training.checkpoint_every_epoch": False})
    last = CountCheckpoints()
    train(sparse, splits, tmp_path / "sparse", callbacks=[last])
    assert last.epochs == [4]
    assert_same_weights(tmp_path / "straight", tmp_path / "sparse")

    # Killed in epoch 3 with no checkpoint yet: the resumed run starts over, same weights.
    with pytest.raises(KeyboardInterrupt):
        train(sparse, splits, tmp_path / "killed", callbacks=[InterruptAtEpoch(3)])
    assert load_checkpoint(tmp_path / "killed") is None
    train(sparse, splits, tmp_path / "killed", resume=True)
    assert_same_weights(tmp_path / "straight", tmp_path / "killed")


def test_resume_extends_a_finished_run_with_more_epochs(tmp_path):
    data = write_titles(tmp_path / "train.jsonl")
    splits = load_splits(small_config(tmp_path).data, data)
    # A constant rate: a schedule's shape depends on the total number of epochs.
    constant = {"training.schedule": "constant", "training.patience": None}
    three = small_config(tmp_path, **{"training.epochs": 3, **constant})
    train(three, splits, tmp_path / "straight")
    # A finished run keeps its training state only when asked, to be extended.
    two = small_config(tmp_path, **{"training.epochs": 2, "training.keep_checkpoint": True})
    two.training.schedule, two.training.patience = "constant", None
    train(two, splits, tmp_path / "extended")
    assert (tmp_path / "extended" / CHECKPOINT).is_file()
    assert not (tmp_path / "straight" / CHECKPOINT).exists()
    extended = train(three, splits, tmp_path / "extended", resume=True)
    assert len(extended.history) == 3
    assert_same_weights(tmp_path / "straight", tmp_path / "extended")


def test_early_stopping_restores_the_best_epoch(tmp_path):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=40)
    # A learning rate this high makes validation BAC wander, so patience ends the run.
    settings = {"training.epochs": 30, "training.patience": 2, "training.lr": 0.05}
    cfg = small_config(tmp_path, **settings, **{"training.keep_checkpoint": True})
    result = train(cfg, load_splits(cfg.data, data), tmp_path / "run")
    history = result.history
    bacs = [h["validation_balanced_accuracy"] for h in history]
    best = max(range(len(bacs)), key=lambda i: (bacs[i], -i))
    assert result.best_epoch == history[best]["epoch"]
    assert len(history) == min(30, result.best_epoch + 2)
    assert result.validation.balanced_accuracy == bacs[best]
    # The last epoch's checkpoint keeps the best epoch's weights beside its own.
    checkpoint = load_checkpoint(tmp_path / "run")
    best_weights, last = checkpoint["best_weights"], checkpoint["model"]
    assert not all(torch.equal(best_weights[k], last[k]) for k in last)


def test_training_learns_the_tiny_task(tmp_path):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=40)
    cfg = small_config(tmp_path, **{"training.epochs": 8, "training.lr": 0.01})
    result = train(cfg, load_splits(cfg.data, data), tmp_path / "run")
    assert result.test.balanced_accuracy >= 0.9
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] / 2


KILLABLE_RUN = """
import sys
from prodcat.config import build_config
from prodcat.data.dataset import load_splits
from prodcat.training.loop import train
cfg = build_config(overrides={overrides!r})
train(cfg, load_splits(cfg.data, {data!r}), {output!r}, resume=len(sys.argv) > 1)
"""


def test_a_run_killed_inside_an_epoch_resumes_from_its_last_batch(tmp_path):
    import subprocess
    import sys
    import time

    from prodcat.training.checkpoint import load_checkpoint

    data = write_titles(tmp_path / "train.jsonl", rows_per_category=100)
    overrides = small_overrides(
        tmp_path,
        **{
            "training.batch_size": 4,
            "training.epochs": 2,
            "training.patience": None,
            "training.checkpoint_minutes": 1e-9,
        },
    )
    cfg = build_config(overrides=overrides)
    train(cfg, load_splits(cfg.data, data), tmp_path / "straight")

    script = KILLABLE_RUN.format(overrides=overrides, data=str(data), output=str(tmp_path / "k"))
    process = subprocess.Popen([sys.executable, "-c", script])
    killed_at = None
    deadline = time.time() + 120
    while process.poll() is None and time.time() < deadline:
        try:
            checkpoint = load_checkpoint(tmp_path / "k")
        except Exception:  # the checkpoint is replaced while we read it
            checkpoint = None
        state = checkpoint["state"] if checkpoint else None
        if state and state["partial"] and state["partial"]["step"] >= 5:
            process.kill()
            process.wait()
            killed_at = state["epoch"], state["partial"]["step"]
            break
        time.sleep(0.02)
    assert killed_at is not None, "the run ended before it could be killed mid-epoch"

    resumed = train(cfg, load_splits(cfg.data, data), tmp_path / "k", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert_same_weights(tmp_path / "straight", tmp_path / "k")


def test_resume_trains_on_after_an_early_stop(tmp_path):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=40)
    overrides = {"training.epochs": 30, "training.patience": 1, "training.lr": 0.05}
    overrides["training.keep_checkpoint"] = True  # to be trained on
    cfg = small_config(tmp_path, **overrides)
    splits = load_splits(cfg.data, data)
    stopped = train(cfg, splits, tmp_path / "run")
    ran = len(stopped.history)
    assert ran < 30  # patience 1 ended it
    more = small_config(tmp_path, **{**overrides, "training.epochs": ran + 2})
    resumed = train(more, splits, tmp_path / "run", resume=True)
    assert len(resumed.history) > ran


def test_sigterm_stops_a_run_marks_it_killed_and_it_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    data = write_titles(tmp_path / "train.jsonl", rows_per_category=100)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["train", "--train", str(data), "--output", str(tmp_path / "run"), "-q"]
    settings = {
        "training.epochs": 200,
        "training.batch_size": 4,
        "model.embedding_dim": 16,
        "tracking.uri": uri,
        "data.cache_dir": str(tmp_path / "c"),
    }
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    command = [sys.executable, "-m", "prodcat", *args]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "run" / CHECKPOINT).exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "terminated" in err and "--resume" in err and "Traceback" not in err

    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("prodcat").experiment_id])
    assert run.info.status == "KILLED"
    from prodcat.training.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "run")["state"]["run_id"] == run.info.run_id

    resumed = [c.replace("training.epochs=200", "training.epochs=2") for c in command]
    done = subprocess.run([*resumed, "--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run = client.get_run(run.info.run_id)  # the same MLflow run, continued and closed
    assert run.info.status == "FINISHED"


def test_a_run_left_running_by_kill_9_is_closed_by_the_run_that_takes_its_folder(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    data = write_titles(tmp_path / "train.jsonl", rows_per_category=100)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["train", "--train", str(data), "--output", str(tmp_path / "run"), "-q"]
    for key, value in {
        "training.epochs": 200,
        "training.batch_size": 4,
        "model.embedding_dim": 16,
        "tracking.uri": uri,
        "data.cache_dir": str(tmp_path / "c"),
    }.items():
        args += ["--set", f"{key}={value}"]
    command = [sys.executable, "-m", "prodcat", *args]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "run" / CHECKPOINT).exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no chance to end its MLflow run
    process.wait(timeout=60)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("prodcat").experiment_id
    [killed] = client.search_runs([experiment])
    assert killed.info.status == "RUNNING"

    # A new run (not --resume) in the same folder, with the same config, starts it over and
    # closes the run it replaces; it is stopped in turn once it has begun.
    second = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    runs: dict[str, str] = {}
    while time.time() < deadline and len(runs) < 2:
        runs = {r.info.run_id: r.info.status for r in client.search_runs([experiment])}
        time.sleep(0.1)
    second.send_signal(signal.SIGTERM)
    second.wait(timeout=60)
    runs = {r.info.run_id: r.info.status for r in client.search_runs([experiment])}
    assert len(runs) == 2 and runs[killed.info.run_id] == "KILLED"


def test_mixup_mixes_title_vectors_and_resumes_to_the_same_weights(tmp_path):
    from prodcat.models.folder import build_model
    from prodcat.training.loop import mixup_pairs

    data = write_titles(tmp_path / "train.jsonl", rows_per_category=40)
    cfg = small_config(
        tmp_path, **{"training.epochs": 3, "training.mixup": 0.4, "training.patience": None}
    )
    splits = load_splits(cfg.data, data)
    # The mix: lam = 1 is the plain forward; lam = 0 gives each row its partner's logits.
    model = build_model(cfg, len(splits.labels), splits.featurizer).eval()
    batch = next(iter(splits.train.batches(8)))
    partner = torch.tensor([3, 2, 1, 0, 7, 6, 5, 4])
    with torch.no_grad():
        plain = model(batch)
        torch.testing.assert_close(model(batch, mix=(partner, 1.0)), plain)
        torch.testing.assert_close(model(batch, mix=(partner, 0.0)), plain[partner])
    # The pairing is drawn from seed, epoch and step alone.
    first, lam = mixup_pairs(cfg.training, 2, 5, 16, torch.device("cpu"))
    again, lam_again = mixup_pairs(cfg.training, 2, 5, 16, torch.device("cpu"))
    assert torch.equal(first, again) and lam == lam_again and 0 < lam < 1
    assert sorted(first.tolist()) == list(range(16))

    mixed = train(cfg, splits, tmp_path / "straight")
    assert mixed.test.balanced_accuracy >= 0.8
    plain_run = small_config(tmp_path, **{"training.epochs": 3, "training.patience": None})
    unmixed = train(plain_run, splits, tmp_path / "unmixed")
    assert mixed.history[0]["train_loss"] != unmixed.history[0]["train_loss"]
    interrupt = InterruptAtEpoch(2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, splits, tmp_path / "killed", callbacks=[interrupt])
    train(cfg, splits, tmp_path / "killed", resume=True)
    assert_same_weights(tmp_path / "straight", tmp_path / "killed")


def test_the_squared_hinge_is_linear_svcs_one_vs_rest_loss():
    from prodcat.data.batches import Batch
    from prodcat.evaluation.evaluate import weighted_loss

    logits = torch.tensor([[2.0, -0.5, 0.3], [0.0, 0.0, 0.0]])
    batch = Batch(torch.zeros(2, 1, dtype=torch.int64), torch.ones(2), torch.tensor([0, 2]))
    # Row 1: its category scores 2 (past the margin: 0); the others -0.5 and 0.3 give
    # (1 - 0.5)^2 + (1 + 0.3)^2 = 1.94. Row 2: all at 0, three terms of 1.
    loss, weight = weighted_loss(logits, batch, kind="squared_hinge")
    assert loss.item() == pytest.approx(1.94 + 3.0) and weight.item() == 2
    class_weights = torch.tensor([1.0, 1.0, 2.0])
    loss, _ = weighted_loss(logits, batch, class_weights, kind="squared_hinge")
    assert loss.item() == pytest.approx(1.94 + 2 * 3.0)


def test_the_full_rank_linear_model_learns_with_the_squared_hinge_and_resumes(tmp_path):
    """configs/fast.yaml's way of training: LinearSVC's loss by Adagrad, lazily over rows."""
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=40)
    settings = {
        "model.family": "linear",
        "model.full_rank": True,
        "model.separate_norms": True,
        "model.char_ngram_buckets": 512,
        "model.ngram_buckets": 512,
        "model.hidden_layers": [],
        "training.loss": "squared_hinge",
        "training.optimizer": "adagrad",
        "training.grad_clip": None,
        "training.lr": 0.2,
        "training.epochs": 3,
        "training.patience": None,
    }
    cfg = small_config(tmp_path, **settings)
    splits = load_splits(cfg.data, data, featurizer=make_featurizer(cfg))
    result = train(cfg, splits, tmp_path / "straight")
    assert result.test.balanced_accuracy >= 0.9
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] / 2

    with pytest.raises(KeyboardInterrupt):
        train(cfg, splits, tmp_path / "killed", callbacks=[InterruptAtEpoch(2)])
    train(cfg, splits, tmp_path / "killed", resume=True)
    assert_same_weights(tmp_path / "straight", tmp_path / "killed")

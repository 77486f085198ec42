"""`torchrun --nproc-per-node 2 -m prodcat train`: two real processes on CPU (gloo).

The two ranks together take the batches of one process (`training.batch_size` is the rows
per step of all of them), scale their losses by the weight of all ranks' rows, and average
the sparse embedding rows they touched: their steps are the one process's steps. They are
not bit for bit the same: sums over a batch are added in another order (each rank sums its
half, then the halves are added), which moves the last digits of a float32 gradient, and
over epochs the weights drift by about that much. Hence a tolerance, far below what a
different batch order or loss scaling would move.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from prodcat.config import build_config
from prodcat.workflow import run
from tests.test_training import write_titles

SETTINGS = {
    "model.embedding_dim": 16,
    "model.hidden_layers": [16],
    "model.ngram_buckets": 512,  # a second sparse table
    "data.unreliable_weight": 0.5,  # rows of unequal weight: the loss is scaled by all ranks'
    "training.batch_size": 16,
    "training.epochs": 3,
    "training.schedule": "constant",  # so that a run of 2 epochs resumed to 3 is a 3-epoch run
    "training.monitor": "loss",  # BAC ties at 1.0 on these titles; the loss picks an epoch
    "training.progress": False,
    # The options of long runs, which must shard and resume alike: epochs of 5 batches of
    # passes of 8 (epochs 2 and 3 straddle passes), 12 of the 16 validation rows scored per
    # epoch, and a moving average of the weights (of the sparse tables too).
    "training.epoch_rows": 80,
    "training.validation_rows_during": 12,
    "training.ema_decay": 0.5,
}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The run of one process, in this one."""
    folder = tmp_path_factory.mktemp("one")
    data = write_titles(folder / "train.jsonl", rows_per_category=40)
    overrides = {**SETTINGS, "data.cache_dir": str(folder / "cache"), "tracking.enabled": False}
    cfg = build_config(overrides=overrides)
    cfg.data.train = data
    result = run(cfg, folder / "model")
    return data, result.model_dump(mode="json")


def torchrun_command(*args: str) -> tuple[list[str], dict[str, str]]:
    """The command line that runs `args` in 2 local processes under torchrun, and an
    environment without the variables of a torchrun this test may itself run under."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*command, "--nproc-per-node", "2", *args], env


def torchrun(data, output, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    """`prodcat train` in 2 processes under torchrun; fails the test if it fails."""
    command, env = torchrun_command(
        "-m",
        "prodcat",
        "train",
        "--train",
        str(data),
        "--output",
        str(output),
        "--json",
        "--quiet",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
        *(f"--set={key}={json.dumps(value)}" for key, value in SETTINGS.items()),
        *extra,
    )
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def assert_same_run(two: dict, one: dict) -> None:
    assert two["train_rows"] == one["train_rows"]
    assert two["best_epoch"] == one["best_epoch"] and two["epochs_run"] == one["epochs_run"] == 3
    for split in ("validation", "test"):
        for key in ("balanced_accuracy", "accuracy", "macro_f1", "loss"):
            assert two[split][key] == pytest.approx(one[split][key], abs=1e-4), (split, key)
    for a, b in zip(two["history"], one["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
        assert a["validation_loss"] == pytest.approx(b["validation_loss"], abs=1e-4)


def test_two_processes_train_as_one_and_only_rank_0_tracks_saves_and_prints(one_process, tmp_path):
    from mlflow.tracking import MlflowClient

    data, one = one_process
    done = torchrun(data, tmp_path / "model", tmp_path)

    # One result on stdout (rank 0's), the metrics of one process.
    two = json.loads(done.stdout)
    assert_same_run(two, one)
    # It learned, so the comparison means something.
    assert one["history"][-1]["validation_loss"] < 0.5 * one["history"][0]["validation_loss"]
    assert (tmp_path / "model" / "metrics.json").is_file()
    # One tracked run, with every epoch once: rank 1 tracked nothing.
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("prodcat").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert len(client.get_metric_history(runs[0].info.run_id, "train_loss")) >= 3


def test_two_processes_resume_from_rank_0s_checkpoint(one_process, tmp_path):
    data, one = one_process
    torchrun(
        data,
        tmp_path / "model",
        tmp_path,
        "--no-track",
        "--set",
        "training.epochs=2",
        "--set",
        "training.keep_checkpoint=true",
    )
    assert (tmp_path / "model" / "checkpoint.safetensors").is_file()
    # Both ranks read the checkpoint rank 0 wrote and train the third epoch.
    done = torchrun(
        data, tmp_path / "model", tmp_path, "--no-track", "--resume", "--set", "training.epochs=3"
    )
    assert_same_run(json.loads(done.stdout), one)

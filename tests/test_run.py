"""`run(cfg)` as a library call: typed result, callbacks, nested MLflow runs, rank-aware
side effects and the test predictions saved with the model."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from prodcat import Classifier
from prodcat.data.dataset import load_splits
from prodcat.errors import ConfigError
from prodcat.training.callbacks import Callback, Callbacks
from prodcat.training.loop import train
from prodcat.training.ranks import Rank
from prodcat.training.result import RunResult
from prodcat.workflow import run
from tests.test_training import small_config, write_titles


class Recorder(Callback):
    """Notes every event it hears."""

    def __init__(self):
        self.events = []

    def on_run_start(self, run):
        self.events.append(("start", run.state.epoch))

    def on_batch_end(self, run, step, rows):
        self.events.append(("batch", step))

    def on_epoch_end(self, run, record):
        self.events.append(("epoch", record["epoch"]))

    def on_checkpoint(self, run, path):
        self.events.append(("checkpoint", path.name))

    def on_run_end(self, run, result, status):
        self.events.append(("end", status))


class MainOnlyRecorder(Recorder):
    main_only = True


@pytest.fixture
def data(tmp_path):
    return write_titles(tmp_path / "train.jsonl", rows_per_category=20)


def test_run_returns_a_typed_result_saved_as_metrics_json(tmp_path, data):
    cfg = small_config(tmp_path, **{"training.epochs": 3, "data.train": str(data)})
    recorder = Recorder()
    result = run(cfg, tmp_path / "model", callbacks=[recorder])

    assert isinstance(result, RunResult)
    assert result.family == "mlp" and result.epochs_run == 3 and len(result.history) == 3
    assert result.test.rows == 8 and result.validation.rows == 8 and result.train_rows == 64
    assert result.parameters == sum(p.numel() for p in result.model.parameters())
    assert 0 <= result.test.balanced_accuracy <= 1 and result.device_type == "cpu"
    # The saved file is the same object, field for field.
    again = RunResult.load(tmp_path / "model")
    assert again.model_dump() == result.model_dump() and again.model is None
    saved = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert saved["test"]["balanced_accuracy"] == result.test.balanced_accuracy
    assert saved["history"][-1]["epoch"] == 3

    kinds = [e[0] for e in recorder.events]
    assert kinds[0] == "start" and kinds[-1] == "end" and recorder.events[-1] == ("end", "FINISHED")
    assert [e[1] for e in recorder.events if e[0] == "epoch"] == [1, 2, 3]
    assert kinds.count("batch") == 3 * 4  # 64 rows in batches of 16
    assert kinds.count("checkpoint") == 3
    # Events come in order: an epoch's batches, its end, its checkpoint.
    assert kinds[1:7] == ["batch"] * 4 + ["epoch", "checkpoint"]


def test_test_predictions_are_saved_with_the_model(tmp_path, data):
    cfg = small_config(tmp_path, **{"training.epochs": 4, "data.train": str(data)})
    result = run(cfg, tmp_path / "model")
    table = pq.read_table(tmp_path / "model" / "predictions.parquet").to_pylist()
    assert len(table) == result.test.rows
    clf = Classifier.load(tmp_path / "model")
    lines = data.read_text(encoding="utf-8").splitlines()
    titles = [json.loads(lines[row["line"] - 1])["title"] for row in table]
    categories = [json.loads(lines[row["line"] - 1])["category"] for row in table]
    assert [row["category"] for row in table] == categories
    # Top-5, best first, and the same as the saved model predicts from the raw titles.
    for row, top in zip(table, clf.predict_top_k(titles, 5)):
        assert row["predicted"] == [c for c, _ in top]
        np.testing.assert_allclose(row["probability"], [p for _, p in top], rtol=1e-5)
    accuracy = np.mean([row["predicted"][0] == row["category"] for row in table])
    assert accuracy == pytest.approx(result.test.accuracy)


def test_ranks_take_disjoint_shards_that_make_the_batches_of_one_process(tmp_path, data):
    # Real ranks under torchrun are tested in test_distributed.py; here, what each one reads.
    cfg = small_config(tmp_path)
    splits = load_splits(cfg.data, data)

    # The two ranks' shards of an epoch are disjoint, equal in size and cover the rows.
    def rows_seen(rank, batch_size=16):
        batches = splits.train.batches(batch_size, shuffle=True, seed=0, epoch=1, shard=(rank, 2))
        return [r for b in batches for r in b.labels.tolist()], [len(b) for b in batches]

    order = np.random.default_rng([0, 1]).permutation(len(splits.train))
    rank0 = order[0::2]
    rank1 = order[1::2]
    assert not set(rank0) & set(rank1) and len(rank0) == len(rank1) == 32
    assert sorted(rows_seen(0)[0]) == sorted(splits.train.labels[rank0].tolist())
    assert sorted(rows_seen(1)[0]) == sorted(splits.train.labels[rank1].tolist())

    # training.batch_size is the rows per step of all ranks: batch k of two ranks of 8 rows
    # holds the rows of batch k of one process of 16, so both take the same steps.
    def titles(batches):
        return [
            sorted(tuple(r[:n]) for r, n in zip(b.input_ids.tolist(), b.lengths)) for b in batches
        ]

    one = titles(splits.train.batches(16, shuffle=True, seed=0, epoch=1))
    two = [
        titles(splits.train.batches(8, shuffle=True, seed=0, epoch=1, shard=(rank, 2)))
        for rank in (0, 1)
    ]
    assert len(one) == len(two[0]) == len(two[1]) == 4
    assert one == [sorted(a + b) for a, b in zip(*two)]

    # A batch that does not split across the processes is a one-line error, before any work.
    with pytest.raises(ConfigError, match="batch_size 16 does not split evenly across 3"):
        train(cfg, splits, tmp_path / "out", rank=Rank(0, 3))
    assert not (tmp_path / "out").exists()

    # Callbacks marked main_only (the tracker's kind) are left out on other ranks.
    plain, main_only = Recorder(), MainOnlyRecorder()
    assert Callbacks([plain, main_only], main=False).callbacks == [plain]
    assert Callbacks([plain, main_only], main=True).callbacks == [plain, main_only]


def test_runs_nest_under_a_parent_mlflow_run(tmp_path, data):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("study")
    parent = client.create_run(experiment, run_name="sweep").info.run_id
    cfg = small_config(
        tmp_path,
        **{
            "training.epochs": 1,
            "data.train": str(data),
            "tracking.enabled": True,
            "tracking.uri": uri,
            "tracking.experiment": "study",
        },
    )
    first = run(cfg, tmp_path / "a", parent_run_id=parent)
    second = run(cfg, tmp_path / "b", parent_run_id=parent)
    mlflow.set_tracking_uri(uri)
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    assert {r.info.run_id for r in children} == {first.run_id, second.run_id}
    assert all(r.info.status == "FINISHED" for r in children)

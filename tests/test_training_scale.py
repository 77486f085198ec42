"""The loop's options for long runs: epochs by rows, a run length in steps, validation on a
sample during training, `batch_size: auto`, the weights' moving average, and a failing rank
that ends a torchrun run instead of hanging it."""

from __future__ import annotations

import dataclasses
import subprocess
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from prodcat.config import build_config
from prodcat.data.dataset import load_splits
from prodcat.errors import ConfigError
from prodcat.training import finish, loop
from prodcat.training.batch_size import auto_batch_size, largest_fitting
from prodcat.training.callbacks import Callback
from prodcat.training.checkpoint import load_checkpoint
from prodcat.training.ema import WeightAverage
from prodcat.training.loop import Plan, epoch_batches, train
from prodcat.training.ranks import Rank
from tests.test_distributed import torchrun_command
from tests.test_training import small_config, write_titles


@pytest.fixture(scope="module")
def titles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("titles")
    data = write_titles(folder / "train.jsonl", rows_per_category=40)
    cfg = small_config(folder)
    return folder, data, load_splits(cfg.data, data)


def rows_of(batches) -> list[list[int]]:
    return [b.input_ids.tolist() + [b.labels.tolist()] for b in batches]


def test_epochs_of_rows_cut_the_stream_of_shuffled_passes(titles):
    _, _, splits = titles
    train_split = splits.train
    passes = train_split.num_batches(16)  # 8 batches of 128 rows
    plan = Plan.of(small_config(titles[0], **{"training.epoch_rows": 48}).training, passes, 16)
    assert plan.epoch_batches == 3 and plan.steps_per_epoch == 3
    # Epochs 1 to 4 are batches 0-11 of the stream: all of pass 1, then pass 2's first 4.
    by_epochs = [b for e in range(1, 5) for b in epoch_batches(train_split, plan, e, 0, 3, 16)]
    by_passes = [
        *train_split.batches(16, shuffle=True, epoch=1),
        *list(train_split.batches(16, shuffle=True, epoch=2))[:4],
    ]
    assert rows_of(by_epochs) == rows_of(by_passes)
    # A resumed epoch starts at its batch: epoch 3 from batch 2 on is stream batch 8 (pass 2).
    assert rows_of(epoch_batches(train_split, plan, 3, 2, 3, 16)) == rows_of(by_passes[8:9])


def test_max_steps_sets_the_run_length_and_cuts_the_last_epoch():
    cfg = build_config(overrides={"training.max_steps": 7, "training.epoch_rows": 48})
    plan = Plan.of(cfg.training, 8, 16)
    assert (plan.epochs, plan.total_steps) == (3, 7)
    assert [plan.batches_in(e) for e in (1, 2, 3)] == [3, 3, 1]
    accumulated = cfg.model_copy(deep=True)
    accumulated.training.gradient_accumulation = 2
    plan = Plan.of(accumulated.training, 8, 16)  # 2 steps an epoch (3 batches: 2 + 1)
    assert (plan.epochs, plan.batches_in(4)) == (4, 2)


class CountSteps(Callback):
    def __init__(self):
        self.batches: list[tuple[int, int]] = []

    def on_batch_end(self, run, step, rows):
        self.batches.append((run.state.epoch + 1, step))


def test_a_run_of_max_steps_takes_that_many_steps(titles, tmp_path):
    folder, _, splits = titles
    cfg = small_config(
        folder, **{"training.max_steps": 11, "training.epoch_rows": 64, "training.patience": None}
    )
    count = CountSteps()
    result = train(cfg, splits, tmp_path / "run", callbacks=[count])
    assert len(count.batches) == 11
    assert [h["epoch"] for h in result.history] == [1, 2, 3]  # 4 + 4 + 3 steps
    assert count.batches[-1] == (3, 3)


class InterruptAt(Callback):
    """Ctrl-C after batch `step` of epoch `epoch` (the checkpoint of the batch before stays)."""

    def __init__(self, epoch: int, step: int):
        self.at = (epoch, step)

    def on_batch_end(self, run, step, rows):
        if (run.state.epoch + 1, step) == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "average", [{"training.ema_decay": 0.8}, {"training.swa_epochs": 3}], ids=["ema", "swa"]
)
def test_epochs_of_rows_with_an_average_resume_inside_an_epoch_to_the_same_weights(
    titles, tmp_path, average
):
    folder, _, splits = titles
    # 5 epochs of 3 batches over passes of 8: epochs 3 and 5 straddle two passes.
    cfg = small_config(
        folder,
        **{
            "training.epoch_rows": 48,
            "training.epochs": 5,
            **average,
            "training.patience": None,
            "training.checkpoint_minutes": 1e-9,  # a checkpoint after every batch
        },
    )
    straight = train(cfg, splits, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, splits, tmp_path / "killed", callbacks=[InterruptAt(3, 3)])
    state = load_checkpoint(tmp_path / "killed")["state"]
    assert (state["epoch"], state["partial"]["step"]) == (2, 2)
    resumed = train(cfg, splits, tmp_path / "killed", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5]
    assert resumed.best_epoch == straight.best_epoch
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_the_average_is_what_is_validated_and_saved(titles, tmp_path):
    folder, _, splits = titles
    # A loss that falls every epoch: the last epoch is the best, its average the saved model.
    cfg = small_config(
        folder,
        **{
            "training.epochs": 3,
            "training.ema_decay": 0.9,
            "training.monitor": "loss",
            "training.lr": 0.005,
            "training.schedule": "constant",
            "training.keep_checkpoint": True,  # to read the average it held
        },
    )
    result = train(cfg, splits, tmp_path / "run")
    assert result.best_epoch == 3
    checkpoint = load_checkpoint(tmp_path / "run")
    saved = load_file(tmp_path / "run" / "model.safetensors")
    model = result.model
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "embedder.tokens.weight" in names  # the sparse table is averaged too
    for name, average in zip(names, checkpoint["ema"]["average"]):
        key = next(k for k in saved if k.endswith(name))
        torch.testing.assert_close(saved[key], average)
        # ... and not the last step's weights, which the checkpoint also holds.
        assert not torch.equal(average, checkpoint["model"][name])


class KeepWeights(Callback):
    """The weights at the end of each epoch, by parameter."""

    def __init__(self):
        self.epochs: list[dict[int, torch.Tensor]] = []

    def on_epoch_end(self, run, record):
        params = [p for group in run.optimizer.param_groups for p in group["params"]]
        self.epochs.append({id(p): p.detach().clone() for p in params})


def test_swa_saves_the_mean_of_the_last_epochs_when_it_validates_best(titles, tmp_path):
    folder, _, splits = titles
    cfg = small_config(
        folder,
        **{
            "training.epochs": 4,
            "training.swa_epochs": 2,
            "training.monitor": "loss",
            "training.lr": 0.005,
            "training.schedule": "constant",
        },
    )
    kept = KeepWeights()
    result = train(cfg, splits, tmp_path / "run", callbacks=[kept])
    assert result.best_epoch == 4  # the mean of epochs 3 and 4
    saved = load_file(tmp_path / "run" / "model.safetensors")
    for name, p in result.model.named_parameters():
        mean = (kept.epochs[2][id(p)] + kept.epochs[3][id(p)]) / 2
        key = next(k for k in saved if k.endswith(name))
        torch.testing.assert_close(saved[key], mean)
        assert not torch.equal(saved[key], kept.epochs[3][id(p)])
    with pytest.raises(ConfigError, match="ema_decay or swa_epochs"):
        build_config(overrides={"training.ema_decay": 0.9, "training.swa_epochs": 2})


class Bag(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.table = torch.nn.EmbeddingBag(50, 4, sparse=True)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, ids):
        return self.head(self.table(ids))


def test_weight_average_of_sparse_rows_is_the_average_of_every_row_every_step():
    from prodcat.training.optim import make_optimizer

    torch.manual_seed(0)
    model = Bag()
    optimizer = make_optimizer(model, name="adam", lr=0.1, weight_decay=0.0)
    average = WeightAverage(model, decay=0.9)
    reference = [p.detach().clone() for p in model.parameters()]  # every row, every step
    for step in range(1, 31):
        ids = torch.randint(0, 10 if step < 20 else 50, (8, 3))  # most rows idle for long
        torch.nn.functional.cross_entropy(model(ids), torch.randint(0, 3, (8,))).backward()
        average.before_step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        average.update()
        decay = min(0.9, (1 + step) / (10 + step))
        for r, p in zip(reference, model.parameters()):
            r.lerp_(p.detach(), 1 - decay)
    live = [p.detach().clone() for p in model.parameters()]
    with average.applied():
        for p, r in zip(model.parameters(), reference):
            torch.testing.assert_close(p.detach(), r, rtol=1e-5, atol=1e-6)
    for p, own in zip(model.parameters(), live):
        assert torch.equal(p, own)  # the model's own weights are back


def test_epochs_score_a_fixed_sample_and_the_end_scores_all_validation_rows(
    titles, tmp_path, monkeypatch
):
    folder, _, splits = titles
    scored = []
    evaluate = loop.evaluate_split

    def counting(model, split, *args, **kwargs):
        scored.append(len(split))
        return evaluate(model, split, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_split", counting)  # the epochs'
    monkeypatch.setattr(finish, "evaluate_split", counting)  # the end's
    cfg = small_config(
        folder, **{"training.epochs": 2, "training.validation_rows_during": 6, "training.lr": 0.01}
    )
    result = train(cfg, splits, tmp_path / "run")
    full = len(splits.validation)
    assert full > 6 and scored[:2] == [6, 6] and full in scored[2:]
    assert result.validation.rows == full
    scores, _ = evaluate(result.model, splits.validation, 64, torch.device("cpu"))
    assert result.validation.balanced_accuracy == pytest.approx(scores["balanced_accuracy"])
    assert result.validation.accuracy == pytest.approx(scores["accuracy"])
    # The tracker's final validation figures are those of all rows, not the last sample's.
    from prodcat.tracking.mlflow_store import MlflowRun

    tracker = MlflowRun.__new__(MlflowRun)  # no MLflow: only what it would log
    tracker._sampled, logged = True, {}
    tracker.log_metrics = lambda metrics, step=None: logged.update(metrics)
    tracker.log_final_metrics(result)
    assert logged["validation_balanced_accuracy"] == result.validation.balanced_accuracy
    # The sample is fixed by the seed, and rows of the validation split.
    a, b = (splits.validation.sample(6, seed=0) for _ in range(2))
    assert np.array_equal(a.rows, b.rows) and set(a.rows) <= set(splits.validation.rows)
    assert not np.array_equal(a.rows, splits.validation.sample(6, seed=1).rows)


def test_batch_size_auto_on_cpu_keeps_the_family_batch_and_records_it(titles, tmp_path):
    folder, _, splits = titles
    model = torch.nn.Linear(1, 1)
    cpu = torch.device("cpu")
    assert auto_batch_size(model, "mlp", splits.train, cpu, False, Rank()) == 128  # the rows
    big = dataclasses.replace(splits.train, rows=np.repeat(splits.train.rows, 4))
    assert auto_batch_size(model, "mlp", big, cpu, False, Rank()) == 256
    assert auto_batch_size(model, "transformer", big, cpu, False, Rank(0, 2)) == 32
    cfg = small_config(folder, **{"training.batch_size": "auto", "training.epochs": 1})
    result = train(cfg, splits, tmp_path / "run")
    assert result.batch_size == 128
    assert build_config(tmp_path / "run" / "config.yaml").training.batch_size == "auto"


def test_the_search_takes_the_largest_power_of_two_within_the_budget():
    tried = []

    def peak(size):  # 1 MB a title; out of memory from 1024 titles on
        tried.append(size)
        return None if size >= 1024 else size * 2**20

    assert largest_fitting(peak, budget=300 * 2**20, most=16384) == (256, 256 * 2**20)
    assert tried == [32, 64, 128, 256, 512]  # nothing larger after the first failure
    assert largest_fitting(peak, budget=2**40, most=16384) == (512, 512 * 2**20)  # OOM
    assert largest_fitting(peak, budget=2**40, most=20) == (20, 20 * 2**20)  # few rows
    assert largest_fitting(peak, budget=2**40, most=100)[0] == 64  # the cap
    assert largest_fitting(peak, budget=2**20, most=16384) == (0, 0)  # not even 32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_batch_size_auto_on_cuda_finds_a_power_of_two_that_fits(titles, monkeypatch):
    from prodcat.models.folder import build_model
    from prodcat.training import batch_size as auto

    folder, _, splits = titles
    cfg = small_config(folder)
    cuda = torch.device("cuda")
    model = build_model(cfg, len(splits.labels), splits.featurizer).to(cuda)
    found = auto_batch_size(model, "mlp", splits.train, cuda, True, Rank())
    assert found == 128  # the tiny model fits whatever the GPU: the training rows cap it
    # With memory for 32 titles and no more, the search stops there.
    lengths = np.asarray(splits.train.file.lengths)[splits.train.rows]
    longest = auto._rows(splits.train, np.argsort(-lengths, kind="stable")[:32])
    auto._peak_memory(model, longest, cuda, True)  # once first: CUDA's own workspaces
    peak = auto._peak_memory(model, longest, cuda, True)
    free = (peak + 1) / auto.MEMORY_SHARE - torch.cuda.memory_allocated(cuda)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free) + 1, 0))
    assert auto_batch_size(model, "mlp", splits.train, cuda, True, Rank(), copies=0) == 32


FAILING_RANK = """
import sys
from prodcat.config import build_config
from prodcat.training.callbacks import Callback
from prodcat.workflow import run


class FailOnRankOne(Callback):
    def on_batch_end(self, run, step, rows):
        if run.rank.index == 1 and step == 2:
            raise RuntimeError("rank 1 fails on purpose")


cfg = build_config(overrides={overrides!r})
run(cfg, sys.argv[1], callbacks=[FailOnRankOne()])
"""


def test_a_failing_rank_ends_the_torchrun_run_instead_of_hanging_it(tmp_path):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=40)
    overrides = {
        "data.train": str(data),
        "data.cache_dir": str(tmp_path / "cache"),
        "model.embedding_dim": 16,
        "training.batch_size": 16,
        "training.epochs": 3,
        "training.progress": False,
        "training.distributed_timeout_minutes": 1.0,
        "tracking.enabled": False,
    }
    script = tmp_path / "fail.py"
    script.write_text(FAILING_RANK.format(overrides=overrides), encoding="utf-8")
    command, env = torchrun_command(str(script), str(tmp_path / "model"))
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    assert done.returncode != 0
    assert "rank 1 fails on purpose" in done.stderr
    # Rank 0 did not wait out the process group's timeout (60 s) on rank 1's collectives.
    assert seconds < 45, seconds
    assert not (tmp_path / "model" / "metrics.json").exists()


def test_cli_batch_size_auto(titles, tmp_path, monkeypatch):
    from prodcat.cli.course import is_course_command, translate
    from prodcat.cli.main import main
    from prodcat.training.result import RunResult

    folder, data, _ = titles
    monkeypatch.chdir(tmp_path)
    args = ["train", "--train", str(data), "--output", "run", "--batch-size", "auto", "-q"]
    settings = [
        "--no-track",
        "--set",
        f"data.cache_dir={folder / 'c'}",
        "--set",
        "training.epochs=1",
    ]
    with pytest.raises(SystemExit) as done:
        main([*args, *settings, "--set", "model.embedding_dim=16"])
    assert done.value.code in (0, None)
    assert RunResult.load(tmp_path / "run").batch_size == 128
    # --batch-size is prodcat's option too, so it alone does not make a course command line;
    # in one, it takes auto as well.
    assert not is_course_command(args[1:])
    course = translate(["--train-data", str(data), "--batch-size", "auto"])
    assert "training.batch_size=auto" in course["overrides"]

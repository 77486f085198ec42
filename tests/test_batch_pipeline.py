"""The training batches' pipeline: length buckets, the prefetching thread, its wait time."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from prodcat.data.dataset import load_splits
from prodcat.training.loop import train
from prodcat.training.prefetch import Prefetcher
from tests.test_training import small_config, write_titles


@pytest.fixture
def splits(tmp_path):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=100)
    return load_splits(small_config(tmp_path).data, data)


def padded_tokens(batches) -> tuple[int, list]:
    total, rows = 0, []
    for b in batches:
        total += b.input_ids.numel()
        rows += [tuple(r[:n]) for r, n in zip(b.input_ids.tolist(), b.lengths.tolist())]
    return total, sorted(rows)


def test_length_buckets_pad_less_and_visit_every_row_once(splits):
    def epoch(bucket, seed=0, epoch=1):
        return splits.train.batches(16, shuffle=True, seed=seed, epoch=epoch, bucket=bucket)

    plain_tokens, plain_rows = padded_tokens(epoch(False))
    bucket_tokens, bucket_rows = padded_tokens(epoch(True))
    real = sum(len(r) for r in plain_rows)
    assert bucket_rows == plain_rows  # the same rows, each once
    # Titles of 3 to 7 words: shuffled batches pad to ~7, bucketed ones hardly at all.
    assert bucket_tokens - real < 0.25 * (plain_tokens - real)
    # Reproducible from (seed, epoch), different across epochs.
    lengths = [b.lengths.tolist() for b in epoch(True)]
    assert lengths == [b.lengths.tolist() for b in epoch(True)]
    assert lengths != [b.lengths.tolist() for b in epoch(True, epoch=2)]


def test_prefetcher_yields_the_same_batches_and_measures_the_wait(splits):
    direct = [b.input_ids for b in splits.train.batches(16, shuffle=True, seed=3, epoch=1)]
    ahead = [
        b.input_ids for b in Prefetcher(splits.train.batches(16, shuffle=True, seed=3, epoch=1), 3)
    ]
    assert len(direct) == len(ahead) > 10
    assert all((a == b).all() for a, b in zip(direct, ahead))

    def slow(n, seconds):
        for i in range(n):
            time.sleep(seconds)
            yield i

    # A producer slower than the loop: the loop waits about its whole time.
    prefetcher = Prefetcher(slow(10, 0.02), depth=2)
    assert list(prefetcher) == list(range(10))
    assert 0.15 < prefetcher.wait_seconds < 1.0

    def failing():
        yield 1
        raise ValueError("bad row 7")

    with pytest.raises(ValueError, match="bad row 7"):
        list(Prefetcher(failing(), depth=2))

    # A loop that stops early (an interrupt) leaves no thread behind.
    before = threading.active_count()
    for _ in Prefetcher(slow(1000, 0.001), depth=2):
        break
    assert threading.active_count() == before


def test_training_with_buckets_and_inline_batches_records_the_data_wait(tmp_path, splits):
    cfg = small_config(
        tmp_path,
        **{
            "training.epochs": 2,
            "data.bucket_by_length": True,
            "data.prefetch_batches": 0,
        },
    )
    result = train(cfg, splits, tmp_path / "model")
    assert result.validation.balanced_accuracy > 0.9
    for record in result.history:
        assert 0 < record["data_wait_share"] < 1
    np.testing.assert_array_less(
        [h["validation_loss"] for h in result.history[1:]],
        [h["validation_loss"] for h in result.history[:-1]],
    )

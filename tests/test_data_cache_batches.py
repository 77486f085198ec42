"""The encoded cache is reused for the same file and settings; batches pad and shuffle."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from prodcat.config import TokenizerConfig
from prodcat.data.batches import batch_order
from prodcat.data.cache import default_cache_root, encode_file
from prodcat.data.dataset import load_splits

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def titles_file(write_csv):
    rows = [(f"Producto {i} marca{i % 7} modelo", f"CAT_{i % 3}") for i in range(30)]
    return write_csv("titles.csv", ["title", "category"], rows)


@pytest.fixture
def forbid_tokenize(monkeypatch):
    """Make any further tokenising by a featurizer fail, to observe that none happens."""
    from prodcat.data.featurizers import VocabularyFeaturizer

    def forbid() -> None:
        def pieces(*args, **kwargs):
            raise AssertionError("the file was tokenised again")

        monkeypatch.setattr(VocabularyFeaturizer, "pieces", pieces)

    return forbid


def test_second_encode_reuses_the_cache(titles_file, data_config, forbid_tokenize):
    cfg = data_config()
    first = encode_file(titles_file, cfg)
    forbid_tokenize()
    second = encode_file(titles_file, cfg)

    assert second.folder == first.folder
    assert np.array_equal(second.tokens, first.tokens)
    assert second.vocabulary == first.vocabulary
    assert [p.name for p in cfg.cache_dir.iterdir()] == [first.folder.name]


def test_load_splits_reuses_the_cache(titles_file, data_config, forbid_tokenize):
    cfg = data_config()
    first = load_splits(cfg, titles_file)
    forbid_tokenize()
    second = load_splits(cfg, titles_file)
    assert second.train.file.folder == first.train.file.folder
    assert np.array_equal(second.train.rows, first.train.rows)


def test_settings_that_change_ids_give_a_new_cache(titles_file, data_config, forbid_tokenize):
    first = encode_file(titles_file, data_config())
    accents = encode_file(titles_file, data_config(tokenizer=TokenizerConfig(strip_accents=False)))
    width = encode_file(titles_file, data_config(max_tokens=2))
    forbid_tokenize()
    assert len({first.folder, accents.folder, width.folder}) == 3
    assert width.tokens.shape == (30, 2)
    # Filters and split settings work on the cached rows: the same cache serves them.
    assert (
        encode_file(titles_file, data_config(language="spanish", validation_size=5)).folder
        == first.folder
    )


def test_numbers_setting_changes_the_tokens(titles_file, data_config):
    shaped = encode_file(titles_file, data_config())
    kept = encode_file(titles_file, data_config(tokenizer=TokenizerConfig(numbers="keep")))
    assert kept.folder != shaped.folder
    assert "marca0" in shaped.vocabulary
    assert "marca6" not in shaped.vocabulary
    assert "marca6" in kept.vocabulary


def test_touching_the_file_gives_a_new_cache(titles_file, data_config):
    cfg = data_config()
    first = encode_file(titles_file, cfg)
    stat = titles_file.stat()
    os.utime(titles_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = encode_file(titles_file, cfg)
    assert second.folder != first.folder
    assert second.meta["source"]["mtime_ns"] == stat.st_mtime_ns + 5_000_000_000
    assert np.array_equal(second.tokens, first.tokens)


def test_changed_content_is_read_again(write_csv, data_config):
    path = write_csv("titles.csv", ["title", "category"], [("Foo", "A"), ("Bar", "B")])
    first = encode_file(path, data_config())
    write_csv("titles.csv", ["title", "category"], [("Foo", "A"), ("Bar", "B"), ("Baz", "C")])
    second = encode_file(path, data_config())
    assert second.folder != first.folder
    assert (first.n_rows, second.n_rows) == (2, 3)


def test_cache_folder_contents(titles_file, data_config):
    file = encode_file(titles_file, data_config(max_tokens=4))
    assert file.folder.parent == data_config().cache_dir
    assert file.folder.name.startswith("titles.csv-")
    names = {p.name for p in file.folder.iterdir()}
    assert {
        "tokens.bin",
        "lengths.bin",
        "labels.bin",
        "lines.bin",
        "tokens.txt",
        "labels.txt",
        "meta.json",
        "token_counts.npy",
    } <= names
    assert (file.folder / "tokens.bin").stat().st_size == 30 * 4 * 4
    assert file.meta["stats"]["truncated_titles"] == 0
    assert file.lengths.tolist() == [4] * 30
    assert not list(file.folder.parent.glob(".*.tmp"))


def test_default_cache_root_follows_the_environment(isolated_cache, titles_file):
    from prodcat.config import DataConfig

    assert default_cache_root() == isolated_cache
    file = encode_file(titles_file, DataConfig())
    assert file.folder.parent == isolated_cache


def test_truncation_to_max_tokens(write_csv, data_config):
    path = write_csv(
        "long.csv", ["title", "category"], [("uno dos tres cuatro cinco", "A"), ("seis", "B")]
    )
    file = encode_file(path, data_config(max_tokens=3))
    assert file.lengths.tolist() == [3, 1]
    assert [file.vocabulary[i] for i in file.tokens[0]] == ["uno", "dos", "tres"]
    assert file.meta["stats"]["truncated_titles"] == 1


# --- batches -------------------------------------------------------------------------


@pytest.fixture
def numbered_splits(write_csv, data_config):
    """23 training rows whose first token names the row, lengths 1 to 5."""
    rows = [(" ".join([f"fila{i:02d}"] + ["relleno"] * (i % 5)), f"CAT_{i % 2}") for i in range(23)]
    train = write_csv("train.csv", ["title", "category"], rows)
    validation = write_csv("validation.csv", ["title", "category"], [("fila00", "CAT_0")])
    cfg = data_config(test_size=0, tokenizer=TokenizerConfig(numbers="keep"))
    return load_splits(cfg, train, validation)


def row_ids(splits, batch) -> list[int]:
    """The training row each batch row comes from, read from its first token."""
    tokens = splits.vocabulary.tokens
    return [int(tokens[i][4:]) for i in batch.input_ids[:, 0].tolist()]


def test_batches_are_padded_with_zero_and_lengths_are_right(numbered_splits):
    splits = numbered_splits
    batches = list(splits.train.batches(5))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert splits.train.num_batches(5) == 5
    filler_id = splits.vocabulary.index["relleno"]
    for batch in batches:
        rows = row_ids(splits, batch)
        expected_lengths = [1 + i % 5 for i in rows]
        assert batch.lengths.tolist() == expected_lengths
        assert batch.input_ids.shape == (len(batch), max(expected_lengths))
        assert batch.input_ids.dtype == torch.int64
        for ids, length in zip(batch.input_ids.tolist(), expected_lengths, strict=True):
            assert ids[1:length] == [filler_id] * (length - 1)
            assert ids[length:] == [0] * (len(ids) - length)
        assert batch.labels.tolist() == [i % 2 for i in rows]
        assert batch.weights.tolist() == [1.0] * len(batch)
    assert sum((row_ids(splits, b) for b in batches), []) == list(range(23))


def test_batches_start_from_a_given_batch(numbered_splits):
    batches = list(numbered_splits.train.batches(5, start=3))
    assert [row_ids(numbered_splits, b) for b in batches] == [[15, 16, 17, 18, 19], [20, 21, 22]]


def epoch_rows(splits, **kwargs) -> list[int]:
    return sum((row_ids(splits, b) for b in splits.train.batches(4, shuffle=True, **kwargs)), [])


def test_shuffle_is_reproducible_per_seed_and_epoch(numbered_splits):
    first = epoch_rows(numbered_splits, seed=1, epoch=0)
    assert sorted(first) == list(range(23))
    assert first != list(range(23))
    assert epoch_rows(numbered_splits, seed=1, epoch=0) == first
    assert epoch_rows(numbered_splits, seed=1, epoch=1) != first
    assert epoch_rows(numbered_splits, seed=2, epoch=0) != first


def test_batch_order_reproducible_and_different_across_epochs():
    a = batch_order(1000, shuffle=True, seed=7, epoch=3)
    assert np.array_equal(a, batch_order(1000, shuffle=True, seed=7, epoch=3))
    assert not np.array_equal(a, batch_order(1000, shuffle=True, seed=7, epoch=4))
    assert sorted(a.tolist()) == list(range(1000))
    assert batch_order(5, shuffle=False, seed=7, epoch=3).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("n", "buffer"), [(1000, 64), (1000, 100), (23, 5), (10, 10), (10, 50)])
def test_shuffle_buffer_visits_every_row_once_within_windows(n, buffer):
    order = batch_order(n, shuffle=True, seed=3, epoch=1, buffer=buffer)
    assert sorted(order.tolist()) == list(range(n))
    assert np.array_equal(order, batch_order(n, shuffle=True, seed=3, epoch=1, buffer=buffer))
    # Rows of one window come out together: consecutive runs of the order stay in one window.
    windows = order // buffer
    changes = int((np.diff(windows) != 0).sum())
    assert changes == -(-n // buffer) - 1
    if n > buffer:
        assert not np.array_equal(order, np.arange(n))


def test_split_batches_with_shuffle_buffer_visit_every_row_once(numbered_splits):
    rows = epoch_rows(numbered_splits, seed=0, epoch=2, buffer=6)
    assert sorted(rows) == list(range(23))
    assert epoch_rows(numbered_splits, seed=0, epoch=2, buffer=6) == rows
    assert epoch_rows(numbered_splits, seed=0, epoch=3, buffer=6) != rows

"""The real MeLi files under ../shared/data (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from prodcat.data.cache import encode_file
from prodcat.data.dataset import load_splits

pytestmark = pytest.mark.usefixtures("isolated_cache")

COURSE_FILE = "meli-es-51k.jsonl.gz"
RAW_FILE = "meli-es-pt-1k.csv"


def test_course_file_rows_and_categories(shared_file, data_config):
    file = encode_file(shared_file(COURSE_FILE), data_config())
    assert file.meta["format"] == "jsonl"
    assert file.n_rows == 50_939
    assert file.meta["stats"]["rows_read"] == 50_939
    assert len(file.label_names) == 632
    assert np.bincount(file.labels).min() == 42
    assert np.bincount(file.labels).max() == 107
    assert file.meta["languages"] == ["spanish"]
    assert file.meta["qualities"] == ["reliable"]
    assert file.lines[-1] == 50_939


def test_course_file_splits(shared_file, data_config):
    splits = load_splits(data_config(), shared_file(COURSE_FILE))
    assert splits.summary.sizes == {"train": 50_939 - 2 * 5_094, "validation": 5_094, "test": 5_094}
    assert len(splits.labels) == 632
    assert splits.summary.unsplit_categories == 0
    train_labels = set(splits.train.labels.tolist())
    assert set(splits.validation.labels.tolist()) <= train_labels
    assert set(splits.test.labels.tolist()) <= train_labels
    # Every category of 42+ titles gives at least 4 titles to each held-out part.
    assert np.bincount(splits.validation.labels, minlength=632).min() >= 4


def test_raw_csv_rows_and_categories(shared_file, data_config):
    file = encode_file(shared_file(RAW_FILE), data_config())
    assert file.meta["format"] == "csv"
    assert file.meta["fields"]["language"] is None
    assert file.n_rows == 1_260
    assert len(file.label_names) == 787
    assert file.label_names[0] == "ELECTRIC_PRESSURE_WASHERS"
    first = [file.vocabulary[i] for i in file.tokens[0, : file.lengths[0]]]
    assert first == [
        "hidrolavadora",
        "lavor",
        "one",
        "000",
        "bar",
        "0000w",
        "bomba",
        "aluminio",
        "italia",
    ]


def test_raw_csv_splits_keep_single_title_categories_in_train(shared_file, data_config):
    splits = load_splits(data_config(), shared_file(RAW_FILE))
    assert splits.summary.sizes == {"train": 1_008, "validation": 126, "test": 126}
    assert len(splits.labels) == 787
    counts = np.bincount(splits.train.file.labels, minlength=787)
    singles = np.flatnonzero(counts == 1)
    assert len(singles) == 479
    train_codes = set(splits.train.file.labels[splits.train.rows].tolist())
    assert set(singles.tolist()) <= train_codes
    assert splits.summary.unsplit_categories >= 479


def test_data_stats_on_the_raw_csv(shared_file, run_cli, tmp_path):
    code, out, err = run_cli(
        [
            "data",
            "stats",
            str(shared_file(RAW_FILE)),
            "--set",
            f"data.cache_dir={tmp_path / 'stats-cache'}",
        ]
    )
    assert code == 0, err
    assert "rows: 1,260 read, 1,260 with a title, 0 empty titles skipped" in out
    assert "categories: 787 (rows per category: min 1, median 1, max 6)" in out
    assert (tmp_path / "stats-cache").is_dir()

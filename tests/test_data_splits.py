"""Filters, seeded samples, stratified splits, class weights and row weights."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from prodcat.data.cache import encode_file
from prodcat.data.dataset import DataSummary, filter_rows, load_splits, stratified_split
from prodcat.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_cache")

HEADER = ["title", "label_quality", "language", "category"]


@pytest.fixture
def mixed_file(write_csv):
    """12 rows: languages and label qualities in a known pattern."""
    rows = []
    for i in range(12):
        language = "spanish" if i % 3 else "portuguese"  # rows 0, 3, 6, 9 are Portuguese
        quality = "reliable" if i % 2 == 0 else "unreliable"
        rows.append((f"Producto {i} marca{i}", quality, language, f"CAT_{i % 2}"))
    return write_csv("mixed.csv", HEADER, rows)


def category_counts(file, rows) -> Counter:
    return Counter(file.label_names[c] for c in file.labels[rows].tolist())


# --- filters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "expected"),
    [("portuguese", [0, 3, 6, 9]), ("Spanish", [1, 2, 4, 5, 7, 8, 10, 11])],
)
def test_language_filter_keeps_only_that_language(mixed_file, data_config, language, expected):
    cfg = data_config(language=language)
    file = encode_file(mixed_file, cfg)
    summary = DataSummary()
    rows = filter_rows(file, cfg, summary)

    assert rows.tolist() == expected
    assert summary.dropped == {f"language is not {language}": 12 - len(expected)}


def test_language_filter_in_load_splits(mixed_file, data_config):
    splits = load_splits(
        data_config(language="portuguese", validation_size=1, test_size=0), mixed_file
    )
    kept = np.concatenate([splits.train.rows, splits.validation.rows])
    assert sorted(kept.tolist()) == [0, 3, 6, 9]
    assert splits.summary.languages == {"portuguese": 3}
    assert splits.summary.dropped["language is not portuguese"] == 8


def test_unknown_language_leaves_no_rows(mixed_file, data_config):
    cfg = data_config(language="english")
    file = encode_file(mixed_file, cfg)
    with pytest.raises(DataError, match=f"^{mixed_file}: no rows left after"):
        filter_rows(file, cfg, DataSummary())


def test_language_filter_without_language_column(write_csv, data_config):
    path = write_csv("es.csv", ["title", "category"], [("Foo", "A"), ("Bar", "B")])
    cfg = data_config(language="spanish")
    file = encode_file(path, cfg)
    with pytest.raises(DataError) as info:
        filter_rows(file, cfg, DataSummary())
    assert str(info.value).startswith(
        f"{path}: cannot filter by language: missing column 'language'"
    )
    assert "data.file_language" in str(info.value)


def test_language_filter_uses_file_language(write_csv, data_config):
    path = write_csv("es.csv", ["title", "category"], [("Foo", "A"), ("Bar", "B"), ("Baz", "A")])
    cfg = data_config(language="spanish", file_language="spanish")
    file = encode_file(path, cfg)
    assert filter_rows(file, cfg, DataSummary()).tolist() == [0, 1, 2]

    other = data_config(language="portuguese", file_language="spanish")
    with pytest.raises(DataError, match="no rows left"):
        filter_rows(file, other, DataSummary())


def test_language_column_name_is_configurable_in_the_error(write_csv, data_config):
    from prodcat.config import ColumnsConfig

    path = write_csv("es.csv", ["title", "category"], [("Foo", "A")])
    cfg = data_config(language="spanish", columns=ColumnsConfig(language="lang"))
    with pytest.raises(DataError, match="missing column 'lang'"):
        filter_rows(encode_file(path, cfg), cfg, DataSummary())


def test_label_quality_filter(mixed_file, data_config):
    cfg = data_config(label_quality="reliable")
    file = encode_file(mixed_file, cfg)
    summary = DataSummary()
    assert filter_rows(file, cfg, summary).tolist() == [0, 2, 4, 6, 8, 10]
    assert summary.dropped == {"label quality is not reliable": 6}


def test_language_and_label_quality_filters_combine(mixed_file, data_config):
    cfg = data_config(language="portuguese", label_quality="unreliable")
    file = encode_file(mixed_file, cfg)
    summary = DataSummary()
    assert filter_rows(file, cfg, summary).tolist() == [3, 9]
    assert summary.dropped == {
        "language is not portuguese": 8,
        "label quality is not unreliable": 2,
    }


def test_label_quality_filter_without_the_column(write_csv, data_config):
    path = write_csv("plain.csv", ["title", "category"], [("Foo", "A")])
    cfg = data_config(label_quality="reliable")
    with pytest.raises(
        DataError, match=f"^{path}: cannot filter by label quality: missing column 'label_quality'"
    ):
        filter_rows(encode_file(path, cfg), cfg, DataSummary())


@pytest.fixture
def hundred_rows(write_csv):
    """Training file of 100 rows in 4 categories, and a validation file, so train = all rows."""
    train = write_csv(
        "train.csv", ["title", "category"], [(f"Producto {i}", f"CAT_{i % 4}") for i in range(100)]
    )
    validation = write_csv(
        "validation.csv", ["title", "category"], [(f"Otro {c}", f"CAT_{c}") for c in range(4)]
    )
    return train, validation


def test_max_rows_is_a_seeded_random_sample(write_csv, data_config):
    # One category, so that any sample covers the validation file's category.
    train = write_csv(
        "train.csv", ["title", "category"], [(f"Producto {i}", "CAT") for i in range(100)]
    )
    validation = write_csv("validation.csv", ["title", "category"], [("Otro", "CAT")])

    def sample(seed: int) -> list[int]:
        splits = load_splits(data_config(max_rows=10, test_size=0, seed=seed), train, validation)
        assert splits.summary.dropped["over max_rows (train)"] == 90
        assert len(splits.train.labels) == 10
        return splits.train.rows.tolist()

    first = sample(0)
    assert len(first) == 10
    assert len(set(first)) == 10
    assert first == sorted(first)
    assert first != list(range(10))
    assert max(first) >= 10
    assert sample(0) == first
    assert sample(1) != first


def test_max_rows_keeps_the_categories_of_the_held_out_rows(write_csv, data_config):
    rows = [(f"Producto {c} {i}", f"CAT_{c}") for c in range(20) for i in range(5)]
    path = write_csv("train.csv", ["title", "category"], rows)
    splits = load_splits(data_config(max_rows=20, validation_size=0.2, test_size=0), path)
    assert len(splits.train) == 20
    assert set(splits.validation.labels.tolist()) <= set(splits.train.labels.tolist())


def test_validation_max_rows(hundred_rows, data_config):
    train, _ = hundred_rows
    splits = load_splits(data_config(validation_size=40, test_size=0, validation_max_rows=7), train)
    assert len(splits.validation) == 7
    assert len(splits.train) == 60
    assert splits.summary.dropped == {"over validation_max_rows": 33}


# --- stratified splits ---------------------------------------------------------------


@pytest.fixture
def balanced_file(write_csv):
    """10 categories of 10 rows, then 3 categories of one row each (103 rows)."""
    rows = [(f"Producto {c} modelo {i}", f"CAT_{c}") for i in range(10) for c in range(10)]
    rows += [(f"Unico {c}", f"SOLO_{c}") for c in range(3)]
    return write_csv("balanced.csv", ["title", "category"], rows)


def test_stratified_split_fraction_sizes(balanced_file, data_config):
    splits = load_splits(data_config(validation_size=0.1, test_size=0.1), balanced_file)
    file = splits.train.file

    assert splits.summary.sizes == {"train": 83, "validation": 10, "test": 10}
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 103
    all_rows = np.concatenate([splits.train.rows, splits.validation.rows, splits.test.rows])
    assert sorted(all_rows.tolist()) == list(range(103))
    # Each 10-row category gives one row to each held-out part.
    assert category_counts(file, splits.validation.rows) == {f"CAT_{c}": 1 for c in range(10)}
    assert category_counts(file, splits.test.rows) == {f"CAT_{c}": 1 for c in range(10)}
    train_counts = category_counts(file, splits.train.rows)
    assert train_counts == {
        **{f"CAT_{c}": 8 for c in range(10)},
        **{f"SOLO_{c}": 1 for c in range(3)},
    }
    assert splits.summary.unsplit_categories == 3
    assert splits.summary.categories == 13
    assert len(splits.labels) == 13


def test_stratified_split_row_counts(balanced_file, data_config):
    splits = load_splits(data_config(validation_size=20, test_size=30), balanced_file)
    file = splits.train.file
    assert splits.summary.sizes == {"train": 53, "validation": 20, "test": 30}
    assert category_counts(file, splits.validation.rows) == {f"CAT_{c}": 2 for c in range(10)}
    assert category_counts(file, splits.test.rows) == {f"CAT_{c}": 3 for c in range(10)}
    assert splits.summary.unsplit_categories == 3


def test_held_out_categories_are_all_in_train(write_csv, data_config):
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 15, size=40)
    rows = [(f"Titulo {c} {i}", f"CAT_{c}") for c, size in enumerate(sizes) for i in range(size)]
    rng.shuffle(rows)
    path = write_csv("uneven.csv", ["title", "category"], rows)
    splits = load_splits(data_config(validation_size=0.15, test_size=0.15, seed=5), path)

    n = len(rows)
    assert len(splits.validation) == round(0.15 * n)
    assert len(splits.test) == round(0.15 * n)
    assert len(splits.train) == n - 2 * round(0.15 * n)
    train_labels = set(splits.train.labels.tolist())
    assert set(splits.validation.labels.tolist()) <= train_labels
    assert set(splits.test.labels.tolist()) <= train_labels
    assert train_labels == set(range(40))
    assert len(splits.labels) == 40
    # Every category keeps at least one training row.
    assert np.bincount(splits.train.labels, minlength=40).min() >= 1
    assert splits.summary.unsplit_categories >= int((sizes == 1).sum())


def test_stratified_split_function_exact_sizes():
    labels = np.repeat(np.arange(6), [1, 2, 5, 10, 30, 52])  # 100 rows
    parts, rest, unsplit = stratified_split(labels, [10, 25], seed=11)

    assert [len(p) for p in parts] == [10, 25]
    assert len(rest) == 65
    together = np.concatenate(parts + [rest])
    assert sorted(together.tolist()) == list(range(100))
    assert np.unique(labels[rest]).tolist() == list(range(6))
    assert np.bincount(labels[parts[0]], minlength=6)[4:].tolist() == [3, 5]
    assert np.bincount(labels[parts[1]], minlength=6)[4:].tolist() == [8, 13]
    assert unsplit >= 1


def test_fixed_seed_gives_identical_splits(balanced_file, data_config):
    first = load_splits(data_config(seed=42), balanced_file)
    again = load_splits(data_config(seed=42), balanced_file)
    other = load_splits(data_config(seed=43), balanced_file)

    for name in ("train", "validation", "test"):
        assert np.array_equal(getattr(first, name).rows, getattr(again, name).rows)
        assert np.array_equal(getattr(first, name).labels, getattr(again, name).labels)
    assert first.vocabulary.tokens == again.vocabulary.tokens
    assert first.labels.names == again.labels.names
    assert not np.array_equal(first.validation.rows, other.validation.rows)


def test_zero_test_size_gives_no_test_split(balanced_file, data_config):
    splits = load_splits(data_config(validation_size=0.2, test_size=0), balanced_file)
    assert splits.test is None
    assert splits.summary.sizes == {"train": 82, "validation": 21}


def test_separate_files_are_used_whole(write_csv, data_config):
    train = write_csv(
        "train.csv", ["title", "category"], [(f"Producto {i}", f"CAT_{i % 3}") for i in range(30)]
    )
    validation = write_csv(
        "validation.csv", ["title", "category"], [("Foo", "CAT_0"), ("Bar", "CAT_2")]
    )
    test = write_csv("test.csv", ["title", "category"], [("Baz", "CAT_1")])
    splits = load_splits(data_config(), train, validation, test)

    assert splits.summary.sizes == {"train": 30, "validation": 2, "test": 1}
    assert splits.labels.names == ["CAT_0", "CAT_1", "CAT_2"]
    assert splits.validation.labels.tolist() == [0, 2]
    assert splits.test.labels.tolist() == [1]
    assert splits.summary.files == {
        "train": str(train),
        "validation": str(validation),
        "test": str(test),
    }


# --- weights -------------------------------------------------------------------------


def test_class_weights_from_label_frequencies(write_csv, data_config):
    rows = [("Producto a", "A")] * 6 + [("Producto b", "B")] * 3 + [("Producto c", "C")]
    train = write_csv("train.csv", ["title", "category"], rows)
    validation = write_csv("validation.csv", ["title", "category"], [("Foo", "A")])
    splits = load_splits(data_config(test_size=0), train, validation)

    weights = splits.class_weights()
    assert weights.dtype == np.float32
    assert weights.tolist() == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    # Balanced weights average 1 over the training rows.
    assert float(weights[splits.train.labels].mean()) == pytest.approx(1.0)


def test_row_weights_from_label_quality(mixed_file, data_config):
    splits = load_splits(
        data_config(unreliable_weight=0.25, validation_size=2, test_size=0), mixed_file
    )
    file = splits.train.file
    unreliable = file.meta["qualities"].index("unreliable")
    for split in (splits.train, splits.validation):
        expected = np.where(file.qualities[split.rows] == unreliable, 0.25, 1.0)
        assert split.weights.dtype == np.float32
        assert split.weights.tolist() == expected.tolist()
    assert sorted(set(splits.train.weights.tolist())) == [0.25, 1.0]

    batch_weights = np.concatenate([b.weights.numpy() for b in splits.train.batches(4)])
    assert batch_weights.tolist() == splits.train.weights.tolist()


def test_row_weights_are_one_by_default_and_without_quality(mixed_file, write_csv, data_config):
    splits = load_splits(data_config(validation_size=2, test_size=0), mixed_file)
    assert splits.train.weights.tolist() == [1.0] * len(splits.train)

    plain = write_csv(
        "plain.csv", ["title", "category"], [(f"P {i}", f"C{i % 2}") for i in range(10)]
    )
    splits = load_splits(data_config(validation_size=2, test_size=0, unreliable_weight=0.1), plain)
    assert splits.train.weights.tolist() == [1.0] * 8

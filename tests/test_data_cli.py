"""`prodcat data prepare` and `prodcat data stats`, and their one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prodcat.data.vocab import LabelMap, Vocabulary

pytestmark = pytest.mark.usefixtures("isolated_cache")

PRODCAT = Path(sys.executable).with_name("prodcat")


@pytest.fixture
def train_csv(write_csv):
    rows = [
        ("Mochila Bolso Bebé", "reliable", "spanish", "DIAPER_BAGS"),
        ("Mochila Maternal", "unreliable", "spanish", "DIAPER_BAGS"),
        ("Bolsa Maternidade Bebê", "reliable", "portuguese", "DIAPER_BAGS"),
        ("Cava De Vino", "reliable", "spanish", "WINE_CELLARS"),
        ("Adega Vinho 12 Garrafas", "reliable", "portuguese", "WINE_CELLARS"),
        ("Cava Vino Tinto", "unreliable", "spanish", "WINE_CELLARS"),
        ("Hidrolavadora Lavor One 120 Bar 1700w", "reliable", "spanish", "PRESSURE_WASHERS"),
        ("Lavadora De Alta Pressão 1700w", "reliable", "portuguese", "PRESSURE_WASHERS"),
    ]
    return write_csv("train.csv", ["title", "label_quality", "language", "category"], rows)


def test_prepare_writes_vocabulary_and_labels(train_csv, run_cli, tmp_path):
    output = tmp_path / "prepared"
    code, out, err = run_cli(
        [
            "data",
            "prepare",
            "--input",
            str(train_csv),
            "--output",
            str(output),
            "--quiet",
            "--set",
            "data.validation_size=3",
            "--set",
            "data.test_size=0",
        ]
    )
    assert code == 0, err
    assert "read 8 rows from" in out
    assert "splits: train 5, validation 3" in out
    assert "vocab.txt, featurizer.json and labels.txt written" in out

    vocab = Vocabulary.load(output / "vocab.txt")
    assert vocab.tokens[:2] == ["[PAD]", "[UNK]"]
    labels = LabelMap.load(output / "labels.txt")
    assert labels.names == ["DIAPER_BAGS", "PRESSURE_WASHERS", "WINE_CELLARS"]
    assert f"categories: 3; vocabulary: {len(vocab)} tokens" in out
    # The cache folder sits beside them.
    caches = [p for p in output.iterdir() if p.name.startswith("train.csv-")]
    assert len(caches) == 1
    assert (caches[0] / "meta.json").is_file()


def test_prepare_vocabulary_comes_from_filtered_training_rows(train_csv, run_cli, tmp_path):
    output = tmp_path / "prepared"
    code, out, err = run_cli(
        [
            "data",
            "prepare",
            "-i",
            str(train_csv),
            "-o",
            str(output),
            "-q",
            "--set",
            "data.test_size=0",
            "--set",
            "data.validation_size=2",
            "--set",
            "data.language=spanish",
        ]
    )
    assert code == 0, err
    assert "splits: train 3, validation 2" in out
    assert "dropped 3 rows: language is not spanish" in out
    spanish = {
        "mochila",
        "bolso",
        "bebé",
        "maternal",
        "cava",
        "de",
        "vino",
        "tinto",
        "hidrolavadora",
        "lavor",
        "one",
        "000",
        "bar",
        "0000w",
    }
    vocab = Vocabulary.load(output / "vocab.txt").tokens
    assert vocab[:2] == ["[PAD]", "[UNK]"]
    assert 2 < len(vocab) < 2 + len(spanish)
    assert set(vocab[2:]) <= spanish


def test_stats_on_a_small_file(train_csv, run_cli, tmp_path):
    code, out, err = run_cli(
        ["data", "stats", str(train_csv), "--set", f"data.cache_dir={tmp_path / 'c'}"]
    )
    assert code == 0, err
    assert "rows: 8 read, 8 with a title, 0 empty titles skipped" in out
    assert "languages: spanish 5, portuguese 3" in out
    assert "label quality: reliable 6, unreliable 2" in out
    assert "categories: 3 (rows per category: min 2, median 3, max 3)" in out


def test_stats_on_an_unlabelled_file(write_csv, run_cli, tmp_path):
    path = write_csv("test.csv", ["id", "title", "language"], [(0, "Kit Maquiagem", "portuguese")])
    code, out, err = run_cli(
        ["data", "stats", str(path), "--set", f"data.cache_dir={tmp_path / 'c'}"]
    )
    assert code == 0, err
    assert "rows: 1 read" in out
    assert "categories" not in out


def test_data_error_is_one_line_with_file_and_line(write_text, run_cli, tmp_path):
    path = write_text("bad.csv", "title,category\nFoo,A\nBar,B,C\n")
    code, out, err = run_cli(
        ["data", "prepare", "--input", str(path), "--output", str(tmp_path / "o"), "-q"]
    )
    assert code == 2
    assert err.strip().splitlines() == [f"error: {path}:3: expected 2 columns, found 3"]
    assert "Traceback" not in err


def test_bad_override_is_one_line(train_csv, run_cli, tmp_path):
    code, _, err = run_cli(
        [
            "data",
            "prepare",
            "-i",
            str(train_csv),
            "-o",
            str(tmp_path / "o"),
            "--set",
            "data.max_tokenz=3",
        ]
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "data.max_tokenz" in lines[0]


def test_missing_input_file_via_the_installed_command(tmp_path):
    if not PRODCAT.is_file():
        pytest.skip(f"no prodcat command at {PRODCAT}")
    missing = tmp_path / "missing.csv"
    env = {**os.environ, "PRODCAT_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    result = subprocess.run(
        [
            str(PRODCAT),
            "data",
            "prepare",
            "--input",
            str(missing),
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {missing}: no such file"]
    assert not (tmp_path / "out" / "vocab.txt").exists()

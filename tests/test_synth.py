"""Tests of the synthetic MercadoLibre-style title generator (benchmarks/synth.py)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from benchmarks.synth import COLUMNS, write_synthetic_titles

ROWS = 5_000
CATEGORIES = 300
SEED = 7
HEADER = b"title,label_quality,language,category\n"


def _distinct_tokens(titles: list[str]) -> int:
    return len({t for title in titles for t in re.split(r"\W+", title.lower()) if t})


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[int]]:
    path = tmp_path_factory.mktemp("synth") / "titles.csv"
    calls: list[int] = []
    summary = write_synthetic_titles(
        path, ROWS, seed=SEED, categories=CATEGORIES, chunk_rows=1_000, progress=calls.append
    )
    return path, summary, calls


@pytest.fixture(scope="module")
def table(written: tuple[Path, dict, list[int]]) -> pa.Table:
    return pacsv.read_csv(written[0])


def test_header_rows_and_summary(written: tuple[Path, dict, list[int]], table: pa.Table) -> None:
    path, summary, calls = written
    with open(path, "rb") as f:
        assert f.readline() == HEADER
    assert table.column_names == list(COLUMNS)
    assert table.num_rows == ROWS
    assert summary["rows"] == ROWS
    assert summary["categories"] == pc.count_distinct(table["category"]).as_py()
    assert summary["bytes"] == path.stat().st_size
    assert summary["seconds"] > 0
    assert calls == sorted(calls) and calls[-1] == ROWS  # progress after each chunk
    assert len(calls) == 2  # chunk_rows is rounded up to 4,096


def test_languages_and_label_quality(table: pa.Table) -> None:
    languages = table["language"].to_pylist()
    assert set(languages) == {"spanish", "portuguese"}
    assert 0.45 < languages.count("spanish") / ROWS < 0.55
    qualities = table["label_quality"].to_pylist()
    assert set(qualities) == {"reliable", "unreliable"}
    assert 0.03 <= qualities.count("reliable") / ROWS <= 0.10


def test_categories_are_long_tailed(table: pa.Table) -> None:
    counts = np.array(pc.value_counts(table["category"]).field("counts").to_pylist())
    assert counts.size > 100
    assert counts.max() >= 5 * np.median(counts)
    names = pc.unique(table["category"]).to_pylist()
    assert all(re.fullmatch(r"[A-Z0-9_]+", name) for name in names)


def test_titles_look_like_titles(table: pa.Table) -> None:
    titles = table["title"].to_pylist()
    words = np.array([len(t.split()) for t in titles])
    assert words.min() >= 3 and words.max() <= 15
    assert 7.0 < words.mean() < 9.0
    assert sum(t[:1].isupper() for t in titles) > 0.9 * ROWS  # mostly Title Case
    assert any(any(ch in t for ch in "áéíóúãõç") for t in titles)
    assert any(re.search(r"\d", t) for t in titles)


def test_titles_with_commas_round_trip(
    written: tuple[Path, dict, list[int]], table: pa.Table
) -> None:
    raw = written[0].read_text(encoding="utf-8")
    with_commas = [t for t in table["title"].to_pylist() if "," in t]
    assert with_commas
    for title in with_commas:
        assert f'"{title}"' in raw


def test_same_seed_same_bytes_whatever_the_chunking(
    tmp_path: Path, written: tuple[Path, dict, list[int]]
) -> None:
    again = tmp_path / "again.csv"
    write_synthetic_titles(again, ROWS, seed=SEED, categories=CATEGORIES, chunk_rows=50_000)
    assert again.read_bytes() == written[0].read_bytes()
    other = tmp_path / "other.csv"
    write_synthetic_titles(other, ROWS, seed=SEED + 1, categories=CATEGORIES)
    assert other.read_bytes() != written[0].read_bytes()


def test_gzip_output_is_deterministic(tmp_path: Path) -> None:
    plain, first, second = tmp_path / "t.csv", tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    for path in (plain, first, second):
        write_synthetic_titles(path, 1_000, seed=SEED, categories=CATEGORIES)
    assert first.read_bytes() == second.read_bytes()
    assert gzip.decompress(first.read_bytes()) == plain.read_bytes()
    assert pacsv.read_csv(first).num_rows == 1_000


def test_vocabulary_grows_with_rows(tmp_path: Path) -> None:
    small = write_synthetic_titles(tmp_path / "s.csv", 2_000, seed=SEED, categories=CATEGORIES)
    large = write_synthetic_titles(tmp_path / "l.csv", 20_000, seed=SEED, categories=CATEGORIES)
    titles = pacsv.read_csv(tmp_path / "s.csv")["title"].to_pylist()
    assert small["distinct_tokens"] == _distinct_tokens(titles)  # the summary is exact
    assert large["distinct_tokens"] > 3 * small["distinct_tokens"]


def test_empty_file_and_bad_arguments(tmp_path: Path) -> None:
    summary = write_synthetic_titles(tmp_path / "empty.csv", 0, seed=SEED, categories=CATEGORIES)
    assert (tmp_path / "empty.csv").read_bytes() == HEADER
    assert summary["rows"] == 0 and summary["distinct_tokens"] == 0
    with pytest.raises(ValueError):
        write_synthetic_titles(tmp_path / "bad.csv", -1)
    with pytest.raises(ValueError):
        write_synthetic_titles(tmp_path / "bad.csv", 10, categories=0)

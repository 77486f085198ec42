"""Reading title files: the challenge's CSV layouts, JSON lines, gzip, custom column names."""

from __future__ import annotations

import numpy as np
import pytest

from prodcat.config import ColumnsConfig
from prodcat.data.cache import encode_file
from prodcat.data.readers import TableReader, detect_format
from prodcat.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_cache")

CHALLENGE_HEADER = ("title", "label_quality", "language", "category")
CHALLENGE_ROWS = [
    ("Mochila, Bolso Bebé Simil Cuero Marietastore®", "reliable", "spanish", "DIAPER_BAGS"),
    ("Hidrolavadora Lavor One 120 Bar 1700w", "unreliable", "spanish", "PRESSURE_WASHERS"),
    ("Cafeteira Elétrica 😀 Nespresso, Preta", "reliable", "portuguese", "COFFEE_MAKERS"),
    ("Bolsa Maternidade Bebê", "unreliable", "portuguese", "DIAPER_BAGS"),
]


def tokens_of(file, row: int) -> list[str]:
    """The cached tokens of one row, as strings."""
    ids = file.tokens[row, : file.lengths[row]]
    return [file.vocabulary[i] for i in ids]


def test_challenge_csv_with_quoted_commas_accents_emoji(write_csv, data_config):
    path = write_csv("train.csv", CHALLENGE_HEADER, CHALLENGE_ROWS)
    file = encode_file(path, data_config())

    assert file.n_rows == 4
    assert file.meta["format"] == "csv"
    assert file.meta["fields"] == {
        "text": "title",
        "label": "category",
        "language": "language",
        "quality": "label_quality",
        "id": None,
    }
    # The quoted comma stays inside the title; accents are folded; emoji and ® separate tokens.
    assert tokens_of(file, 0) == ["mochila", "bolso", "bebe", "simil", "cuero", "marietastore"]
    assert tokens_of(file, 1) == ["hidrolavadora", "lavor", "one", "000", "bar", "0000w"]
    assert tokens_of(file, 2) == ["cafeteira", "eletrica", "nespresso", "preta"]
    assert file.label_names == ["DIAPER_BAGS", "PRESSURE_WASHERS", "COFFEE_MAKERS"]
    assert file.labels.tolist() == [0, 1, 2, 0]
    assert file.meta["languages"] == ["spanish", "portuguese"]
    assert file.languages.tolist() == [0, 0, 1, 1]
    assert file.meta["qualities"] == ["reliable", "unreliable"]
    assert file.qualities.tolist() == [0, 1, 0, 1]
    assert file.lines.tolist() == [2, 3, 4, 5]
    assert file.lengths.tolist() == [6, 6, 4, 3]


def test_csv_with_only_title_and_category(write_csv, data_config):
    path = write_csv(
        "train.csv",
        ["title", "category"],
        [
            ("Placa De Sonido - Behringer Umc22", "SOUND_CARDS"),
            ("Maquina De Lavar Electrolux 12 Kilos", "WASHING_MACHINES"),
        ],
    )
    file = encode_file(path, data_config())

    assert file.n_rows == 2
    assert file.meta["fields"]["language"] is None
    assert file.meta["fields"]["quality"] is None
    assert file.languages.tolist() == [-1, -1]
    assert file.qualities.tolist() == [-1, -1]
    assert tokens_of(file, 0) == ["placa", "de", "sonido", "behringer", "umc00"]
    assert file.label_names == ["SOUND_CARDS", "WASHING_MACHINES"]


def test_unlabelled_test_csv_encodes_without_labels(write_csv, data_config):
    path = write_csv(
        "test.csv",
        ["id", "title", "language"],
        [(0, "Kit Maquiagem", "portuguese"), (1, "Cava De Vino", "spanish")],
    )
    file = encode_file(path, data_config(), require_labels=False)

    assert file.n_rows == 2
    assert not file.has_labels
    assert file.labels.tolist() == [-1, -1]
    assert file.label_names == []
    assert file.meta["fields"]["id"] == "id"
    assert tokens_of(file, 1) == ["cava", "de", "vino"]


def test_unlabelled_test_csv_requiring_labels_names_missing_column(write_csv, data_config):
    path = write_csv("test.csv", ["id", "title", "language"], [(0, "Kit Maquiagem", "portuguese")])
    with pytest.raises(DataError) as info:
        encode_file(path, data_config(), require_labels=True)
    message = str(info.value)
    assert f"{path}:1:" in message
    assert "missing column 'category'" in message
    assert "id, title, language" in message


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_jsonl_plain_and_gzip(write_jsonl, data_config, gz):
    records = [
        {
            "language": "spanish",
            "label_quality": "reliable",
            "title": "Set De Brochas Unicornio",
            "category": "MAKEUP_BRUSHES",
            "tokenized_title": ["set", "brochas"],
            "target": 3,
        },
        {
            "language": "spanish",
            "label_quality": "reliable",
            "title": "Cava De Vino Vondom 6 Bts",
            "category": "WINE_CELLARS",
            "tokenized_title": ["cava"],
            "target": 1,
        },
        {
            "language": "spanish",
            "label_quality": "unreliable",
            "title": "Brochas Maquillaje",
            "category": "MAKEUP_BRUSHES",
            "tokenized_title": [],
            "target": 3,
        },
    ]
    name = "train.jsonl.gz" if gz else "train.jsonl"
    path = write_jsonl(name, records, gz=gz)
    if gz:
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    file = encode_file(path, data_config())

    assert file.meta["format"] == "jsonl"
    assert file.n_rows == 3
    assert file.label_names == ["MAKEUP_BRUSHES", "WINE_CELLARS"]
    assert file.labels.tolist() == [0, 1, 0]
    assert file.qualities.tolist() == [0, 0, 1]
    assert file.lines.tolist() == [1, 2, 3]
    assert tokens_of(file, 1) == ["cava", "de", "vino", "vondom", "0", "bts"]
    # Ids go by frequency, ties by first appearance: "de" and "brochas" occur twice.
    assert file.vocabulary[2:4] == ["de", "brochas"]
    assert file.token_counts[2:5].tolist() == [2, 2, 1]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("titles.dat", "title,category\nFoo Bar,A\nBaz,B\n", "csv"),
        ("titles.csv", "title,category\nFoo Bar,A\nBaz,B\n", "csv"),
        (
            "titles",
            '{"title": "Foo Bar", "category": "A"}\n{"title": "Baz", "category": "B"}\n',
            "jsonl",
        ),
    ],
)
def test_gzip_detected_by_magic_bytes_whatever_the_name(
    write_text, data_config, name, content, expected
):
    path = write_text(name, content, gz=True)
    assert detect_format(path) == expected
    file = encode_file(path, data_config())

    assert file.meta["format"] == expected
    assert file.n_rows == 2
    assert file.label_names == ["A", "B"]
    assert tokens_of(file, 0) == ["foo", "bar"]


def test_custom_column_names(write_csv, data_config):
    path = write_csv(
        "other.csv",
        ["name", "cat", "extra"],
        [("Red Shoes", "SHOES", "x"), ("Blue Hat", "HATS", "y")],
    )
    cfg = data_config(columns=ColumnsConfig(text="name", label="cat"))
    file = encode_file(path, cfg)

    assert file.meta["fields"]["text"] == "name"
    assert file.meta["fields"]["label"] == "cat"
    assert file.label_names == ["SHOES", "HATS"]
    assert tokens_of(file, 1) == ["blue", "hat"]

    # The default column names do not fit this file: the error names the missing column.
    with pytest.raises(DataError, match=r"missing column 'title'"):
        encode_file(path, data_config())


def test_reader_line_numbers_across_many_small_blocks(write_csv):
    path = write_csv(
        "many.csv", ["title", "category"], [(f"title {i}", f"C{i % 5}") for i in range(1000)]
    )
    batches = list(TableReader(path, block_size=1024).batches())

    assert len(batches) > 5
    lines = [line for batch in batches for line in batch.lines.tolist()]
    assert lines == list(range(2, 1002))
    assert batches[-1].table.column("text")[-1].as_py() == "title 999"


def test_windows_line_endings(write_text, data_config):
    path = write_text("crlf.csv", "title,category\r\nFoo Bar,A\r\nBaz,B\r\n")
    file = encode_file(path, data_config())
    assert file.n_rows == 2
    assert file.label_names == ["A", "B"]
    assert tokens_of(file, 1) == ["baz"]


def test_csv_with_utf8_byte_order_mark(write_text, data_config):
    path = write_text("excel.csv", "\ufefftitle,category\nFoo Bar,A\nBaz,B\n")
    file = encode_file(path, data_config())
    assert file.n_rows == 2
    assert file.label_names == ["A", "B"]


def test_gzip_and_plain_give_identical_caches(write_csv, data_config):
    rows = [(f"Producto {i} Marca{i % 7}", f"CAT_{i % 3}") for i in range(50)]
    plain = encode_file(write_csv("a.csv", ["title", "category"], rows), data_config())
    packed = encode_file(write_csv("b.csv.gz", ["title", "category"], rows, gz=True), data_config())

    assert plain.folder != packed.folder
    assert plain.vocabulary == packed.vocabulary
    assert np.array_equal(plain.tokens, packed.tokens)
    assert np.array_equal(plain.labels, packed.labels)

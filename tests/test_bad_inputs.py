"""A corpus of malformed training files, each run through `prodcat train --train FILE`: every
one is refused with one line naming the file (and the line and field where there is one),
never a traceback; what is merely unusual (CRLF, a byte-order mark, emoji, right-to-left
scripts, control characters, a 1 MB title, null titles) is accepted and read right."""

from __future__ import annotations

import bz2
import gzip
import json
import random
import zipfile

import pyarrow as pa
import pytest

from prodcat.errors import DataError

CATEGORIES = ("LAVARROPAS", "FRENOS", "MOCHILAS", "AURICULARES")


def rows(n: int = 40) -> list[tuple[str, str]]:
    return [(f"Producto marca {i} modelo {i * 7 % 13}", CATEGORIES[i % 4]) for i in range(n)]


def csv_text(rows, separator=",", newline="\n", header="title,category") -> str:
    lines = [header.replace(",", separator)] + [f"{t}{separator}{c}" for t, c in rows]
    return newline.join(lines) + newline


def jsonl_text(records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def with_row(index: int, row, n: int = 40) -> list:
    """`rows(n)` with row `index` replaced (a dict for JSON lines)."""
    out = (
        rows(n) if not isinstance(row, dict) else [{"title": t, "category": c} for t, c in rows(n)]
    )
    out[index] = row
    return out


def junk(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(n))


def zipped(text: str) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.csv", text)
    return buffer.getvalue()


def truncated_gzip() -> bytes:
    packed = gzip.compress(csv_text(rows(3000)).encode())
    return packed[: len(packed) // 2]


GOOD = csv_text(rows())

# name -> (file content, expected message after "error: PATH"); line 1 is the CSV header.
REJECTED = {
    "truncated.csv.gz": (
        truncated_gzip(),
        ": cannot read the file: not a valid gzip file (Compressed file ended before the "
        "end-of-stream marker was reached)",
    ),
    "junk-inside.csv.gz": (
        gzip.compress(junk(3000)),
        ":1: not a CSV or JSON-lines file: binary data, not text",
    ),
    "junk.csv": (junk(3000), ":1: not a CSV or JSON-lines file: binary data, not text"),
    "junk.jsonl": (junk(3000, 1), ":1: not a CSV or JSON-lines file: binary data, not text"),
    "archive.csv": (zipped(GOOD), ": not a CSV or JSON-lines file: a zip archive (unzip it first)"),
    "bzip2.csv": (
        bz2.compress(GOOD.encode()),
        ": not a CSV or JSON-lines file: compressed with bzip2 (only gzip is read: "
        "decompress it first)",
    ),
    "utf16.csv": (
        GOOD.encode("utf-16"),
        ": not a CSV or JSON-lines file: UTF-16 text (save the file as UTF-8)",
    ),
    "utf16-no-bom.csv": (
        GOOD.encode("utf-16-le"),
        ": not a CSV or JSON-lines file: UTF-16 text (save the file as UTF-8)",
    ),
    "latin1.csv": (
        csv_text(with_row(10, ("Café con leche", "LAVARROPAS"))).encode("latin-1"),
        ":12: not UTF-8 text (byte 0xe9 at column 4; save the file as UTF-8)",
    ),
    "semicolons.csv": (
        csv_text(rows(), separator=";").encode(),
        ":1: missing column 'title' (the file has: title;category); the header is separated "
        "by semicolons, but prodcat reads a .csv file as separated by commas",
    ),
    "commas.tsv": (
        GOOD.encode(),
        ":1: missing column 'title' (the file has: title,category); the header is separated "
        "by commas, but prodcat reads a .tsv file as separated by tabs",
    ),
    "nul-in-title.csv": (
        csv_text(with_row(7, ("Producto\x00roto", "FRENOS"))).encode(),
        ":9: field 'title': a NUL byte (binary data in a text file)",
    ),
    "nul-in-category.jsonl": (
        jsonl_text(with_row(4, {"title": "Producto", "category": "FRE\x00NOS"})).encode(),
        ":5: field 'category': a NUL byte (binary data in a text file)",
    ),
    "duplicate-column.csv": (
        csv_text(rows(), header="title,title,category").encode(),
        ":1: column 'title' appears more than once in the header",
    ),
    "header-twice.csv": (
        (GOOD + GOOD.split("\n", 1)[0] + "\n" + csv_text(rows(5)).split("\n", 1)[1]).encode(),
        ":42: the header line again (were files joined with their headers?)",
    ),
    "missing-column.csv": (
        csv_text(rows(), header="name,category").encode(),
        ":1: missing column 'title' (the file has: name, category)",
    ),
    "missing-category.jsonl": (
        jsonl_text({"title": t} for t, _ in rows()).encode(),
        ":1: missing column 'category' (the file has: title)",
    ),
    "numeric-title.jsonl": (
        jsonl_text(with_row(5, {"title": 12345, "category": "FRENOS"})).encode(),
        ":6: field 'title': expected a string, found 12345",
    ),
    "list-title.jsonl": (
        jsonl_text(with_row(2, {"title": ["a", "b"], "category": "FRENOS"})).encode(),
        ':3: field \'title\': expected a string, found ["a", "b"]',
    ),
    "boolean-category.jsonl": (
        jsonl_text(with_row(8, {"title": "Disco", "category": True})).encode(),
        ":9: field 'category': expected a string, found true",
    ),
    "null-category.jsonl": (
        jsonl_text(with_row(3, {"title": "Disco", "category": None})).encode(),
        ":4: field 'category': empty category",
    ),
    "json-array.json": (
        json.dumps([{"title": t, "category": c} for t, c in rows()]).encode(),
        ":1: a JSON array; prodcat reads JSON lines (one object per line)",
    ),
    "csv-line-in.jsonl": (
        (jsonl_text({"title": t, "category": c} for t, c in rows(5)) + "Disco,FRENOS\n").encode(),
        ":6: invalid JSON: Expecting value",
    ),
    "unclosed-quote.csv": (
        (csv_text(rows(5)) + '"Disco sin cerrar,FRENOS\n' + "Otro,FRENOS\n").encode(),
        ":7: expected 2 columns, found 1 (an unclosed quote?)",
    ),
    "extra-column.csv": (
        (csv_text(rows(5)) + "Disco,FRENOS,sobra\n").encode(),
        ":7: expected 2 columns, found 3",
    ),
    "empty.csv": (b"", ": the file is empty"),
    "blank-lines.jsonl": (b"\n \n\t\n", ": the file is empty"),
    "header-only.csv": (b"title,category\n", ": the file has a header but no rows"),
}


@pytest.fixture
def train_cli(run_cli, tmp_path, monkeypatch):
    """`prodcat train --train FILE` on a tiny model: (exit code, stdout, stderr)."""
    monkeypatch.setenv("PRODCAT_CACHE", str(tmp_path / "cache"))
    settings = ["training.epochs=1", "model.embedding_dim=8", "model.hidden_layers=[8]"]

    def train(path):
        args = ["train", "--train", str(path), "--output", str(tmp_path / "run"), "--no-track"]
        return run_cli([*args, "-q", *(x for s in settings for x in ("--set", s))])

    return train


def assert_one_line_error(result, expected: str) -> None:
    code, out, err = result
    assert code == 2, err
    assert "Traceback" not in err + out
    assert err.strip().splitlines() == [f"error: {expected}"]


@pytest.mark.parametrize("name", list(REJECTED))
def test_a_malformed_file_is_one_line_naming_file_and_line(name, tmp_path, train_cli):
    content, message = REJECTED[name]
    path = tmp_path / name
    path.write_bytes(content)
    assert_one_line_error(train_cli(path), f"{path}{message}")


def test_a_folder_is_not_a_file(tmp_path, train_cli):
    (tmp_path / "train.csv").mkdir()
    assert_one_line_error(
        train_cli(tmp_path / "train.csv"), f"{tmp_path / 'train.csv'}: a folder, not a file"
    )


def test_a_missing_path(tmp_path, train_cli):
    path = tmp_path / "nowhere" / "train.csv"
    assert_one_line_error(train_cli(path), f"{path}: no such file")


# Accepted: name -> (content, a title of the file whose tokens must be read right, tokens)
ACCEPTED = {
    "crlf.csv": (csv_text(rows(), newline="\r\n").encode(), None, None),
    "byte-order-mark.csv": (b"\xef\xbb\xbf" + GOOD.encode(), None, None),
    "emoji-and-rtl.csv": (
        csv_text(
            with_row(3, ("Funda iPhone 📱 Roja ❤️", "LAVARROPAS"))[:4]
            + [("כיסוי לטלפון אדום", "FRENOS"), ("غطاء هاتف أحمر", "MOCHILAS")]
            + rows()[6:]
        ).encode(),
        "כיסוי לטלפון אדום",
        ["כיסוי", "לטלפון", "אדום"],
    ),
    "control-characters.csv": (
        csv_text(with_row(7, ("Disco\x07de\x1bfreno\x7fventilado\x0c", "AURICULARES"))).encode(),
        "Disco\x07de\x1bfreno\x7fventilado\x0c",
        ["disco", "de", "freno", "ventilado"],
    ),
    "one-megabyte-title.jsonl": (
        jsonl_text(
            [{"title": "palabra " * 131_072, "category": "FRENOS"}]
            + [{"title": t, "category": c} for t, c in rows()]
        ).encode(),
        None,
        None,
    ),
    "null-titles.jsonl": (
        jsonl_text(with_row(5, {"title": None, "category": "FRENOS"})).encode(),
        None,
        None,
    ),
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_an_unusual_but_valid_file_is_accepted_and_read_right(name, tmp_path, train_cli):
    from prodcat.config import load_config
    from prodcat.workflow.train import make_featurizer

    content, title, tokens = ACCEPTED[name]
    path = tmp_path / name
    path.write_bytes(content)
    code, out, err = train_cli(path)
    assert code == 0, err
    assert "Traceback" not in err
    model = tmp_path / "run"
    # Categories carry no stray \r or BOM, and are exactly the file's.
    labels = (model / "labels.txt").read_text(encoding="utf-8").split("\n")
    assert sorted(filter(None, labels)) == sorted(CATEGORIES)
    if title is not None:
        cfg = load_config(model / "config.yaml")
        pieces = make_featurizer(cfg).pieces(pa.array([title]))
        assert [pieces.vocabulary[c] for c in pieces.codes] == tokens


def test_the_reader_alone_raises_the_same_data_error(tmp_path):
    """The reader alone (no CLI) raises the same DataError, for library users."""
    from prodcat.data.readers import TableReader

    path = tmp_path / "junk.csv"
    path.write_bytes(junk(500))
    with pytest.raises(DataError) as error:
        TableReader(path)
    assert (error.value.path, error.value.line) == (str(path), 1)

"""Bad input gives a DataError that names the file and, for a bad row, its line."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from prodcat.data.cache import encode_file
from prodcat.data.dataset import load_splits
from prodcat.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_cache")


def encode_error(path, cfg, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        encode_file(path, cfg, **kwargs)
    return info.value


def test_missing_file(data_dir, data_config):
    path = data_dir / "nowhere.csv"
    error = encode_error(path, data_config())
    assert str(error) == f"{path}: no such file"


def test_empty_file(write_text, data_config):
    path = write_text("empty.csv", "")
    error = encode_error(path, data_config())
    assert str(error) == f"{path}: the file is empty"
    assert error.path == str(path)


def test_blank_lines_only_is_an_empty_file(write_text, data_config):
    path = write_text("blank.jsonl", "\n\n  \n")
    assert str(encode_error(path, data_config())) == f"{path}: the file is empty"


def test_header_but_no_rows(write_text, data_config):
    path = write_text("header.csv", "title,label_quality,language,category\n")
    error = encode_error(path, data_config())
    assert str(error) == f"{path}: the file has a header but no rows"
    # A failed encoding leaves no cache and no temporary folder behind.
    cache = data_config().cache_dir
    assert not cache.exists() or list(cache.iterdir()) == []


@pytest.mark.parametrize(
    ("header", "missing"), [("title,language", "category"), ("category,language", "title")]
)
def test_missing_required_column(write_text, data_config, header, missing):
    path = write_text("cols.csv", f"{header}\nfoo,bar\n")
    error = encode_error(path, data_config())
    assert f"{path}:1:" in str(error)
    assert f"missing column '{missing}'" in str(error)
    assert error.line == 1


def test_missing_column_in_jsonl_names_first_line(write_jsonl, data_config):
    path = write_jsonl("rows.jsonl", [{"name": "Foo", "category": "A"}])
    error = encode_error(path, data_config())
    assert str(error) == f"{path}:1: missing column 'title' (the file has: name, category)"


def test_malformed_gzip(write_bytes, data_config):
    rng = random.Random(7)
    path = write_bytes("broken.csv.gz", b"\x1f\x8b" + bytes(rng.randrange(256) for _ in range(300)))
    error = encode_error(path, data_config())
    assert str(error).startswith(f"{path}: cannot read the file: not a valid gzip file")


def test_truncated_gzip(write_bytes, data_config):
    text = "title,category\n" + "".join(
        f"Producto numero {i} marca {i * 7919 % 1000},C{i % 9}\n" for i in range(3000)
    )
    packed = gzip.compress(text.encode())
    path = write_bytes("cut.csv.gz", packed[: len(packed) // 2])
    error = encode_error(path, data_config())
    assert str(error).startswith(f"{path}: cannot read the file: not a valid gzip file")
    assert "runcated" in str(error)


def test_invalid_json_line(write_text, data_config):
    lines = [
        json.dumps({"title": "Foo", "category": "A"}),
        json.dumps({"title": "Bar", "category": "B"}),
        '{"title": "Baz", "category": ',
        json.dumps({"title": "Qux", "category": "A"}),
    ]
    path = write_text("rows.jsonl", "\n".join(lines) + "\n")
    error = encode_error(path, data_config())
    assert str(error) == f"{path}:3: invalid JSON: Expecting value"
    assert error.line == 3


def test_invalid_json_on_first_line(write_text, data_config):
    path = write_text("rows.jsonl", '{"title": oops}\n{"title": "Bar", "category": "B"}\n')
    assert str(encode_error(path, data_config())).startswith(f"{path}:1: invalid JSON")


def test_json_line_that_is_not_an_object(write_text, data_config):
    path = write_text("rows.jsonl", '{"title": "Foo", "category": "A"}\n["Bar", "B"]\n')
    assert str(encode_error(path, data_config())) == f"{path}:2: a JSON line must be an object"


@pytest.mark.parametrize(
    ("record", "field", "found"),
    [
        ({"title": 1700, "category": "A"}, "title", "1700"),
        ({"title": "Bar", "category": ["A"]}, "category", '["A"]'),
        ({"title": "Bar", "category": "A", "language": 3}, "language", "3"),
    ],
)
def test_json_field_of_wrong_type(write_jsonl, data_config, record, field, found):
    good = {"title": "Foo", "category": "A", "language": "spanish"}
    path = write_jsonl("rows.jsonl", [good, good, good, record, good])
    error = encode_error(path, data_config())
    assert str(error) == f"{path}:4: field '{field}': expected a string, found {found}"
    assert (error.line, error.field) == (4, field)


def test_csv_row_with_too_many_columns(write_text, data_config):
    path = write_text("rows.csv", "title,category\nFoo,A\nBar,B\nBaz,C,extra\nQux,A\n")
    error = encode_error(path, data_config())
    assert str(error) == f"{path}:4: expected 2 columns, found 3"


def test_csv_row_with_too_few_columns(write_text, data_config):
    path = write_text("rows.csv", "title,category\nFoo,A\nBar\n")
    assert str(encode_error(path, data_config())) == f"{path}:3: expected 2 columns, found 1"


def test_csv_bad_row_deep_in_file_names_its_line(write_text, data_config):
    rows = "".join(f"Producto {i},C{i % 5}\n" for i in range(5000))
    path = write_text("rows.csv", "title,category\n" + rows + "Roto,A,B\n")
    assert str(encode_error(path, data_config())) == f"{path}:5002: expected 2 columns, found 3"


def latin1_rows(suffix: str, bad_index: int, n: int = 1000) -> bytes:
    """`n` rows encoded as Latin-1, all ASCII but row `bad_index` ("Café")."""
    rows = []
    for i in range(n):
        title = "Café" if i == bad_index else f"Producto {i}"
        if suffix == "csv":
            rows.append(f"{title},A")
        else:
            rows.append(json.dumps({"title": title, "category": "A"}, ensure_ascii=False))
    header = ["title,category"] if suffix == "csv" else []
    return ("\n".join(header + rows) + "\n").encode("latin-1")


def test_csv_not_in_utf8_is_a_data_error(write_bytes, data_config):
    path = write_bytes("latin1.csv", latin1_rows("csv", bad_index=1, n=3))
    error = encode_error(path, data_config())
    assert str(error).startswith(f"{path}:")
    assert "not UTF-8 text" in str(error)


def test_csv_not_in_utf8_names_the_bad_line(write_bytes, data_config):
    path = write_bytes("latin1.csv", latin1_rows("csv", bad_index=499))  # line 501
    error = encode_error(path, data_config())
    assert str(error).startswith(f"{path}:501: ")


def test_jsonl_not_in_utf8_is_a_data_error_naming_the_line(write_bytes, data_config):
    path = write_bytes("latin1.jsonl", latin1_rows("jsonl", bad_index=499))  # line 500
    error = encode_error(path, data_config())
    assert str(error).startswith(f"{path}:500: ")


@pytest.mark.parametrize("blank", ["", "   "])
def test_csv_row_with_empty_category(write_text, data_config, blank):
    path = write_text("rows.csv", f"title,category\nFoo,A\nBar,B\nBaz,{blank}\nQux,A\n")
    error = encode_error(path, data_config())
    assert str(error) == f"{path}:4: field 'category': empty category"


def test_jsonl_row_with_missing_category(write_jsonl, data_config):
    path = write_jsonl("rows.jsonl", [{"title": "Foo", "category": "A"}, {"title": "Bar"}])
    assert str(encode_error(path, data_config())) == f"{path}:2: field 'category': empty category"


def test_empty_titles_are_skipped_and_counted(write_text, data_config):
    path = write_text("rows.csv", 'title,category\nFoo,A\n,A\nBar,B\n"   ",B\nBaz,A\n')
    file = encode_file(path, data_config())

    assert file.n_rows == 3
    stats = file.meta["stats"]
    assert stats["rows_read"] == 5
    assert stats["rows"] == 3
    assert stats["empty_titles"] == 2
    assert stats["skipped_lines"] == [3, 5]
    assert file.lines.tolist() == [2, 4, 6]
    assert file.labels.tolist() == [0, 1, 0]


def test_empty_and_null_titles_in_jsonl(write_text, data_config):
    path = write_text(
        "rows.jsonl",
        '{"title": null, "category": "A"}\n{"title": "Foo", "category": "A"}\n'
        '{"category": "B"}\n{"title": "", "category": "B"}\n{"title": "Bar", "category": "B"}\n',
    )
    file = encode_file(path, data_config())
    assert file.n_rows == 2
    assert file.meta["stats"]["empty_titles"] == 3
    assert file.meta["stats"]["skipped_lines"] == [1, 3, 4]
    assert file.lines.tolist() == [2, 5]


def test_skipped_lines_keep_the_first_five(write_csv, data_config):
    rows = [("" if i % 3 == 0 else f"Producto {i}", "A") for i in range(30)]
    file = encode_file(write_csv("rows.csv", ["title", "category"], rows), data_config())
    assert file.meta["stats"]["empty_titles"] == 10
    assert file.meta["stats"]["skipped_lines"] == [2, 5, 8, 11, 14]


def test_empty_category_after_an_empty_title_names_its_own_line(write_text, data_config):
    path = write_text("rows.csv", "title,category\nFoo,A\n,A\nBar,B\nBaz,\n")
    assert str(encode_error(path, data_config())) == f"{path}:5: field 'category': empty category"


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_line_numbers_after_a_blank_line(write_text, data_config, suffix):
    if suffix == "jsonl":
        text = (
            '{"title": "Foo", "category": "A"}\n\n'
            '{"title": "Bar", "category": "B"}\n{"title": "Baz", "category": ""}\n'
        )
    else:
        text = "title,category\nFoo,A\n\nBar,B\nBaz,\n"
    path = write_text(f"rows.{suffix}", text)
    expected_line = 4 if suffix == "jsonl" else 5
    error = encode_error(path, data_config())
    assert str(error) == f"{path}:{expected_line}: field 'category': empty category"


def labelled_rows(n_per_class: int, classes: str) -> list[tuple[str, str]]:
    return [(f"Producto {c} {i}", f"CAT_{c}") for c in classes for i in range(n_per_class)]


@pytest.mark.parametrize("role", ["validation", "test"])
def test_unknown_category_in_a_separate_file(write_csv, data_config, role):
    train = write_csv("train.csv", ["title", "category"], labelled_rows(5, "ABC"))
    other = write_csv(
        f"{role}.csv",
        ["title", "category"],
        [("Foo", "CAT_A"), ("Bar", "CAT_B"), ("Baz", "CAT_Z"), ("Qux", "CAT_Z")],
    )
    with pytest.raises(DataError) as info:
        load_splits(data_config(), train, **{role: other})
    message = str(info.value)
    assert message.startswith(
        f"{other}:4: field 'category': unknown category 'CAT_Z' in the {role} data"
    )
    assert "2 rows" in message
    assert "3 categories" in message


def test_unknown_category_line_accounts_for_skipped_empty_titles(
    write_text, write_csv, data_config
):
    train = write_csv("train.csv", ["title", "category"], labelled_rows(5, "AB"))
    other = write_text("validation.csv", "title,category\nFoo,CAT_A\n,CAT_A\nBar,CAT_Q\n")
    with pytest.raises(DataError, match=rf"^{other}:4: field 'category': unknown category 'CAT_Q'"):
        load_splits(data_config(), train, validation=other)


def test_no_validation_rows(write_csv, data_config):
    train = write_csv("train.csv", ["title", "category"], labelled_rows(5, "AB"))
    with pytest.raises(DataError, match="no validation rows"):
        load_splits(data_config(validation_size=0), train)


@pytest.mark.parametrize(
    "content, problem",
    [
        ('["foo", "bar"]', "token_to_index must be a JSON object of token -> id"),
        ('{"foo": -2}', "token_to_index must be a JSON object of token -> id"),
        ('{"foo": 2', "cannot read the token_to_index file"),
    ],
)
def test_a_bad_token_to_index_file_is_named(write_csv, write_text, data_config, content, problem):
    index = write_text("token_to_index.json", content)
    train = write_csv("train.csv", ["title", "category"], labelled_rows(20, "AB"))
    with pytest.raises(DataError) as error:
        load_splits(data_config(token_to_index=index), train)
    assert str(error.value).startswith(f"{index}: {problem}")

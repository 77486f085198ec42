"""Stream rows of product-title files (CSV or JSON lines, plain or gzip) as Arrow batches.

Column names are configurable, so the same reader serves other short-text tasks. Every
batch comes with the file line of its first row, so later checks can name the line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from prodcat.config import ColumnsConfig
from prodcat.errors import DataError

BLOCK_SIZE = 16 << 20
FIELDS = ("text", "label", "language", "quality", "id", "tokens")


@dataclass
class RowBatch:
    """A batch of rows under prodcat's field names, with the file line of each row."""

    table: pa.Table
    lines: np.ndarray  # (rows,) int64

    def line_of(self, index: int) -> int:
        """File line of the row at `index`."""
        return int(self.lines[index])

    def take(self, positions: np.ndarray) -> RowBatch:
        return RowBatch(self.table.take(pa.array(positions)), self.lines[positions])

    def __len__(self) -> int:
        return self.table.num_rows

    def column(self, field: str) -> pa.ChunkedArray | None:
        return self.table.column(field) if field in self.table.column_names else None


def bundled_sample() -> Path:
    """The sample of real MeLi titles that ships with prodcat (see resources/ATTRIBUTION.md)."""
    return Path(str(resources.files("prodcat") / "resources" / "meli-es-sample.jsonl.gz"))


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open_binary(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def open_text(path: Path) -> io.TextIOBase:
    # utf-8-sig: a byte-order mark (as Excel writes CSV) is not part of the first column's name.
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", errors="replace", newline="")


class _LineTracker(io.RawIOBase):
    """A binary stream that notes its empty lines as Arrow reads it.

    Arrow's readers skip empty lines without saying so; knowing where they are keeps the
    line numbers in error messages true. Finding them costs one vectorised pass per block.
    """

    def __init__(self, stream: io.BufferedIOBase):
        self.stream = stream
        self.position = 0  # bytes read so far
        self.newlines = 0  # newlines read so far
        self.last_newline = -1  # position of the last newline (-1: a virtual one before the file)
        self.empty_lines: list[int] = []  # line numbers, ascending

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if n:
            self._scan(np.frombuffer(data, dtype=np.uint8))
        return n

    def _scan(self, data: np.ndarray) -> None:
        local = np.flatnonzero(data == 10)
        if len(local):
            starts = np.concatenate([[self.last_newline], local[:-1] + self.position])
            gap = local + self.position - starts
            crlf = (gap == 2) & (local >= 1)
            crlf[crlf] = data[local[crlf] - 1] == 13
            empty = np.flatnonzero((gap == 1) | crlf)
            self.empty_lines.extend((self.newlines + empty + 1).tolist())
            self.newlines += len(local)
            self.last_newline = int(local[-1]) + self.position
        self.position += len(data)

    def close(self) -> None:
        self.stream.close()
        super().close()


def detect_format(path: Path) -> Literal["csv", "jsonl"]:
    """Guess the format from the name (`.csv`, `.jsonl`, `.json`, with `.gz`), then content."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffixes and suffixes[-1] in (".csv", ".tsv"):
        return "csv"
    first = _first_line(path)
    return "jsonl" if first.lstrip().startswith("{") else "csv"


def _first_line(path: Path) -> str:
    try:
        with open_text(path) as f:
            for line in f:
                if line.strip():
                    return line
    except (OSError, EOFError, zlib.error) as e:
        raise _read_failure(path, e) from None
    raise DataError("the file is empty", path)


def _read_failure(path: Path, e: Exception) -> DataError:
    reason = str(e) or type(e).__name__
    if _is_gzip(path):
        reason = f"not a valid gzip file ({reason})"
    return DataError(f"cannot read the file: {reason}", path)


# What a file that is not text starts with, and what to do about it.
NOT_TEXT = [
    (b"PK\x03\x04", "a zip archive (unzip it first)"),
    (b"BZh", "compressed with bzip2 (only gzip is read: decompress it first)"),
    (b"\xfd7zXZ\x00", "compressed with xz (only gzip is read: decompress it first)"),
    (b"\x28\xb5\x2f\xfd", "compressed with zstd (only gzip is read: decompress it first)"),
    (b"PAR1", "a Parquet file (prodcat reads CSV or JSON lines)"),
    (b"\xff\xfe", "UTF-16 text (save the file as UTF-8)"),
    (b"\xfe\xff", "UTF-16 text (save the file as UTF-8)"),
]
SNIFF_BYTES = 1 << 16


def check_text_file(path: Path) -> None:
    """Fail with one clear line if the file is an archive, UTF-16 or binary data rather than
    UTF-8 text; looks at the file's first 64 KiB (after gzip)."""
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        with _open_binary(path) as f:
            sample = f.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        return  # a damaged gzip: reading it reports that, with its reason
    for magic, what in NOT_TEXT:
        if head.startswith(magic) or sample.startswith(magic):
            raise DataError(f"not a CSV or JSON-lines file: {what}", path)
    if not sample:
        return
    nul = sample.count(0)
    if nul > len(sample) // 8 and max(sample[0::2].count(0), sample[1::2].count(0)) > nul * 0.9:
        raise DataError("not a CSV or JSON-lines file: UTF-16 text (save the file as UTF-8)", path)
    text = sample.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") + sum(1 for c in text if c < " " and c not in "\t\n\r")
    if bad > max(8, len(text) // 20):
        first = next(
            i for i, c in enumerate(text) if c == "\ufffd" or (c < " " and c not in "\t\n\r")
        )
        raise DataError(
            "not a CSV or JSON-lines file: binary data, not text",
            path,
            line=text.count("\n", 0, first) + 1,
        )


class TableReader:
    """Reads a CSV or JSON-lines file in batches of rows, with bounded memory."""

    def __init__(
        self,
        path: str | Path,
        columns: ColumnsConfig | None = None,
        file_format: Literal["auto", "csv", "jsonl"] = "auto",
        block_size: int = BLOCK_SIZE,
    ):
        self.path = Path(path)
        if self.path.is_dir():
            raise DataError("a folder, not a file", self.path)
        if not self.path.is_file():
            raise DataError("no such file", self.path)
        if self.path.stat().st_size == 0:
            raise DataError("the file is empty", self.path)
        check_text_file(self.path)
        self.columns = columns or ColumnsConfig()
        self.format = detect_format(self.path) if file_format == "auto" else file_format
        self.block_size = block_size
        self.delimiter = "\t" if ".tsv" in [x.lower() for x in self.path.suffixes] else ","
        self.file_columns = self._read_header()
        # prodcat field -> file column, for the fields this file has
        self.fields = {
            field: getattr(self.columns, field)
            for field in FIELDS
            if getattr(self.columns, field) in self.file_columns
        }

    @property
    def header_lines(self) -> int:
        return 1 if self.format == "csv" else 0

    def require(self, *fields: str) -> None:
        """Fail with a clear message when the file lacks a column the task needs."""
        for field in fields:
            if field not in self.fields:
                name = getattr(self.columns, field)
                raise DataError(
                    f"missing column '{name}' (the file has: {', '.join(self.file_columns)})"
                    + self._delimiter_hint(),
                    self.path,
                    line=1,
                )

    def _delimiter_hint(self) -> str:
        """Why a one-column header may be the wrong separator, e.g. `title;category`."""
        if self.format != "csv" or len(self.file_columns) != 1:
            return ""
        names = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "bars"}
        for separator, name in names.items():
            if separator != self.delimiter and separator in self.file_columns[0]:
                return (
                    f"; the header is separated by {name}, but prodcat reads a "
                    f"{'.tsv' if self.delimiter == chr(9) else '.csv'} file as separated by "
                    f"{names[self.delimiter]}"
                )
        return ""

    def _read_header(self) -> list[str]:
        first = _first_line(self.path)
        if self.format == "csv":
            columns = next(csv.reader([first], delimiter=self.delimiter))
            twice = sorted({c for c in columns if columns.count(c) > 1})
            if twice:
                raise DataError(
                    f"column '{twice[0]}' appears more than once in the header", self.path, line=1
                )
            return columns
        if first.lstrip().startswith("["):
            raise DataError(
                "a JSON array; prodcat reads JSON lines (one object per line)", self.path, line=1
            )
        try:
            obj = json.loads(first)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg}", self.path, line=1) from None
        if not isinstance(obj, dict):
            raise DataError("a JSON line must be an object", self.path, line=1)
        return list(obj)

    def batches(self) -> Iterator[RowBatch]:
        """Yield the file's rows in batches, under prodcat's field names."""
        self._next_line = 1  # the header's line, or the first row's
        self._empty_seen = 0
        first = True
        line = 1
        try:
            for record_batch in self._arrow_batches():
                record_batch.validate(full=True)  # Arrow's JSON reader does not check UTF-8
                table = pa.Table.from_batches([record_batch])
                table = table.rename_columns([self._field_of(c) for c in table.column_names])
                lines = self._number_lines(table.num_rows + (self.header_lines if first else 0))
                if first:
                    lines = lines[self.header_lines :]
                    first = False
                if len(lines):
                    line = int(lines[0])
                batch = RowBatch(table, lines)
                self._check_rows(batch)
                yield batch
        except pa.ArrowInvalid as e:
            raise self._explain(e, line) from None
        except (OSError, EOFError, zlib.error) as e:
            raise _read_failure(self.path, e) from None

    def _check_rows(self, batch: RowBatch) -> None:
        """Values no title file should hold: NUL bytes, and a CSV's header line repeated (files
        joined together with their headers), which would make a category of the column name."""
        for field in ("text", "label"):
            column = batch.column(field)
            if column is None:
                continue
            nul = pc.fill_null(pc.match_substring(column, "\x00"), False)
            if pc.any(nul).as_py():
                first = int(np.flatnonzero(nul.to_numpy(zero_copy_only=False))[0])
                raise DataError(
                    "a NUL byte (binary data in a text file)",
                    self.path,
                    line=batch.line_of(first),
                    field=self.fields[field],
                )
        text, label = batch.column("text"), batch.column("label")
        if self.format != "csv" or text is None:
            return
        again = pc.equal(text, self.fields["text"])
        if label is not None:
            again = pc.and_(again, pc.equal(label, self.fields["label"]))
        again = pc.fill_null(again, False)
        if pc.any(again).as_py():
            first = int(np.flatnonzero(again.to_numpy(zero_copy_only=False))[0])
            raise DataError(
                "the header line again (were files joined with their headers?)",
                self.path,
                line=batch.line_of(first),
            )

    def _number_lines(self, n: int) -> np.ndarray:
        """File lines of the next `n` rows, stepping over the empty lines Arrow skipped."""
        lines = self._next_line + np.arange(n, dtype=np.int64)
        empty = self._tracker.empty_lines
        while n and self._empty_seen < len(empty) and empty[self._empty_seen] <= lines[-1]:
            lines[lines >= empty[self._empty_seen]] += 1
            self._empty_seen += 1
        if n:
            self._next_line = int(lines[-1]) + 1
        return lines

    def _field_of(self, column: str) -> str:
        for field, name in self.fields.items():
            if name == column:
                return field
        return column

    def _arrow_batches(self) -> Iterator[pa.RecordBatch]:
        wanted = list(self.fields.values())
        self._raw = open(self.path, "rb")
        self._tracker = _LineTracker(
            gzip.GzipFile(fileobj=self._raw, mode="rb") if _is_gzip(self.path) else self._raw
        )
        stream = pa.PythonFile(io.BufferedReader(self._tracker, 1 << 20), mode="r")
        if self.format == "csv":
            self._bad_row: pacsv.InvalidRow | None = None

            def on_invalid(row: pacsv.InvalidRow) -> str:
                self._bad_row = row
                return "error"

            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(block_size=self.block_size, use_threads=False),
                parse_options=pacsv.ParseOptions(
                    delimiter=self.delimiter,
                    newlines_in_values=False,
                    invalid_row_handler=on_invalid,
                ),
                convert_options=pacsv.ConvertOptions(
                    include_columns=wanted,
                    column_types={c: pa.string() for c in wanted},
                    strings_can_be_null=False,
                ),
            )
        else:
            types = {name: pa.string() for field, name in self.fields.items() if field != "tokens"}
            if "tokens" in self.fields:
                types[self.fields["tokens"]] = pa.list_(pa.int64())
            reader = pajson.open_json(
                stream,
                read_options=pajson.ReadOptions(block_size=self.block_size, use_threads=False),
                parse_options=pajson.ParseOptions(
                    explicit_schema=pa.schema(types), unexpected_field_behavior="ignore"
                ),
            )
        try:
            with reader:
                yield from reader
        finally:
            self._raw.close()

    def bytes_read(self) -> int:
        """Bytes of the file (compressed, if it is) consumed so far, for progress bars."""
        raw = getattr(self, "_raw", None)
        return self.path.stat().st_size if raw is None or raw.closed else raw.tell()

    def _explain(self, error: pa.ArrowInvalid, batch_line: int) -> DataError:
        """Turn Arrow's parse error into one that names the line and the problem."""
        bad_text = self._find_bad_encoding_line()
        if bad_text is not None:
            return bad_text
        if self.format == "csv":
            bad = getattr(self, "_bad_row", None)
            if bad is not None:
                line = bad.number if bad.number is not None else batch_line
                quote = " (an unclosed quote?)" if (bad.text or "").count('"') % 2 else ""
                return DataError(
                    f"expected {bad.expected_columns} columns, found {bad.actual_columns}{quote}",
                    self.path,
                    line=line,
                )
            return DataError(f"cannot parse CSV: {error}", self.path, line=batch_line)
        return self._find_bad_json_line() or DataError(
            f"cannot parse JSON: {error}", self.path, line=batch_line
        )

    def _find_bad_encoding_line(self) -> DataError | None:
        """The first line that is not UTF-8 (only on the error path: it reads the whole file)."""
        with _open_binary(self.path) as f:
            for number, raw in enumerate(f, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    return DataError(
                        f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}; "
                        "save the file as UTF-8)",
                        self.path,
                        line=number,
                    )
        return None

    def _find_bad_json_line(self) -> DataError | None:
        # Arrow reports the block, not the line: on the (rare) error path, look again line by line.
        with open_text(self.path) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    return DataError(f"invalid JSON: {e.msg}", self.path, line=number)
                if not isinstance(obj, dict):
                    return DataError("a JSON line must be an object", self.path, line=number)
                for field, name in self.fields.items():
                    value = obj.get(name)
                    expected = list if field == "tokens" else str
                    if value is not None and not isinstance(value, expected):
                        kind = "a list of token ids" if field == "tokens" else "a string"
                        return DataError(
                            f"expected {kind}, found {json.dumps(value)[:40]}",
                            self.path,
                            line=number,
                            field=name,
                        )
        return None

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
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
from pydantic import BaseModel, ConfigDict

from prodcat.errors import DataError

BLOCK_SIZE = 16 << 20
FIELDS = ("text", "label", "language", "quality", "id", "tokens")


class ColumnsConfig(BaseModel):
    """Names of the columns prodcat reads; None where a file has no such column."""

    model_config = ConfigDict(extra="forbid")

    text: str = "title"
    label: str = "category"
    language: str = "language"
    quality: str = "label_quality"
    id: str = "id"
    # The course's token ids (`data`), used only with a `token_to_index` file.
    tokens: str = "data"


@dataclass
class RowBatch:
    """A batch of rows under prodcat's field names, with the file line of its first row."""

    table: pa.Table
    first_line: int
    kept: np.ndarray | None = None  # positions kept from the batch as read, if rows were dropped

    def line_of(self, index: int) -> int:
        """File line of the row at `index`."""
        return self.first_line + int(self.kept[index] if self.kept is not None else index)

    def __len__(self) -> int:
        return self.table.num_rows

    def column(self, field: str) -> pa.ChunkedArray | None:
        return self.table.column(field) if field in self.table.column_names else None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open_text(path: Path) -> io.TextIOBase:
    if _is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace", newline="")


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
        with _open_text(path) as f:
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
        if not self.path.is_file():
            raise DataError("no such file", self.path)
        if self.path.stat().st_size == 0:
            raise DataError("the file is empty", self.path)
        self.columns = columns or ColumnsConfig()
        self.format = detect_format(self.path) if file_format == "auto" else file_format
        self.block_size = block_size
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

    def has(self, field: str) -> bool:
        return field in self.fields

    def require(self, *fields: str) -> None:
        """Fail with a clear message when the file lacks a column the task needs."""
        for field in fields:
            if field not in self.fields:
                name = getattr(self.columns, field)
                raise DataError(
                    f"missing column '{name}' (the file has: {', '.join(self.file_columns)})",
                    self.path,
                    line=1,
                )

    def _read_header(self) -> list[str]:
        first = _first_line(self.path)
        if self.format == "csv":
            return next(csv.reader([first]))
        try:
            obj = json.loads(first)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg}", self.path, line=1) from None
        if not isinstance(obj, dict):
            raise DataError("a JSON line must be an object", self.path, line=1)
        return list(obj)

    def batches(self) -> Iterator[RowBatch]:
        """Yield the file's rows in batches, under prodcat's field names."""
        line = 1 + self.header_lines
        try:
            for record_batch in self._arrow_batches():
                table = pa.Table.from_batches([record_batch])
                table = table.rename_columns(
                    [self._field_of(c) for c in table.column_names]
                )
                yield RowBatch(table, line)
                line += table.num_rows
        except pa.ArrowInvalid as e:
            raise self._explain(e, line) from None
        except (OSError, EOFError, zlib.error) as e:
            raise _read_failure(self.path, e) from None

    def _field_of(self, column: str) -> str:
        for field, name in self.fields.items():
            if name == column:
                return field
        return column

    def _arrow_batches(self) -> Iterator[pa.RecordBatch]:
        wanted = list(self.fields.values())
        self._raw = open(self.path, "rb")
        stream = pa.PythonFile(self._raw, mode="r")
        if _is_gzip(self.path):
            stream = pa.CompressedInputStream(stream, "gzip")
        if self.format == "csv":
            self._bad_row: pacsv.InvalidRow | None = None

            def on_invalid(row: pacsv.InvalidRow) -> str:
                self._bad_row = row
                return "error"

            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(block_size=self.block_size, use_threads=False),
                parse_options=pacsv.ParseOptions(
                    newlines_in_values=False, invalid_row_handler=on_invalid
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
        if self.format == "csv":
            bad = getattr(self, "_bad_row", None)
            if bad is not None:
                line = bad.number if bad.number is not None else batch_line
                return DataError(
                    f"expected {bad.expected_columns} columns, found {bad.actual_columns}",
                    self.path,
                    line=line,
                )
            return DataError(f"cannot parse CSV: {error}", self.path, line=batch_line)
        return self._find_bad_json_line() or DataError(
            f"cannot parse JSON: {error}", self.path, line=batch_line
        )

    def _find_bad_json_line(self) -> DataError | None:
        # Arrow reports the block, not the line: on the (rare) error path, look again line by line.
        with _open_text(self.path) as f:
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

"""`prodcat predict`: titles in (arguments, a title file, stdin), top-k predictions out.

Input is read and written batch by batch, so memory stays flat on a file of any size:

- a title file goes through the data layer (`TableReader`: CSV or JSON lines, plain or gzip,
  the model's column names), so the challenge's `test.csv` (`id,title,language`) works as is;
- `-` reads stdin: JSON lines when its first line starts with `{`, CSV when its first line
  is a header naming the title column, otherwise one title per line. CSV and JSON lines are
  copied to a temporary file first (the data layer reads files), plain lines are streamed.

Each output row keeps the input's `id`, or its `line` (the file line, or the argument's
position) when there is none. Formats: `csv` (`id|line,title,category_1,probability_1,...`),
`jsonl` (one object per title) and `submission` (the challenge's `id,category`).

Probabilities are the model's calibrated ones. With a minimum confidence, a title whose top
probability is below it is undecided (for a person to label): its categories are written
empty (csv, submission) or null (jsonl), its probabilities kept.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from prodcat.config import DataConfig
from prodcat.errors import ConfigError, DataError, ProdcatError

if TYPE_CHECKING:
    from prodcat.serving.onnx_runtime import OnnxClassifier
    from prodcat.serving.predictor import Classifier

Format = Literal["csv", "jsonl", "submission"]
FORMATS: tuple[str, ...] = ("csv", "jsonl", "submission")
STDIN = "<stdin>"


@dataclass
class TitleBatch:
    """Titles to predict and the key of each: its id, or its line (as text)."""

    keys: list[str]
    titles: list[str]


class TitleSource:
    """Titles in batches; `key_name` says whether keys are ids or lines."""

    key_name: str = "line"

    def batches(self, size: int) -> Iterator[TitleBatch]:
        raise NotImplementedError


class ListSource(TitleSource):
    """Titles given on the command line; the key is the argument's position (from 1)."""

    def __init__(self, titles: Sequence[str]):
        self.titles = list(titles)

    def batches(self, size: int) -> Iterator[TitleBatch]:
        for start in range(0, len(self.titles), size):
            chunk = self.titles[start : start + size]
            keys = [str(start + i + 1) for i in range(len(chunk))]
            yield TitleBatch(keys, chunk)


class LineSource(TitleSource):
    """One title per line of a text stream; empty lines are skipped, lines count from 1."""

    def __init__(self, lines: Iterator[bytes], name: str = STDIN, first_line: int = 1):
        self.lines = lines
        self.name = name
        self.first_line = first_line

    def batches(self, size: int) -> Iterator[TitleBatch]:
        batch = TitleBatch([], [])
        for number, raw in enumerate(self.lines, start=self.first_line):
            try:
                title = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})",
                    self.name,
                    line=number,
                ) from None
            if not title.strip():
                continue
            batch.keys.append(str(number))
            batch.titles.append(title)
            if len(batch.titles) == size:
                yield batch
                batch = TitleBatch([], [])
        if batch.titles:
            yield batch


class FileSource(TitleSource):
    """A title file read by the data layer, with the model's column names and format."""

    def __init__(self, path: Path, data: DataConfig, shown_name: str | None = None):
        from prodcat.data.readers import TableReader

        self.shown_name = shown_name
        with self._named_errors():
            self.reader = TableReader(path, data.columns, data.format)
            self.reader.require("text")
        self.key_name = "id" if "id" in self.reader.fields else "line"

    @contextmanager
    def _named_errors(self) -> Iterator[None]:
        # A copy of stdin is a temporary file: name the stream, not the copy, in errors.
        try:
            yield
        except DataError as e:
            if self.shown_name is None:
                raise
            raise DataError(e.problem, self.shown_name, e.line, e.field) from None

    def batches(self, size: int) -> Iterator[TitleBatch]:
        with self._named_errors():
            for rows in self.reader.batches():
                titles = [t or "" for t in rows.column("text").to_pylist()]
                ids = rows.column("id")
                if ids is None:
                    keys = [str(line) for line in rows.lines.tolist()]
                else:
                    keys = ["" if k is None else k for k in ids.to_pylist()]
                for start in range(0, len(titles), size):
                    yield TitleBatch(keys[start : start + size], titles[start : start + size])


@contextmanager
def open_titles(
    titles: Sequence[str], input: str | None, data: DataConfig
) -> Iterator[TitleSource]:
    """The titles to predict: given ones, a file, or stdin (`-`); see the module's doc."""
    if titles and input is not None:
        raise ConfigError("give titles or --input, not both")
    if titles:
        yield ListSource(titles)
    elif input is None:
        raise ConfigError("nothing to predict: give titles, or --input FILE (- for stdin)")
    elif input != "-":
        yield FileSource(Path(input), data)
    else:
        with _stdin_source(sys.stdin.buffer, data) as source:
            yield source


@contextmanager
def _stdin_source(stream: io.BufferedIOBase, data: DataConfig) -> Iterator[TitleSource]:
    head: list[bytes] = []
    for raw in stream:
        head.append(raw)
        if raw.strip():
            break
    first = head[-1].decode("utf-8", errors="replace").strip() if head else ""
    if first.startswith("{"):
        suffix = ".jsonl"
    elif first and data.columns.text in next(csv.reader([first])):
        suffix = ".csv"
    else:
        yield LineSource(_chain(head, stream))
        return
    with tempfile.NamedTemporaryFile("wb", suffix=suffix, delete=False) as copy:
        copy.writelines(head)
        shutil.copyfileobj(stream, copy, 1 << 20)
    try:
        yield FileSource(Path(copy.name), data, shown_name=STDIN)
    finally:
        os.unlink(copy.name)


def _chain(head: list[bytes], rest: io.BufferedIOBase) -> Iterator[bytes]:
    yield from head
    yield from rest


class PredictionWriter:
    """Writes predictions as CSV, JSON lines or the challenge's submission file."""

    def __init__(self, stream: TextIO, fmt: Format, key_name: str, k: int):
        self.stream = stream
        self.format = fmt
        self.key_name = key_name
        self.csv = csv.writer(stream, lineterminator="\n")
        if fmt == "csv":
            ranks = [(f"category_{i}", f"probability_{i}") for i in range(1, k + 1)]
            self.csv.writerow([key_name, "title", *(name for pair in ranks for name in pair)])
        elif fmt == "submission":
            self.csv.writerow(["id", "category"])

    def write(
        self,
        batch: TitleBatch,
        categories: list[list[str | None]],
        probabilities: list[list[float]],
    ) -> None:
        """One row per title: its key, then its categories and probabilities, best first
        (a None category, undecided, is written empty, or null in JSON lines)."""
        if self.format == "submission":
            self.csv.writerows(zip(batch.keys, (best[0] for best in categories)))
        elif self.format == "csv":
            self.csv.writerows(
                [key, title, *(v for pair in zip(cats, (f"{p:.6f}" for p in probs)) for v in pair)]
                for key, title, cats, probs in zip(
                    batch.keys, batch.titles, categories, probabilities
                )
            )
        else:
            key = (lambda k: k) if self.key_name == "id" else int
            self.stream.writelines(
                json.dumps(
                    {
                        self.key_name: key(k),
                        "title": title,
                        "categories": [
                            {"category": c, "probability": round(p, 6)} for c, p in zip(cats, probs)
                        ],
                    },
                    ensure_ascii=False,
                )
                + "\n"
                for k, title, cats, probs in zip(
                    batch.keys, batch.titles, categories, probabilities
                )
            )


class ProgressLine:
    """Titles done and titles/s on one line of stderr, redrawn at most twice a second; only
    when stderr is a terminal, so logs and pipes get nothing."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.5):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.interval = interval
        self.started = time.perf_counter()
        self.drawn = 0.0
        self.done = 0

    def update(self, done: int, final: bool = False) -> None:
        self.done = done
        now = time.perf_counter()
        if not self.enabled or (not final and now - self.drawn < self.interval):
            return
        self.drawn = now
        rate = done / max(now - self.started, 1e-9)
        end = "\n" if final else ""
        # (No share of the file: Arrow reads blocks well ahead of the predictions.)
        self.stream.write(f"\r{done:,} titles  {rate:,.0f} titles/s\x1b[K{end}")
        self.stream.flush()


def check_options(
    top_k: int, batch_size: int, fmt: str, min_confidence: float | None = None
) -> None:
    """Option mistakes, found before the model is loaded."""
    if min_confidence is not None and not 0 <= min_confidence <= 1:
        raise ConfigError(f"--min-confidence must be between 0 and 1, got {min_confidence}")
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if fmt == "submission" and top_k != 1:
        raise ConfigError("--format submission writes one category per id: drop --top-k")


def predict_titles(
    classifier: Classifier | OnnxClassifier,
    source: TitleSource,
    writer: PredictionWriter,
    top_k: int,
    batch_size: int,
    progress: ProgressLine | None = None,
    min_confidence: float | None = None,
) -> int:
    """Predict every title of `source` batch by batch into `writer`; return the count.

    A title whose top probability is below `min_confidence` gets None for every category
    (undecided), its probabilities kept."""
    names = classifier.labels.names
    done = 0
    for batch in source.batches(batch_size):
        indices, probabilities = classifier.top_k(batch.titles, top_k, batch_size)
        categories: list[list[str | None]] = [[names[i] for i in row] for row in indices.tolist()]
        if min_confidence is not None:
            for row, top in zip(categories, probabilities[:, 0].tolist()):
                if top < min_confidence:
                    row[:] = [None] * len(row)
        writer.write(batch, categories, probabilities.tolist())
        done += len(batch.titles)
        if progress is not None:
            progress.update(done)
    if progress is not None:
        progress.update(done, final=True)
    return done


@contextmanager
def open_output(output: str | None) -> Iterator[TextIO]:
    """stdout for None or `-`; else a file that appears (whole) only once writing succeeded."""
    if output is None or output == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(output)
    if path.is_dir():
        raise ProdcatError(f"{path}: is a folder; --output needs a file name")
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "w", encoding="utf-8", newline="") as stream:
            yield stream
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def run_predict(
    model: Path | str,
    titles: Sequence[str],
    input: str | None,
    output: str | None,
    top_k: int,
    batch_size: int,
    fmt: str,
    runtime: str = "torch",
    onnx_path: Path | None = None,
    min_confidence: float | None = None,
) -> int:
    """`prodcat predict`: check the options and the input, load the model, stream predictions.

    `model`: a folder or an MLflow URI; `runtime`: torch, or onnx for its exported graph
    (`onnx_path`, default the folder's model.onnx), which imports no torch;
    `min_confidence`: titles less sure than this are written undecided."""
    from prodcat.config import load_config
    from prodcat.serving.location import local_model_folder
    from prodcat.serving.runtimes import RUNTIMES, load_classifier

    check_options(top_k, batch_size, fmt, min_confidence)
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}, got '{runtime}'")
    model = local_model_folder(model)
    if not (model / "config.yaml").is_file():
        raise ProdcatError(f"{model}: not a model folder (no config.yaml)")
    # The data section alone (no family, so no torch yet): input errors come fast.
    data = load_config(model / "config.yaml", check_family=False).data
    with open_titles(titles, input, data) as source:
        if fmt == "submission" and source.key_name != "id":
            raise ConfigError(
                f"--format submission needs an '{data.columns.id}' column in the input "
                "(the challenge's test.csv has one)"
            )
        classifier = load_classifier(model, runtime, onnx_path)
        k = min(top_k, len(classifier.labels))
        with open_output(output) as stream:
            writer = PredictionWriter(stream, fmt, source.key_name, k)  # type: ignore[arg-type]
            return predict_titles(
                classifier, source, writer, top_k, batch_size, ProgressLine(), min_confidence
            )

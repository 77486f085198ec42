"""Encode a title file once into an on-disk cache of fixed-width token ids, memory-mapped.

A cache folder holds one row per kept title:

- `tokens.bin`  (rows, max_tokens) uint32 ids into `tokens.txt` (0 = [PAD], 1 = [UNK])
- `lengths.bin` (rows,) uint16 tokens per title, after truncation
- `labels.bin`  (rows,) int32 ids into `labels.txt`, -1 where the file has no labels
- `languages.bin`, `qualities.bin` (rows,) int8 ids into the names in `meta.json`, -1 if none
- `lines.bin`   (rows,) int64 line of the row in the source file, for error messages
- `token_counts.npy` occurrences of each token in the whole file; `meta.json` the rest

The file is read and cut into pieces once, by the run's featurizer (`Featurizer.pieces`).
A piece passes through these ids between the file and the model, each for a reason:

1. chunk codes: the tokenizer works on each chunk's distinct tokens (vectorised);
2. provisional ids, handed out as pieces first appear: the file is streamed, so no final
   numbering exists yet; when more than `cache_vocab` distinct pieces are tracked, the rarer
   half is forgotten (they become [UNK] unless they come back), which bounds memory however
   many brands and model codes a file holds;
3. the cache's ids, by frequency, written by a last pass in place, block by block: it is
   where forgotten pieces become [UNK], and it makes `tokens.txt` a frequency list;
4. model ids: `Featurizer.ids` maps the cache's piece list once per split (`Split.remap`).

The cache is keyed on the file (path, size, modification time), the columns and the
featurizer's `cache_spec`, so a second run over the same file and settings reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prodcat.atomic import fsync_dir, fsync_file
from prodcat.config import DataConfig
from prodcat.data.readers import RowBatch, TableReader
from prodcat.data.text import TokenizedChunk, WordPieces, padded_ids
from prodcat.data.vocab import PAD, UNK
from prodcat.errors import DataError

CACHE_VERSION = 2
ARRAYS = {
    "tokens": np.uint32,
    "lengths": np.uint16,
    "labels": np.int32,
    "languages": np.int8,
    "qualities": np.int8,
    "lines": np.int64,
}
BLOCK_ROWS = 1 << 17  # 16 MiB of token ids at 32 per title

log = logging.getLogger(__name__)


class Pieces(Protocol):
    """What cuts a file's titles into the cache's pieces: every featurizer, or `WordPieces`."""

    max_tokens: int

    def cache_spec(self) -> dict[str, Any]: ...

    def pieces(self, titles: pa.Array | list[str]) -> TokenizedChunk: ...


def default_cache_root() -> Path:
    """`$PRODCAT_CACHE`, else `~/.cache/prodcat`."""
    env = os.environ.get("PRODCAT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "prodcat"


def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_key(path: Path, data_cfg: DataConfig, featurizer: Pieces) -> str:
    """A digest of the file's identity and every setting that changes the encoded ids."""
    settings = {
        "version": CACHE_VERSION,
        "file": _file_identity(path),
        "format": data_cfg.format,
        "columns": data_cfg.columns.model_dump(),
        "featurizer": featurizer.cache_spec(),
        "cache_vocab": data_cfg.cache_vocab,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class EncodeStats:
    """What encoding a file read, kept and dropped."""

    rows_read: int = 0
    rows: int = 0
    empty_titles: int = 0
    titles_without_tokens: int = 0
    truncated_titles: int = 0
    tokens_pruned: int = 0
    skipped_lines: list[int] = field(default_factory=list)  # first few, for the summary


class EncodedFile:
    """A cache folder opened read-only; arrays are memory-mapped."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta: dict[str, Any] = json.loads((self.folder / "meta.json").read_text())
        self.n_rows: int = self.meta["rows"]
        self.max_tokens: int = self.meta["max_tokens"]

    def _array(self, name: str) -> np.ndarray:
        shape = (self.n_rows, self.max_tokens) if name == "tokens" else (self.n_rows,)
        if self.n_rows == 0:
            return np.zeros(shape, dtype=ARRAYS[name])
        return np.memmap(self.folder / f"{name}.bin", dtype=ARRAYS[name], mode="r", shape=shape)

    @cached_property
    def tokens(self) -> np.ndarray:
        return self._array("tokens")

    @cached_property
    def lengths(self) -> np.ndarray:
        return self._array("lengths")

    @cached_property
    def labels(self) -> np.ndarray:
        return self._array("labels")

    @cached_property
    def languages(self) -> np.ndarray:
        return self._array("languages")

    @cached_property
    def qualities(self) -> np.ndarray:
        return self._array("qualities")

    @cached_property
    def lines(self) -> np.ndarray:
        return self._array("lines")

    @cached_property
    def vocabulary(self) -> list[str]:
        return (self.folder / "tokens.txt").read_text(encoding="utf-8").split("\n")

    @cached_property
    def token_counts(self) -> np.ndarray:
        return np.load(self.folder / "token_counts.npy")

    @cached_property
    def label_names(self) -> list[str]:
        text = (self.folder / "labels.txt").read_text(encoding="utf-8")
        return text.split("\n") if text else []

    @property
    def source(self) -> str:
        return self.meta["source"]["path"]

    @property
    def has_labels(self) -> bool:
        return self.meta["fields"].get("label") is not None

    def __len__(self) -> int:
        return self.n_rows


class _Appender:
    """Raw binary columns written batch by batch, so memory stays bounded."""

    def __init__(self, folder: Path):
        self.files = {name: open(folder / f"{name}.bin", "wb") for name in ARRAYS}

    def write(self, **arrays: np.ndarray) -> None:
        for name, values in arrays.items():
            self.files[name].write(np.ascontiguousarray(values, dtype=ARRAYS[name]).tobytes())

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class _TokenTable:
    """Token -> provisional id with counts; forgets the rarer half when it grows too large."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.ids: dict[str, int] = {}
        self.names: list[str | None] = [PAD, UNK]
        self.counts = np.zeros(1 << 16, dtype=np.int64)
        self.pruned = 0

    def add(self, vocabulary: list[str], counts: np.ndarray) -> np.ndarray:
        """Ids of a chunk's distinct tokens, counting their occurrences.

        Entries with no occurrence (normalised away) are not tracked; their id is [UNK].
        """
        ids = np.ones(len(vocabulary), dtype=np.int64)
        table, names = self.ids, self.names
        for i in np.flatnonzero(counts).tolist():
            token = vocabulary[i]
            pid = table.get(token)
            if pid is None:
                pid = table[token] = len(names)
                names.append(token)
            ids[i] = pid
        if len(names) > len(self.counts):
            grown = np.zeros(max(len(names), 2 * len(self.counts)), dtype=np.int64)
            grown[: len(self.counts)] = self.counts
            self.counts = grown
        np.add.at(self.counts, ids, counts)
        if len(table) > self.capacity:
            self._prune()
        return ids

    def _prune(self) -> None:
        live = np.fromiter(self.ids.values(), dtype=np.int64, count=len(self.ids))
        order = np.argsort(self.counts[live], kind="stable")
        forget = live[order[: len(live) - self.capacity // 2]]
        for pid in forget.tolist():
            del self.ids[self.names[pid]]
            self.names[pid] = None
        self.pruned += len(forget)

    def final_ids(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Renumbering by frequency: provisional id -> final id, final names and counts."""
        live = np.fromiter(self.ids.values(), dtype=np.int64, count=len(self.ids))
        counts = self.counts[live]
        order = np.lexsort((live, -counts))
        live = live[order]
        remap = np.ones(len(self.names), dtype=np.uint32)  # forgotten -> [UNK]
        remap[0] = 0
        remap[live] = np.arange(2, 2 + len(live), dtype=np.uint32)
        names = [PAD, UNK] + [self.names[pid] for pid in live.tolist()]
        final_counts = np.concatenate([[0, 0], counts[order]]).astype(np.int64)
        return remap, names, final_counts


class _Codes:
    """First-come ids of small categorical columns (labels, languages, qualities)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def encode(self, column: pa.ChunkedArray) -> np.ndarray:
        encoded = pc.dictionary_encode(column).combine_chunks()
        local = np.array(
            [self.ids.setdefault(name, len(self.ids)) for name in encoded.dictionary.to_pylist()],
            dtype=np.int64,
        )
        return local[encoded.indices.to_numpy(zero_copy_only=False)]

    @property
    def names(self) -> list[str]:
        return list(self.ids)


def blank_titles(column: pa.ChunkedArray | None, n: int) -> np.ndarray:
    """True where a title (or label) is missing or only whitespace: such rows are skipped."""
    if column is None:
        return np.ones(n, dtype=bool)
    text = pc.utf8_trim_whitespace(pc.fill_null(column, ""))
    return pc.equal(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)


def encode_file(
    path: str | Path,
    data_cfg: DataConfig,
    featurizer: Pieces | None = None,
    cache_root: str | Path | None = None,
    *,
    require_labels: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> EncodedFile:
    """Encode `path` into its cache folder (or reuse the folder made earlier); return it.

    Titles are cut by `featurizer`'s `pieces` (default: prodcat's words, `data_cfg`'s).
    `progress(bytes_done, bytes_total)` is called after each batch of rows.
    """
    featurizer = featurizer or WordPieces(data_cfg.tokenizer, data_cfg.max_tokens)
    path = Path(path)
    reader = TableReader(path, data_cfg.columns, data_cfg.format)
    reader.require("text")
    if require_labels:
        reader.require("label")
    root = Path(cache_root or data_cfg.cache_dir or default_cache_root())
    folder = root / f"{path.name}-{cache_key(path, data_cfg, featurizer)}"
    if (folder / "meta.json").is_file():
        return EncodedFile(folder)
    root.mkdir(parents=True, exist_ok=True)
    # One process encodes a file at a time; the others wait, then reuse its cache.
    with _cache_lock(root / f".{folder.name}.lock"):
        if (folder / "meta.json").is_file():
            return EncodedFile(folder)
        for stale in root.glob(f".{folder.name}.*.tmp"):  # left by a killed process
            shutil.rmtree(stale, ignore_errors=True)
        work = root / f".{folder.name}.{os.getpid()}.tmp"
        work.mkdir(parents=True)
        try:
            _encode_into(work, reader, data_cfg, featurizer, progress)
            _publish(work, folder)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return EncodedFile(folder)


@contextmanager
def _cache_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (flock: released by the kernel if the process dies); the
    lock file is removed when released, so the cache folder holds only caches."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename alone keeps the cache whole
        yield
        return
    while True:
        f = open(path, "a")
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another process that is encoding the same file")
                fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some NFS): the rename still protects
            f.close()
            yield
            return
        try:
            locked = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            locked = False
        if locked:
            break
        f.close()  # the holder removed this file as it finished: lock the next one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        f.close()


def _publish(work: Path, folder: Path) -> None:
    """Rename the finished `work` folder to `folder`, its files on disk first: a cache
    folder that exists is whole (a killed run leaves only a temporary folder)."""
    for file in work.iterdir():
        fsync_file(file)
    if folder.exists():  # no meta.json: a damaged leftover, moved aside in one rename
        old = folder.with_name(f".{folder.name}.{os.getpid()}.old.tmp")
        os.replace(folder, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(work, folder)
    fsync_dir(folder.parent)


def _encode_into(
    work: Path,
    reader: TableReader,
    data_cfg: DataConfig,
    featurizer: Pieces,
    progress,
) -> None:
    width = featurizer.max_tokens
    stats = EncodeStats()
    table = _TokenTable(data_cfg.cache_vocab)
    labels, languages, qualities = _Codes(), _Codes(), _Codes()
    out = _Appender(work)
    total_bytes = reader.path.stat().st_size

    def write(batch: RowBatch, label_ids: np.ndarray, tokenized: Future) -> None:
        n = len(batch)
        chunk = tokenized.result()
        chunk_counts = np.bincount(chunk.codes, minlength=len(chunk.vocabulary))
        ids = table.add(chunk.vocabulary, chunk_counts)[chunk.codes]
        row = chunk.row
        matrix, lengths = padded_ids(ids, row, n, width, np.uint32)
        stats.truncated_titles += int((lengths > width).sum())
        stats.titles_without_tokens += int((lengths == 0).sum())
        out.write(
            tokens=matrix,
            lengths=np.minimum(lengths, width),
            labels=label_ids,
            languages=_optional_codes(batch, "language", languages),
            qualities=_optional_codes(batch, "quality", qualities),
            lines=batch.lines,
        )
        stats.rows += n
        if progress:
            progress(min(reader.bytes_read(), total_bytes), total_bytes)

    # Tokenising a batch (Arrow kernels, which release the GIL) runs on a second thread
    # while this one parses the next batch and writes the previous one: the two cores work.
    pending = None
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            for batch in reader.batches():
                stats.rows_read += len(batch)
                batch = _drop_empty_titles(batch, reader, stats)
                if len(batch) == 0:
                    continue
                label_ids = _label_ids(batch, reader, labels)
                text = batch.column("text").combine_chunks()
                tokenized = pool.submit(featurizer.pieces, text)
                if pending is not None:
                    write(*pending)
                pending = (batch, label_ids, tokenized)
            if pending is not None:
                write(*pending)
    finally:
        out.close()
    if stats.rows_read == 0:
        raise DataError("the file has a header but no rows", reader.path)
    remap, names, counts = table.final_ids()
    _renumber(work / "tokens.bin", remap, stats.rows, width)
    stats.tokens_pruned = table.pruned
    (work / "tokens.txt").write_text("\n".join(names), encoding="utf-8")
    np.save(work / "token_counts.npy", counts)
    (work / "labels.txt").write_text("\n".join(labels.names), encoding="utf-8")
    meta = {
        "version": CACHE_VERSION,
        "source": _file_identity(reader.path),
        "format": reader.format,
        "fields": {f: reader.fields.get(f) for f in ("text", "label", "language", "quality", "id")},
        "rows": stats.rows,
        "max_tokens": width,
        "languages": languages.names,
        "qualities": qualities.names,
        "stats": stats.__dict__,
        "settings": {
            "featurizer": featurizer.cache_spec(),
            "columns": data_cfg.columns.model_dump(),
        },
    }
    (work / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _drop_empty_titles(batch: RowBatch, reader: TableReader, stats: EncodeStats) -> RowBatch:
    blank = blank_titles(batch.column("text"), len(batch))
    if blank.any():
        where = np.flatnonzero(blank)
        stats.empty_titles += len(where)
        room = 5 - len(stats.skipped_lines)
        stats.skipped_lines.extend(batch.lines[where[:room]].tolist())
        return batch.take(np.flatnonzero(~blank))
    return batch


def _label_ids(batch: RowBatch, reader: TableReader, codes: _Codes) -> np.ndarray:
    column = batch.column("label")
    if column is None:
        return np.full(len(batch), -1, dtype=np.int32)
    blank = blank_titles(column, len(batch))
    if blank.any():
        first = int(np.flatnonzero(blank)[0])
        line = batch.line_of(first)
        raise DataError("empty category", reader.path, line=line, field=reader.fields["label"])
    return codes.encode(column)


def _optional_codes(batch: RowBatch, field: str, codes: _Codes) -> np.ndarray:
    column = batch.column(field)
    if column is None:
        return np.full(len(batch), -1, dtype=np.int8)
    return codes.encode(pc.fill_null(column, ""))


def token_blocks(path: Path, rows: int, width: int, block_rows: int = BLOCK_ROWS):
    """Yield (first row, block) of a token file, read block by block.

    Plain reads rather than a memory map: the pages of a map count in the process's memory,
    and at 20 M rows the token file alone is 2.5 GB.
    """
    with open(path, "rb") as f:
        for start in range(0, rows, block_rows):
            n = min(block_rows, rows - start)
            yield start, np.fromfile(f, dtype=np.uint32, count=n * width).reshape(n, width)


def _renumber(path: Path, remap: np.ndarray, rows: int, width: int) -> None:
    """Replace provisional ids with final ones, in place, one block at a time."""
    with open(path, "r+b") as out:
        for start, block in token_blocks(path, rows, width):
            out.seek(start * width * 4)
            remap[block].tofile(out)

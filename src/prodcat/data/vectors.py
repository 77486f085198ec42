"""Pretrained word vectors: read them aligned to a vocabulary, and train new ones.

Files in word2vec/fastText text format (`.txt`, `.vec`, gzip or not, with or without the
`N DIM` header line) are streamed line by line: only the lines of words the vocabulary
holds are parsed and kept, so a 1 M x 300 file like SBW costs the vocabulary's rows, not the
file. word2vec binary files (`.bin`) go through gensim's `KeyedVectors`.

A file's words are normalised as the model's tokenizer normalises tokens (lower case,
accents, digits), so `Camión` in the file meets `camion` in a vocabulary that folds accents;
the first (most frequent) spelling of a word wins.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from prodcat.config import DataConfig, TokenizerConfig
from prodcat.data.readers import TableReader, open_text
from prodcat.data.text import normalize_tokens, tokenize
from prodcat.errors import DataError

log = logging.getLogger(__name__)

CHUNK_LINES = 50_000


@dataclass
class PretrainedRows:
    """Vectors for a vocabulary's rows, and how much of it they cover."""

    vectors: np.ndarray  # (V, D) float32; rows not found are 0
    found: np.ndarray  # (V,) bool
    words_in_file: int

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def coverage(self, counts: np.ndarray | None = None, skip: int = 2) -> dict[str, float]:
        """Share of the vocabulary found and, given token `counts`, of token occurrences.

        The first `skip` rows ([PAD], [UNK]) are not words and do not count.
        """
        found = self.found[skip:]
        out = {"vocabulary_coverage": float(found.mean()) if len(found) else 0.0}
        if counts is not None and counts[skip:].sum() > 0:
            out["occurrence_coverage"] = float(counts[skip:][found].sum() / counts[skip:].sum())
        return out


def _lines(path: Path) -> Iterator[str]:
    with open_text(path) as f:  # gzip or plain, as every other input file
        yield from f


def read_vectors(
    path: str | Path, tokens: list[str], tokenizer: TokenizerConfig | None = None
) -> PretrainedRows:
    """The vectors of `tokens` (a vocabulary, by id) found in the file at `path`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such vectors file", path)
    if path.suffix == ".bin":
        return _read_binary(path, tokens, tokenizer)
    index = {t: i for i, t in enumerate(tokens)}
    vectors: np.ndarray | None = None
    found = np.zeros(len(tokens), dtype=bool)
    words, dim, line_no = 0, None, 0
    chunk: list[tuple[int, str, str]] = []

    def flush() -> None:
        nonlocal vectors
        names = pa.array([word for _, word, _ in chunk], type=pa.string())
        if tokenizer is not None:
            names = normalize_tokens(names, tokenizer)
        for (number, _, rest), name in zip(chunk, names.to_pylist()):
            row = index.get(name)
            if row is None or found[row]:
                continue
            values = np.array(rest.split(), dtype=np.float32)
            if len(values) != dim:
                raise DataError(
                    f"expected {dim} numbers after the word, found {len(values)}", path, number
                )
            vectors[row] = values
            found[row] = True
        chunk.clear()

    try:
        for line_no, line in enumerate(_lines(path), start=1):
            word, _, rest = line.rstrip("\n").rstrip().partition(" ")
            if dim is None:
                head = line.split()
                if line_no == 1 and len(head) == 2 and all(h.isdigit() for h in head):
                    dim = int(head[1])  # the `N DIM` header line
                    vectors = np.zeros((len(tokens), dim), dtype=np.float32)
                    continue
                dim = len(rest.split())
                if dim == 0:
                    raise DataError("not a word-vectors file: no numbers after the word", path, 1)
                vectors = np.zeros((len(tokens), dim), dtype=np.float32)
            if not word:
                continue
            words += 1
            chunk.append((line_no, word, rest))
            if len(chunk) >= CHUNK_LINES:
                flush()
        if chunk:
            flush()
    except (OSError, EOFError, UnicodeError) as e:
        raise DataError(f"cannot read the vectors file: {e}", path, line_no or None) from None
    except ValueError as e:
        raise DataError(f"not a number in the vector: {e}", path, line_no or None) from None
    if vectors is None or words == 0:
        raise DataError("the vectors file holds no vectors", path)
    return PretrainedRows(vectors, found, words)


def _read_binary(path: Path, tokens: list[str], tokenizer: TokenizerConfig | None):
    from gensim.models import KeyedVectors

    try:
        kv = KeyedVectors.load_word2vec_format(str(path), binary=True)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read the word2vec binary file: {e}", path) from None
    names = pa.array(kv.index_to_key, type=pa.string())
    if tokenizer is not None:
        names = normalize_tokens(names, tokenizer)
    index = {t: i for i, t in enumerate(tokens)}
    vectors = np.zeros((len(tokens), kv.vector_size), dtype=np.float32)
    found = np.zeros(len(tokens), dtype=bool)
    for position, name in enumerate(names.to_pylist()):
        row = index.get(name)
        if row is not None and not found[row]:
            vectors[row] = kv.vectors[position]
            found[row] = True
    return PretrainedRows(vectors, found, len(kv.index_to_key))


def fill_missing(rows: PretrainedRows, seed: int = 0, pad_id: int = 0) -> np.ndarray:
    """The vectors with rows not found drawn at the found rows' scale (normal, same mean and
    standard deviation per dimension); the padding row is zero."""
    vectors = rows.vectors.copy()
    missing = ~rows.found
    if rows.found.any():
        mean = vectors[rows.found].mean(0)
        std = vectors[rows.found].std(0) + 1e-8
    else:
        mean, std = np.zeros(rows.dim, np.float32), np.full(rows.dim, 1.0 / rows.dim, np.float32)
    rng = np.random.default_rng(seed)
    vectors[missing] = rng.normal(mean, std, size=(int(missing.sum()), rows.dim))
    vectors[pad_id] = 0
    return vectors.astype(np.float32)


def write_token_lines(
    path: str | Path,
    data: DataConfig,
    out: Path,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write each title's tokens as one space-separated line (gensim's corpus file)."""
    reader = TableReader(path, data.columns, data.format)
    reader.require("text")
    total = reader.path.stat().st_size
    rows = 0
    with open(out, "w", encoding="utf-8") as f:
        for batch in reader.batches():
            chunk = tokenize(batch.column("text").combine_chunks(), data.tokenizer)
            lines: list[list[str]] = [[] for _ in range(chunk.n_rows)]
            for code, row in zip(chunk.codes.tolist(), chunk.row.tolist()):
                lines[row].append(chunk.vocabulary[code])
            f.writelines(" ".join(words) + "\n" for words in lines if words)
            rows += chunk.n_rows
            if progress:
                progress(min(reader.bytes_read(), total), total)
    return rows


def train_vectors(
    path: str | Path,
    output: str | Path,
    data: DataConfig,
    *,
    dim: int = 300,
    algorithm: str = "fasttext",
    epochs: int = 5,
    window: int = 5,
    min_count: int = 2,
    workers: int = 2,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Train word vectors on the titles of `path` (tokenised as `data.tokenizer` says) with
    gensim, and write them in word2vec text format (gzip when `output` ends in .gz)."""
    from gensim.models import FastText, Word2Vec

    if algorithm not in ("fasttext", "word2vec"):
        raise DataError(f"unknown algorithm '{algorithm}' (fasttext or word2vec)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "tokens.txt"
        rows = write_token_lines(path, data, corpus, progress)
        # fastText's 2 M subword buckets would cost gigabytes for titles' small vocabulary.
        extra = {"bucket": 200_000} if algorithm == "fasttext" else {}
        cls = FastText if algorithm == "fasttext" else Word2Vec
        model = cls(
            corpus_file=str(corpus),
            **extra,
            vector_size=dim,
            window=window,
            min_count=min_count,
            epochs=epochs,
            workers=workers,
            seed=seed,
            sg=1,
        )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model.wv.save_word2vec_format(str(output), binary=output.suffix == ".bin")
    return {
        "titles": rows,
        "words": len(model.wv.index_to_key),
        "dim": dim,
        "seconds": time.perf_counter() - started,
    }

"""Normalise and tokenise titles with Arrow's vectorised string kernels.

Titles are split on runs of anything that is not a letter, digit or combining mark, so
`Hidrolavadora Lavor One 120 Bar 1700w` gives `hidrolavadora lavor one 000 bar 0000w`
with the default number handling. The per-token work (lower-casing, accent stripping,
number shapes) runs on each chunk's *distinct* tokens, which are far fewer than its tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prodcat.config import TokenizerConfig
from prodcat.data.stop_words import STOP_WORDS

SEPARATORS = {
    # prodcat's: anything that is not a letter, digit or combining mark ("marca®" -> "marca").
    "letters": r"[^\p{L}\p{N}\p{M}]+",
    # The course's: whitespace (as Python's str.split) and ASCII punctuation, plus « and ».
    "punctuation": r"[\s\p{Z}\x{85}\x{0b}\x{1c}-\x{1f}!-/:-@\[-`{-~«»]+",
}


@dataclass
class TokenizedChunk:
    """Tokens of a chunk of titles: `codes` index `vocabulary`; `row` says which title."""

    vocabulary: list[str]  # distinct normalised tokens of this chunk
    codes: np.ndarray  # (n_tokens,) int64 into vocabulary
    row: np.ndarray  # (n_tokens,) int64 title index, non-decreasing
    n_rows: int

    def lengths(self) -> np.ndarray:
        return np.bincount(self.row, minlength=self.n_rows)

    def positions(self) -> np.ndarray:
        """Position of each token inside its title."""
        return positions_in_rows(self.row, self.n_rows)


@dataclass
class WordPieces:
    """prodcat's words as the pieces of a cache (`prodcat.data.cache`): what the word
    featurizers and the sentence encoders store, and what a file is cut into by default."""

    tokenizer: TokenizerConfig
    max_tokens: int

    def cache_spec(self) -> dict[str, Any]:
        """Every setting that changes the pieces of a title: part of the cache key."""
        return {
            "kind": "vocabulary",
            "tokenizer": self.tokenizer.model_dump(),
            "max_tokens": self.max_tokens,
        }

    def pieces(self, titles: pa.Array | list[str]) -> TokenizedChunk:
        return tokenize(titles, self.tokenizer)


def positions_in_rows(row: np.ndarray, n_rows: int) -> np.ndarray:
    """Position of each item inside its row, for items listed row by row (`row` non-decreasing)."""
    lengths = np.bincount(row, minlength=n_rows)
    starts = np.cumsum(lengths) - lengths
    return np.arange(len(row), dtype=np.int64) - starts[row]


def padded_ids(
    ids: np.ndarray, row: np.ndarray, n_rows: int, width: int, dtype: type, pad: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(n_rows, width) matrix of each row's first `width` ids, `pad`-padded; the rows' lengths.

    `ids` of shape (n, k) (several model ids per piece) give an (n_rows, width, k) matrix."""
    pos = positions_in_rows(row, n_rows)
    keep = pos < width
    matrix = np.full((n_rows, width, *ids.shape[1:]), pad, dtype=dtype)
    matrix[row[keep], pos[keep]] = ids[keep]
    return matrix, np.bincount(row, minlength=n_rows)


def normalize_tokens(tokens: pa.Array, cfg: TokenizerConfig) -> pa.Array:
    """Apply the per-token normalisation to an array of raw tokens."""
    if cfg.lowercase:
        tokens = pc.utf8_lower(tokens)
    if cfg.strip_accents:
        tokens = pc.replace_substring_regex(pc.utf8_normalize(tokens, "NFKD"), r"\p{M}+", "")
    if cfg.numbers == "shape":
        tokens = pc.replace_substring_regex(tokens, r"[0-9]", "0")
    elif cfg.numbers == "strip":
        tokens = pc.replace_substring_regex(tokens, r"[0-9]+", "")
    return tokens


def tokenize(titles: pa.Array | list[str], cfg: TokenizerConfig) -> TokenizedChunk:
    """Split and normalise a batch of titles (nulls count as empty titles)."""
    titles = pa.array(titles, type=pa.string()) if isinstance(titles, list) else titles
    n_rows = len(titles)
    # Splitting on spaces is cheap; the regex split then runs on distinct pieces only.
    pieces = pc.split_pattern(pc.fill_null(titles, ""), " ")
    piece_row = pc.list_parent_indices(pieces).to_numpy(zero_copy_only=False).astype(np.int64)
    distinct = pc.dictionary_encode(pc.list_flatten(pieces))
    piece_code = distinct.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    parts = pc.split_pattern_regex(distinct.dictionary, SEPARATORS[cfg.separator])
    part_text = pc.list_flatten(parts)
    part_owner = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False).astype(np.int64)
    nonempty = pc.greater(pc.utf8_length(part_text), 0).to_numpy(zero_copy_only=False)
    part_text = part_text.filter(pa.array(nonempty))
    part_owner = part_owner[nonempty]
    per_piece = np.bincount(part_owner, minlength=len(distinct.dictionary))
    first_part = np.cumsum(per_piece) - per_piece
    # Expand each piece of each title into its parts, in order.
    repeats = per_piece[piece_code]
    row = np.repeat(piece_row, repeats)
    starts = np.cumsum(repeats) - repeats
    offset = np.arange(len(row), dtype=np.int64) - np.repeat(starts, repeats)
    part_index = np.repeat(first_part[piece_code], repeats) + offset
    encoded = pc.dictionary_encode(part_text)
    raw_codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)[part_index]
    normal = normalize_tokens(encoded.dictionary, cfg)
    keep = pc.greater_equal(pc.utf8_length(normal), max(cfg.min_token_length, 1))
    if cfg.numbers == "drop":
        keep = pc.and_(keep, pc.invert(pc.match_substring_regex(normal, r"^[0-9]+$")))
    if cfg.stop_words != "none":
        stop = pa.array(sorted(STOP_WORDS[cfg.stop_words]), type=pa.string())
        keep = pc.and_(keep, pc.invert(pc.is_in(normal, value_set=stop)))
    # Several raw tokens may normalise to one ("Bar", "BAR"): encode again.
    renormal = pc.dictionary_encode(normal)
    vocab_codes = renormal.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    keep_raw = keep.to_numpy(zero_copy_only=False)
    token_keep = keep_raw[raw_codes]
    return TokenizedChunk(
        vocabulary=renormal.dictionary.to_pylist(),
        codes=vocab_codes[raw_codes[token_keep]],
        row=row[token_keep],
        n_rows=n_rows,
    )


def tokenize_to_lists(titles: list[str], cfg: TokenizerConfig) -> list[list[str]]:
    """Tokens of each title as Python lists (for inspection and tests)."""
    chunk = tokenize(titles, cfg)
    out: list[list[str]] = [[] for _ in range(chunk.n_rows)]
    for code, row in zip(chunk.codes.tolist(), chunk.row.tolist()):
        out[row].append(chunk.vocabulary[code])
    return out

"""A pure-Python twin of the Arrow tokenizer, for the few titles a server sees at a time.

`prodcat.data.text.tokenize` is built for millions of titles: a dozen Arrow kernel calls
whose fixed cost (~2 ms) dwarfs the work on one title. `tokenize_title` cuts one title with
`str` methods and `unicodedata` and gives the *same tokens*; `TitleEncoder` maps them to a
featurizer's ids, caching each space-separated piece's ids (titles repeat words). The word
and n-gram featurizers take this path for up to `SMALL_BATCH` titles (`featurizers/words.py`).

Why the tokens are the same:

- Arrow splits on " " first and then each piece on `SEPARATORS`; so do we, piece by piece.
- Separators: ASCII pieces use an ASCII-only regex; other pieces classify each character by
  `unicodedata.category` (letters L*, digits N*, marks M*) or by the listed whitespace and
  punctuation, as RE2's `\\p{...}` classes do.
- Lower-casing is per character (Arrow's simple case mapping: no final sigma, "İ" -> "i"),
  accent stripping is NFKD then dropping M* characters, digits are ASCII [0-9] only.
- Python's Unicode tables may be older than Arrow's: a piece holding a character that this
  Python does not know (category "Cn") is tokenised by Arrow itself. For every assigned
  character the two agree (tests/test_serving.py checks each code point of the BMP, and
  real titles under the default and the course's settings).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from prodcat.config import TokenizerConfig
from prodcat.data.stop_words import STOP_WORDS
from prodcat.data.text import tokenize

# The most titles a call encodes this way (Arrow's path costs ~2 ms a call whatever the count).
SMALL_BATCH = 256

# The ASCII part of each of `prodcat.data.text.SEPARATORS`.
_ASCII_SEPARATORS = {
    "letters": re.compile(r"[^0-9A-Za-z]+"),
    "punctuation": re.compile(r"[\t\n\v\f\r \x1c-\x1f!-/:-@\[-`{-~]+"),
}
# The non-ASCII characters of the "punctuation" separator: \x85, « », and \p{Z}.
_OTHER_PUNCTUATION = frozenset("\x85«»")
_SHAPE_DIGITS = str.maketrans("123456789", "000000000")
_DELETE_DIGITS = str.maketrans("", "", "0123456789")

_category = unicodedata.category


def _is_separator(char: str, separator: str) -> bool:
    """Whether a non-ASCII character separates tokens (RE2's classes, by Unicode category)."""
    if separator == "letters":
        return _category(char)[0] not in "LNM"
    return char in _OTHER_PUNCTUATION or _category(char)[0] == "Z"


def _split_piece(piece: str, separator: str) -> list[str]:
    if piece.isascii():
        return _ASCII_SEPARATORS[separator].split(piece)
    parts, start = [], 0
    for i, char in enumerate(piece):
        if (char.isascii() and _ASCII_SEPARATORS[separator].match(char)) or (
            not char.isascii() and _is_separator(char, separator)
        ):
            parts.append(piece[start:i])
            start = i + 1
    parts.append(piece[start:])
    return parts


def _lower(token: str) -> str:
    if token.isascii():
        return token.lower()
    # Per character: Arrow's simple case mapping has no final sigma and no "İ" -> "i̇".
    return "".join("i" if char == "\u0130" else char.lower() for char in token)


def normalize_token(token: str, cfg: TokenizerConfig) -> str:
    """One raw token as `prodcat.data.text.normalize_tokens` normalises it."""
    if cfg.lowercase:
        token = _lower(token)
    if cfg.strip_accents and not token.isascii():
        decomposed = unicodedata.normalize("NFKD", token)
        token = "".join(char for char in decomposed if _category(char)[0] != "M")
    if cfg.numbers == "shape":
        token = token.translate(_SHAPE_DIGITS)
    elif cfg.numbers == "strip":
        token = token.translate(_DELETE_DIGITS)
    return token


def piece_tokens(piece: str, cfg: TokenizerConfig) -> list[str]:
    """Tokens of one space-free piece of a title, exactly as the Arrow tokenizer cuts them."""
    if not piece.isascii() and any(_category(char) == "Cn" for char in piece):
        # A character newer than this Python's Unicode tables: let Arrow decide.
        return _arrow_tokens(piece, cfg)
    stop = STOP_WORDS[cfg.stop_words] if cfg.stop_words != "none" else ()
    shortest = max(cfg.min_token_length, 1)
    tokens = []
    for part in _split_piece(piece, cfg.separator):
        if not part:
            continue
        token = normalize_token(part, cfg)
        if len(token) < shortest or token in stop:
            continue
        if cfg.numbers == "drop" and token.isascii() and token.isdigit():
            continue
        tokens.append(token)
    return tokens


def _arrow_tokens(piece: str, cfg: TokenizerConfig) -> list[str]:
    chunk = tokenize([piece], cfg)
    return [chunk.vocabulary[code] for code in chunk.codes.tolist()]


def tokenize_title(title: str | None, cfg: TokenizerConfig) -> list[str]:
    """Tokens of one title, equal to `prodcat.data.text.tokenize_to_lists([title], cfg)[0]`."""
    if not title:
        return []
    return [token for piece in title.split(" ") for token in piece_tokens(piece, cfg)]


class TitleEncoder:
    """A token featurizer's `encode` for a few titles at a time, in pure Python.

    `token_ids(token)` gives a token's model ids (`pieces_per_token` of them: a word's, or a
    word's and its character n-grams'). Each distinct piece's ids are cached (least recently
    used first out), so a title of known pieces costs a split and a few dictionary look-ups.
    """

    def __init__(
        self,
        tokenizer: TokenizerConfig,
        max_tokens: int,
        token_ids: Callable[[str], tuple[int, ...]],
        *,
        pieces_per_token: int = 1,
        pad_id: int = 0,
        cache_size: int = 1 << 16,
    ):
        self.tokenizer = tokenizer.model_copy()
        self.max_tokens = max_tokens
        self.pieces_per_token = pieces_per_token
        self.pad_id = pad_id

        @lru_cache(maxsize=cache_size)
        def piece_ids(piece: str) -> tuple[tuple[int, ...], ...]:
            return tuple(token_ids(token) for token in piece_tokens(piece, self.tokenizer))

        self.piece_ids = piece_ids

    def title_ids(self, title: str | None) -> list[tuple[int, ...]]:
        """Model ids of one title's tokens, at most `max_tokens` of them."""
        if not title:
            return []
        piece_ids = self.piece_ids
        ids = [i for piece in title.split(" ") for i in piece_ids(piece)]
        return ids[: self.max_tokens]

    def encode(self, titles: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """(N, T * pieces_per_token) int64 ids padded with `pad_id` and the (N,) lengths:
        `TokenFeaturizer.encode`'s."""
        k = self.pieces_per_token
        if len(titles) == 1:  # what serving asks most: one array made of one title's ids
            ids = self.title_ids(titles[0])
            matrix = np.array(ids or [(self.pad_id,) * k], dtype=np.int64).reshape(1, -1)
            return matrix, np.array([len(ids)], dtype=np.int64)
        rows = [self.title_ids(title) for title in titles]
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        width = max(int(lengths.max(initial=0)), 1)
        matrix = np.full((len(rows), width, k), self.pad_id, dtype=np.int64)
        for row, ids in zip(matrix, rows):
            if ids:
                row[: len(ids)] = ids
        return matrix.reshape(len(rows), width * k), lengths

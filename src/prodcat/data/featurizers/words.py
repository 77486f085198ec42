"""prodcat's own token featurizers: words, and words with their character n-grams.

`VocabularyFeaturizer` (kind "vocabulary", the word featurizer) cuts titles with prodcat's
tokenizer and maps words to a vocabulary fitted on the training rows (or the course's
`token_to_index`); `NgramFeaturizer` (kind "ngrams") adds the hashed character n-grams of
each word, fastText's subword features.
The cache holds words for both (the same cache serves both).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from prodcat.config import DataConfig, TokenizerConfig
from prodcat.data.featurizers.base import TokenFeaturizer, read_spec, write_spec
from prodcat.data.python_tokenizer import SMALL_BATCH, TitleEncoder
from prodcat.data.text import TokenizedChunk, WordPieces, tokenize
from prodcat.data.vectors import PretrainedRows, read_vectors
from prodcat.data.vocab import PAD, UNK, Vocabulary, load_token_to_index
from prodcat.errors import ConfigError

if TYPE_CHECKING:
    from prodcat.config import ModelConfig

# The most rows `unknown_buckets=None` gives the words `max_vocab` drops: at 20 M titles
# (927 k words), 300 k words + 100 k rows scored as every word did (benchmarks/README.md).
AUTO_UNKNOWN_BUCKETS = 100_000


class VocabularyFeaturizer(TokenFeaturizer):
    """prodcat's tokenizer and a word vocabulary (the MLP, CNN and RNN families).

    The vocabulary is the training rows' tokens seen `min_count` times (the `max_vocab` most
    frequent), or, with the course's `token_to_index`, that file's tokens with the course's ids
    (so its vectors line up). A word outside it is [UNK], or, with `unknown_buckets`, one of
    that many rows after the vocabulary's, by the CRC-32 of its UTF-8 bytes: the words a
    bounded vocabulary drops keep rows of their own, shared by a few, not one row for all.
    `unknown_buckets=None` decides at `fit`: as many rows as `max_vocab` dropped words, up to
    `AUTO_UNKNOWN_BUCKETS`, so a vocabulary that keeps every word is what it always was.
    """

    kind = "vocabulary"

    def __init__(
        self,
        tokenizer: TokenizerConfig,
        max_tokens: int,
        *,
        min_count: int = 1,
        max_vocab: int | None = None,
        token_to_index: Path | None = None,
        unknown_buckets: int | None = 0,
        vocabulary: Vocabulary | None = None,
    ):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.min_count = min_count
        self.max_vocab = max_vocab
        self.token_to_index = token_to_index
        self.unknown_buckets = unknown_buckets
        self.vocabulary = vocabulary
        self.token_counts: np.ndarray | None = None  # training occurrences by id, after fit
        self._fast: tuple[Vocabulary, TitleEncoder] | None = None

    @classmethod
    def from_config(cls, data: DataConfig, **settings: Any) -> VocabularyFeaturizer:
        """The unfitted featurizer of the data settings (`settings`: a subclass's own)."""
        return cls(
            data.tokenizer,
            data.max_tokens,
            min_count=data.min_count,
            max_vocab=data.max_vocab,
            token_to_index=data.token_to_index,
            **{"unknown_buckets": data.unknown_buckets, **settings},
        )

    @classmethod
    def from_tokens(cls, tokens: list[str], **settings: Any) -> VocabularyFeaturizer:
        """A fitted featurizer over `tokens` ([PAD] and [UNK] are added), for tests and tools."""
        settings.setdefault("tokenizer", TokenizerConfig())
        settings.setdefault("max_tokens", 32)
        return cls(vocabulary=Vocabulary([PAD, UNK, *tokens]), **settings)

    def cache_spec(self) -> dict[str, Any]:
        return WordPieces(self.tokenizer, self.max_tokens).cache_spec()

    def pieces(self, titles: pa.Array | list[str]) -> TokenizedChunk:
        return tokenize(titles, self.tokenizer)

    def fit(self, names: list[str], counts: np.ndarray) -> None:
        if self.token_to_index is not None:
            self.vocabulary = Vocabulary(load_token_to_index(self.token_to_index))
            remap = self.vocabulary.remap_from(names)
        else:
            self.vocabulary, remap = Vocabulary.from_counts(
                names, counts, self.min_count, self.max_vocab
            )
        if self.unknown_buckets is None:
            dropped = 0
            if self.token_to_index is None:  # words seen min_count times that max_vocab left
                dropped = np.count_nonzero(counts[2:] >= self.min_count) - len(self.vocabulary) + 2
            self.unknown_buckets = min(AUTO_UNKNOWN_BUCKETS, int(dropped))
        self.token_counts = np.bincount(remap, weights=counts, minlength=len(self.vocabulary))
        self.id_counts = self.token_counts
        if self.unknown_buckets:  # the unknown words' occurrences by their rows
            self.id_counts = np.bincount(self.ids(names), weights=counts, minlength=self.vocab_size)

    def pretrained_rows(self, path: str | Path) -> PretrainedRows:
        """The vectors of this vocabulary's tokens in a word-vectors file (normalised alike)."""
        return read_vectors(path, self._fitted().tokens, self.tokenizer)

    def _fitted(self) -> Vocabulary:
        if self.vocabulary is None:
            raise RuntimeError("the featurizer has no vocabulary yet: fit it on training data")
        return self.vocabulary

    def ids(self, names: list[str]) -> np.ndarray:
        ids = self._fitted().remap_from(names)
        if self.unknown_buckets:
            for i in np.flatnonzero(ids == self.unk_id).tolist():
                if names[i] != UNK:
                    ids[i] = self.unknown_id(names[i])
        return ids

    def unknown_id(self, token: str) -> int:
        """The row of a word outside the vocabulary, with `unknown_buckets`."""
        return len(self._fitted()) + zlib.crc32(token.encode("utf-8")) % self.unknown_buckets

    @property
    def vocab_size(self) -> int:
        return len(self._fitted()) + self.unknown_buckets

    def token_ids(self, index: dict[str, int]) -> Callable[[str], tuple[int, ...]]:
        """A token's model ids, one token at a time: `ids`'s row (`index`: the vocabulary's)."""
        unk = self.unk_id
        if self.unknown_buckets:
            unknown = self.unknown_id
            return lambda token: (index[token] if token in index else unknown(token),)
        return lambda token: (index.get(token, unk),)

    def title_encoder(self) -> TitleEncoder:
        """The pure-Python encoder of this featurizer (made once per vocabulary)."""
        vocabulary = self._fitted()
        if self._fast is None or self._fast[0] is not vocabulary:
            token_ids = self.token_ids(vocabulary.index)
            encoder = TitleEncoder(
                self.tokenizer, self.max_tokens, token_ids, pieces_per_token=self.pieces_per_token
            )
            self._fast = (vocabulary, encoder)
        return self._fast[1]

    def encoding_key(self) -> tuple:
        """What makes this featurizer's ids of a title: featurizers with the same key give the
        same ids (an ensemble's members encode a title once per key)."""
        tokens = self._fitted().tokens
        vocabulary = (len(tokens), hash(tuple(tokens)), self.unknown_buckets)
        return (self.kind, repr(self.cache_spec()), *vocabulary)

    def encode(self, titles: list[str] | pa.Array) -> tuple[np.ndarray, np.ndarray]:
        # A few titles skip Arrow's fixed cost (~2 ms a call) for its pure-Python twin, which
        # gives the same ids (tests/test_serving.py checks it).
        if isinstance(titles, list) and len(titles) <= SMALL_BATCH:
            return self.title_encoder().encode(titles)
        return super().encode(titles)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self._fitted().save(folder / "vocab.txt")
        write_spec(
            folder,
            self.kind,
            vocabulary="vocab.txt",
            size=len(self._fitted()),
            unknown_buckets=self.unknown_buckets,
        )

    @classmethod
    def load(
        cls, folder: str | Path, data: DataConfig, model: ModelConfig | None = None
    ) -> VocabularyFeaturizer:
        # Folders written before unknown_buckets have none.
        unknown = read_spec(folder).get("unknown_buckets", 0)
        featurizer = cls.from_config(data, unknown_buckets=unknown)
        featurizer.vocabulary = Vocabulary.load(Path(folder) / "vocab.txt")
        return featurizer


class NgramFeaturizer(VocabularyFeaturizer):
    """Words and the hashed character n-grams inside them: fastText's subword features.

    A word's model ids are its vocabulary id (padding if training never saw it) followed by
    the ids of the n-grams of `<word>` from `min_n` to `max_n` characters, each hashed
    (CRC-32 of its UTF-8 bytes) into one of `buckets` rows placed after the vocabulary's.
    So "hidrolavadora" and an unseen "hidrolavadoras" share most of their ids. The n-grams
    are looked up when a file's pieces are mapped to model ids, once per split.
    """

    kind = "ngrams"

    def __init__(
        self,
        tokenizer: TokenizerConfig,
        max_tokens: int,
        *,
        buckets: int,
        min_n: int = 3,
        max_n: int = 5,
        per_word: int = 40,
        **settings: Any,
    ):
        if settings.get("unknown_buckets"):
            raise ConfigError(
                "data.unknown_buckets: the n-gram featurizer gives a word outside the "
                "vocabulary its n-grams' rows; set it to 0"
            )
        super().__init__(tokenizer, max_tokens, **{**settings, "unknown_buckets": 0})
        self.buckets = buckets
        self.min_n, self.max_n = min_n, max_n
        self.pieces_per_token = 1 + per_word

    def char_ngrams(self, word: str) -> list[str]:
        """The character n-grams of `<word>`, the shortest first, at most `pieces_per_token - 1`."""
        marked = f"<{word}>"
        grams = [
            marked[i : i + n]
            for n in range(self.min_n, self.max_n + 1)
            for i in range(len(marked) - n + 1)
        ]
        return grams[: self.pieces_per_token - 1]

    def gram_ids(self, word: str) -> list[int]:
        """The model ids of `char_ngrams(word)`, on every path (the cache's and one title's):
        each one's CRC-32 of its UTF-8 bytes, in the buckets after the vocabulary's rows."""
        offset, buckets = len(self._fitted()), self.buckets
        return [offset + zlib.crc32(g.encode("utf-8")) % buckets for g in self.char_ngrams(word)]

    def ids(self, names: list[str]) -> np.ndarray:
        words = self._fitted().remap_from(names)
        table = np.full((len(names), self.pieces_per_token), self.pad_id, dtype=np.int32)
        # An unseen word is its n-grams alone, as in fastText, not the shared [UNK] vector;
        # a piece the cache itself forgot ([UNK] in the file) has nothing else.
        table[:, 0] = np.where(words == self.unk_id, self.pad_id, words)
        for i, name in enumerate(names):
            if name in (PAD, UNK):
                table[i, 0] = self.pad_id if name == PAD else self.unk_id
                continue
            grams = self.gram_ids(name)
            table[i, 1 : 1 + len(grams)] = grams
        return table

    def fit(self, names: list[str], counts: np.ndarray) -> None:
        super().fit(names, counts)
        # Training occurrences of every model id, n-gram rows included (the linear family's
        # inverse document frequencies are computed from them).
        table = self.ids(names)
        self.id_counts = np.bincount(
            table.ravel(), weights=np.repeat(counts, table.shape[1]), minlength=self.vocab_size
        )
        self.id_counts[self.pad_id] = 0

    @property
    def vocab_size(self) -> int:
        return len(self._fitted()) + self.buckets

    def token_ids(self, index: dict[str, int]) -> Callable[[str], tuple[int, ...]]:
        unk, pad, k = self.unk_id, self.pad_id, self.pieces_per_token

        # Cached per token as well as per piece (TitleEncoder's): a word recurs in pieces that
        # differ (a comma, a slash), and hashing its n-grams is most of a new title's cost.
        @lru_cache(maxsize=1 << 16)
        def ids(token: str) -> tuple[int, ...]:
            word = index.get(token, unk)
            grams = self.gram_ids(token)
            return (pad if word == unk else word, *grams, *[pad] * (k - 1 - len(grams)))

        return ids

    def encoding_key(self) -> tuple:
        grams = (self.buckets, self.min_n, self.max_n, self.pieces_per_token)
        return (*super().encoding_key(), *grams)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self._fitted().save(folder / "vocab.txt")
        write_spec(
            folder,
            self.kind,
            vocabulary="vocab.txt",
            size=len(self._fitted()),
            buckets=self.buckets,
            n=[self.min_n, self.max_n],
            pieces_per_token=self.pieces_per_token,
        )

    @classmethod
    def load(
        cls, folder: str | Path, data: DataConfig, model: ModelConfig | None = None
    ) -> NgramFeaturizer:
        spec = read_spec(folder)
        min_n, max_n = spec["n"]
        featurizer = cls.from_config(
            data,
            buckets=spec["buckets"],
            min_n=min_n,
            max_n=max_n,
            per_word=spec["pieces_per_token"] - 1,
        )
        featurizer.vocabulary = Vocabulary.load(Path(folder) / "vocab.txt")
        return featurizer

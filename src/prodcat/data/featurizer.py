"""Featurizers: the one way a title becomes model input, in the cache, training and serving.

A featurizer does two things, and everything that encodes titles goes through both:

1. `pieces(titles)`: cut titles into pieces (normalised words for prodcat's families; a
   transformer's featurizer would cut subword pieces). The cache stores each file's pieces
   once, as ids into that file's own piece list (`tokens.txt`).
2. `ids(names)`: map piece names to the model's ids ([UNK] where absent). A split maps its
   file's piece list through it once (`Split.remap`); prediction maps the pieces of raw
   titles through it. Same steps, same inputs: tests/test_featurizers.py checks it.

`fit(names, counts)` builds the model's side (the vocabulary) from the training rows' piece
counts. A family names the featurizer it needs (`ModelConfig.featurizer`); the model is built
from it (`vocab_size`, `pad_id`). The featurizer's settings live in the run's config
(`data.tokenizer`, `data.max_tokens`, ...); the model folder adds only what was fitted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from prodcat.config import Config, DataConfig, TokenizerConfig
from prodcat.data.text import TokenizedChunk, padded_ids, tokenize
from prodcat.data.vectors import PretrainedRows, read_vectors
from prodcat.data.vocab import PAD, UNK, Vocabulary, load_token_to_index
from prodcat.errors import ProdcatError

if TYPE_CHECKING:
    from prodcat.data.batches import Batch

SPEC_FILE = "featurizer.json"


class Featurizer:
    """Titles -> pieces -> model ids. Subclasses set `kind` and implement the methods."""

    kind: ClassVar[str]
    pad_id: int = 0
    unk_id: int = 1
    max_tokens: int

    @classmethod
    def from_config(cls, data: DataConfig) -> Featurizer:
        raise NotImplementedError

    def cache_spec(self) -> dict[str, Any]:
        """Every setting that changes the pieces of a title: part of the cache key."""
        raise NotImplementedError

    def pieces(self, titles: pa.Array | list[str]) -> TokenizedChunk:
        raise NotImplementedError

    def fit(self, names: list[str], counts: np.ndarray) -> None:
        """Build the model's vocabulary from piece `names` and their training `counts`."""
        raise NotImplementedError

    def ids(self, names: list[str]) -> np.ndarray:
        """Model ids of piece names (`unk_id` where unknown)."""
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, titles: list[str] | pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(N, T) int64 model ids padded with `pad_id` (T: the longest title, at most
        `max_tokens`), and the (N,) lengths."""
        chunk = self.pieces(titles)
        ids = self.ids(chunk.vocabulary)[chunk.codes]
        longest = int(chunk.lengths().max(initial=0))
        width = max(min(longest, self.max_tokens), 1)
        matrix, lengths = padded_ids(ids, chunk.row, chunk.n_rows, width, np.int64, self.pad_id)
        return matrix, np.minimum(lengths, self.max_tokens).astype(np.int64)

    def __call__(self, titles: list[str]) -> Batch:
        """A `Batch` of raw titles, encoded exactly as the training data was."""
        import torch

        from prodcat.data.batches import Batch

        matrix, lengths = self.encode(list(titles))
        return Batch(torch.from_numpy(matrix), torch.from_numpy(lengths))

    def save(self, folder: str | Path) -> None:
        """Write what was fitted; the settings are in the folder's config.yaml."""
        raise NotImplementedError

    @classmethod
    def load(cls, folder: str | Path, data: DataConfig) -> Featurizer:
        raise NotImplementedError


class VocabularyFeaturizer(Featurizer):
    """prodcat's tokenizer and a word vocabulary (the MLP, CNN and RNN families).

    The vocabulary is the training rows' tokens seen `min_count` times, or, with the course's
    `token_to_index`, that file's tokens with the course's ids (so its vectors line up).
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
        vocabulary: Vocabulary | None = None,
    ):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.min_count = min_count
        self.max_vocab = max_vocab
        self.token_to_index = token_to_index
        self.vocabulary = vocabulary
        self.token_counts: np.ndarray | None = None  # training occurrences by id, after fit

    @classmethod
    def from_config(cls, data: DataConfig) -> VocabularyFeaturizer:
        return cls(
            data.tokenizer,
            data.max_tokens,
            min_count=data.min_count,
            max_vocab=data.max_vocab,
            token_to_index=data.token_to_index,
        )

    @classmethod
    def from_tokens(cls, tokens: list[str], **settings: Any) -> VocabularyFeaturizer:
        """A fitted featurizer over `tokens` ([PAD] and [UNK] are added), for tests and tools."""
        settings.setdefault("tokenizer", TokenizerConfig())
        settings.setdefault("max_tokens", 32)
        return cls(vocabulary=Vocabulary([PAD, UNK, *tokens]), **settings)

    def cache_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tokenizer": self.tokenizer.model_dump(),
            "max_tokens": self.max_tokens,
        }

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
        self.token_counts = np.bincount(remap, weights=counts, minlength=len(self.vocabulary))

    def pretrained_rows(self, path: str | Path) -> PretrainedRows:
        """The vectors of this vocabulary's tokens in a word-vectors file (normalised alike)."""
        return read_vectors(path, self._fitted().tokens, self.tokenizer)

    def _fitted(self) -> Vocabulary:
        if self.vocabulary is None:
            raise RuntimeError("the featurizer has no vocabulary yet: fit it on training data")
        return self.vocabulary

    def ids(self, names: list[str]) -> np.ndarray:
        return self._fitted().remap_from(names)

    @property
    def vocab_size(self) -> int:
        return len(self._fitted())

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self._fitted().save(folder / "vocab.txt")
        spec = {"kind": self.kind, "vocabulary": "vocab.txt", "size": self.vocab_size}
        (folder / SPEC_FILE).write_text(json.dumps(spec, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, data: DataConfig) -> VocabularyFeaturizer:
        featurizer = cls.from_config(data)
        featurizer.vocabulary = Vocabulary.load(Path(folder) / "vocab.txt")
        return featurizer


FEATURIZERS: dict[str, type[Featurizer]] = {VocabularyFeaturizer.kind: VocabularyFeaturizer}


def _featurizer_class(kind: str) -> type[Featurizer]:
    if kind not in FEATURIZERS:
        raise ProdcatError(f"unknown featurizer '{kind}' (known: {', '.join(FEATURIZERS)})")
    return FEATURIZERS[kind]


def make_featurizer(cfg: Config | DataConfig) -> Featurizer:
    """The unfitted featurizer the configured family needs (a word vocabulary by default)."""
    if isinstance(cfg, DataConfig):
        return VocabularyFeaturizer.from_config(cfg)
    return _featurizer_class(cfg.model.featurizer).from_config(cfg.data)


def load_featurizer(folder: str | Path, cfg: Config) -> Featurizer:
    """The fitted featurizer saved in a model folder."""
    spec = json.loads((Path(folder) / SPEC_FILE).read_text(encoding="utf-8"))
    return _featurizer_class(spec["kind"]).load(folder, cfg.data)

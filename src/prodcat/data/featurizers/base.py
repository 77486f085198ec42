"""What a featurizer is: the one way a title becomes model input, in the cache, in training
and at prediction. Two kinds, two small protocols:

- a `TokenFeaturizer` gives each title a row of model ids (and its length): prodcat's words
  and their character n-grams, or a transformer's subword pieces;
- a `VectorFeaturizer` gives each title one vector (a frozen sentence encoder's).

Both are small abstract classes; code that must tell them apart asks `isinstance`. Both cut
titles into pieces the same way on every path (`pieces`): the cache stores each
file's pieces once, as ids into that file's own piece list (`tokens.txt`); a token featurizer
maps piece names to model ids (`ids`) once per split, and prediction maps the pieces of raw
titles through the same `ids` (tests/test_featurizers.py checks both give the same ids). A
vector featurizer's pieces only index the cache's rows; its vectors are cached beside them.

`fit(names, counts)` builds the model's side (a vocabulary) from the training rows' piece
counts. The featurizer's settings live in the run's config; the model folder keeps what was
fitted, and `featurizer.json` (`SPEC_FILE`) says which kind reads it back.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from prodcat.data.text import TokenizedChunk, padded_ids

if TYPE_CHECKING:
    from prodcat.config import DataConfig, ModelConfig
    from prodcat.data.batches import Batch
    from prodcat.data.cache import EncodedFile

SPEC_FILE = "featurizer.json"


def write_spec(folder: str | Path, kind: str, /, **spec: Any) -> None:
    """`featurizer.json`: the featurizer's kind and what reading it back needs."""
    text = json.dumps({"kind": kind, **spec}, indent=1)
    (Path(folder) / SPEC_FILE).write_text(text, encoding="utf-8")


def read_spec(folder: str | Path) -> dict[str, Any]:
    """What `write_spec` wrote in a model folder."""
    return json.loads((Path(folder) / SPEC_FILE).read_text(encoding="utf-8"))


class Featurizer(ABC):
    """What both kinds share: titles -> the cache's pieces, fitting, saving."""

    kind: ClassVar[str]
    max_tokens: int

    @abstractmethod
    def cache_spec(self) -> dict[str, Any]:
        """Every setting that changes the pieces of a title: part of the cache key."""

    @abstractmethod
    def pieces(self, titles: pa.Array | list[str]) -> TokenizedChunk:
        """Cut titles into pieces."""

    def fit(self, names: list[str], counts: np.ndarray) -> None:  # noqa: B027 (a no-op is right)
        """Build the model's side from piece `names` and their training `counts` (nothing to
        fit by default: a pretrained tokenizer or encoder is fixed)."""

    @abstractmethod
    def __call__(self, titles: list[str]) -> Batch:
        """A `Batch` of raw titles, encoded exactly as the training data was."""

    def encoding_key(self) -> tuple:
        """Featurizers with equal keys encode any title alike (an ensemble's members that
        share one encode a title once); by default, this featurizer alone."""
        return (id(self),)

    @abstractmethod
    def save(self, folder: str | Path) -> None:
        """Write what was fitted and `SPEC_FILE`; the settings are in config.yaml."""

    @classmethod
    @abstractmethod
    def load(
        cls, folder: str | Path, data: DataConfig, model: ModelConfig | None = None
    ) -> Featurizer:
        """The fitted featurizer saved in a model folder (`model`: the folder's model
        section, for settings that folders of older prodcat keep only there)."""


class TokenFeaturizer(Featurizer):
    """Titles -> pieces -> rows of model ids."""

    pad_id: int = 0
    unk_id: int = 1
    # Model ids per piece: `ids` gives (n, pieces_per_token) when above 1, a piece's ids side
    # by side in the model's input (a word and its character n-grams).
    pieces_per_token: int = 1
    id_counts: np.ndarray | None = None  # training occurrences of each model id, after fit
    fitted_rows: int | None = None  # the training titles it was fitted on

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Model ids there are (the size of the model's first table)."""

    @abstractmethod
    def ids(self, names: list[str]) -> np.ndarray:
        """Model ids of piece names (`unk_id` where unknown): (n,) or (n, pieces_per_token)."""

    def encode(self, titles: list[str] | pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(N, T * pieces_per_token) int64 model ids padded with `pad_id` (T: the longest
        title, at most `max_tokens`; a token's ids side by side), and the (N,) lengths."""
        chunk = self.pieces(titles)
        ids = self.ids(chunk.vocabulary)[chunk.codes]
        longest = int(chunk.lengths().max(initial=0))
        width = max(min(longest, self.max_tokens), 1)
        matrix, lengths = padded_ids(ids, chunk.row, chunk.n_rows, width, np.int64, self.pad_id)
        # (N, T, pieces) -> (N, T * pieces); spelled out, as -1 is ambiguous for no titles.
        matrix = matrix.reshape(chunk.n_rows, int(np.prod(matrix.shape[1:])))
        return matrix, np.minimum(lengths, self.max_tokens).astype(np.int64)

    def __call__(self, titles: list[str]) -> Batch:
        import torch  # here: `prodcat data` commands never pay for importing torch

        from prodcat.data.batches import Batch

        matrix, lengths = self.encode(list(titles))
        return Batch(torch.from_numpy(matrix), torch.from_numpy(lengths))


class VectorFeaturizer(Featurizer):
    """Titles -> one vector each."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """The vectors' size."""

    @abstractmethod
    def embed(self, titles: list[str]) -> np.ndarray:
        """(N, dim) float32 vectors of raw titles, exactly as the cached ones were made."""

    @abstractmethod
    def file_vectors(
        self, file: EncodedFile, progress: Callable[[str, int, int], None] | None = None
    ) -> np.ndarray:
        """(rows, dim) vectors of a cached file's titles, computed once and cached beside it;
        `progress(name, done, total)` hears the encoding."""

    def __call__(self, titles: list[str]) -> Batch:
        import torch

        from prodcat.data.batches import Batch

        vectors = torch.from_numpy(self.embed(list(titles)))
        n = len(vectors)
        empty = torch.zeros((n, 0), dtype=torch.int64)
        return Batch(empty, torch.zeros(n, dtype=torch.int64), features=vectors)

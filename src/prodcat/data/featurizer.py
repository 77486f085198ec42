"""Featurizers turn raw titles into `Batch` tensors the same way training data was encoded.

Each model folder saves its featurizer, so `Classifier.load(dir).predict(titles)` works the
same for every family. A transformer would bring a featurizer around its own tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from prodcat.data.batches import Batch
from prodcat.data.text import TokenizerConfig, padded_ids, tokenize
from prodcat.data.vocab import Vocabulary


class VocabularyFeaturizer:
    """prodcat's tokenizer and vocabulary (for the MLP, CNN and RNN families)."""

    kind = "vocabulary"

    def __init__(self, vocabulary: Vocabulary, tokenizer: TokenizerConfig, max_tokens: int):
        self.vocabulary = vocabulary
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def __call__(self, titles: list[str]) -> Batch:
        chunk = tokenize(list(titles), self.tokenizer)
        ids = self.vocabulary.remap_from(chunk.vocabulary, pad_first=False)[chunk.codes]
        longest = int(chunk.lengths().max(initial=0))
        width = max(min(longest, self.max_tokens), 1)  # each batch cut to its longest title
        matrix, lengths = padded_ids(ids, chunk.row, chunk.n_rows, width, np.int64)
        lengths = np.minimum(lengths, self.max_tokens).astype(np.int64)
        return Batch(torch.from_numpy(matrix), torch.from_numpy(lengths))

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.vocabulary.save(folder / "vocab.txt")
        spec = {
            "kind": self.kind,
            "tokenizer": self.tokenizer.model_dump(),
            "max_tokens": self.max_tokens,
        }
        (folder / "featurizer.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> VocabularyFeaturizer:
        folder = Path(folder)
        spec = json.loads((folder / "featurizer.json").read_text(encoding="utf-8"))
        return cls(
            Vocabulary.load(folder / "vocab.txt"),
            TokenizerConfig(**spec["tokenizer"]),
            spec["max_tokens"],
        )

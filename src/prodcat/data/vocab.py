"""Vocabulary and label map: plain text files, one entry per line, id = line number."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from prodcat.data.cache import PAD, UNK


class Vocabulary:
    """Token strings by id; id 0 is [PAD] and id 1 is [UNK]."""

    def __init__(self, tokens: list[str]):
        if tokens[:2] != [PAD, UNK]:
            raise ValueError("a vocabulary starts with [PAD] and [UNK]")
        self.tokens = tokens

    @classmethod
    def from_counts(
        cls, names: list[str], counts: np.ndarray, min_count: int = 1, max_size: int | None = None
    ) -> tuple[Vocabulary, np.ndarray]:
        """Keep tokens seen at least `min_count` times, the most frequent first.

        Returns the vocabulary and the remap from `names` ids to its ids.
        """
        counts = counts.copy()
        counts[:2] = 0
        kept = np.flatnonzero(counts >= min_count)
        kept = kept[np.lexsort((kept, -counts[kept]))]
        if max_size is not None:
            kept = kept[: max_size - 2]
        remap = np.ones(len(names), dtype=np.int64)
        remap[0] = 0
        remap[kept] = np.arange(2, 2 + len(kept))
        return cls([PAD, UNK] + [names[i] for i in kept.tolist()]), remap

    @cached_property
    def index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def remap_from(self, names: list[str], pad_first: bool = True) -> np.ndarray:
        """Ids of another token list in this vocabulary ([UNK] where absent).

        `pad_first`: `names` is another vocabulary, whose entry 0 is [PAD].
        """
        index = self.index
        remap = np.fromiter((index.get(t, 1) for t in names), dtype=np.int64, count=len(names))
        if pad_first and len(remap):
            remap[0] = 0
        return remap

    def __len__(self) -> int:
        return len(self.tokens)

    def save(self, path: str | Path) -> None:
        Path(path).write_text("\n".join(self.tokens) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        return cls(Path(path).read_text(encoding="utf-8").rstrip("\n").split("\n"))


class LabelMap:
    """Category names by class id."""

    def __init__(self, names: list[str]):
        self.names = names

    @cached_property
    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def save(self, path: str | Path) -> None:
        Path(path).write_text("\n".join(self.names) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        return cls(Path(path).read_text(encoding="utf-8").rstrip("\n").split("\n"))

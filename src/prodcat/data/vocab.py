"""Vocabulary and label map: plain text files, one entry per line, id = line number."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from prodcat.data.readers import open_text
from prodcat.errors import DataError

PAD, UNK = "[PAD]", "[UNK]"


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

    def remap_from(self, names: list[str]) -> np.ndarray:
        """Ids of another token list in this vocabulary ([UNK] where absent, [PAD] for [PAD])."""
        index = self.index
        return np.fromiter((index.get(t, 1) for t in names), dtype=np.int64, count=len(names))

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


def load_token_to_index(path: Path) -> list[str]:
    """The course's `token_to_index.json(.gz)` as a token list by id ([PAD] 0, [UNK] 1)."""
    try:
        with open_text(path) as f:
            mapping = json.load(f)
    except (OSError, json.JSONDecodeError, EOFError) as e:
        raise DataError(f"cannot read the token_to_index file: {e}", path) from None
    if not isinstance(mapping, dict) or not all(
        isinstance(i, int) and i >= 0 for i in mapping.values()
    ):
        raise DataError("token_to_index must be a JSON object of token -> id (>= 0)", path)
    names = [""] * (max(mapping.values(), default=1) + 1)
    for token, index in mapping.items():
        names[index] = token
    names[0], names[1] = PAD, UNK
    return names

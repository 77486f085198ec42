"""The token featurizer of the `transformer` family: a pretrained transformer's own tokenizer
(a `transformers` fast tokenizer, from the model's folder)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from prodcat.config import DataConfig
from prodcat.data.featurizers.base import TokenFeaturizer, read_spec, write_spec
from prodcat.data.text import TokenizedChunk
from prodcat.errors import ConfigError

if TYPE_CHECKING:
    from prodcat.config import ModelConfig


class SubwordFeaturizer(TokenFeaturizer):
    """A transformer's own tokenizer: titles become its pieces, pieces its ids.

    The cache stores the pieces (with the special tokens, cut at `max_tokens` by the
    tokenizer itself, so the closing token stays); `ids` maps them with the tokenizer's
    vocabulary, which is fixed (nothing to fit). The model folder keeps a copy of the
    tokenizer and of the transformer's config in `transformer/`, so it needs nothing else.
    """

    kind = "subword"
    FOLDER = "transformer"

    def __init__(self, folder: Path, max_tokens: int, prefix: str = ""):
        self.folder = Path(folder)
        self.max_tokens = max_tokens
        self.prefix = prefix
        self._tokenizer = None

    @classmethod
    def of_model(cls, folder: str | Path, data: DataConfig, prefix: str = "") -> SubwordFeaturizer:
        """The tokenizer of the `transformers` model folder `folder`."""
        if not (Path(folder) / "config.json").is_file():
            raise ConfigError(f"{folder}: not a transformers model folder (no config.json)")
        return cls(Path(folder), data.max_tokens, prefix)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
            if self._tokenizer.pad_token_id is None:
                raise ConfigError(f"{self.folder}: the tokenizer has no padding token")
        return self._tokenizer

    @property
    def pad_id(self) -> int:  # type: ignore[override]
        return int(self.tokenizer.pad_token_id)

    @property
    def unk_id(self) -> int:  # type: ignore[override]
        return int(self.tokenizer.unk_token_id)

    def cache_spec(self) -> dict[str, Any]:
        files = sorted(self.folder.glob("tokenizer*.json")) + sorted(self.folder.glob("*.txt"))
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.name.encode() + f.read_bytes())
        return {
            "kind": self.kind,
            "tokenizer": digest.hexdigest()[:16],
            "max_tokens": self.max_tokens,
            "prefix": self.prefix,
        }

    def pieces(self, titles: pa.Array | list[str]) -> TokenizedChunk:
        titles = titles.to_pylist() if isinstance(titles, pa.Array) else list(titles)
        encoded = self.tokenizer(
            [self.prefix + (t or "") for t in titles],
            truncation=True,
            max_length=self.max_tokens,
            add_special_tokens=True,
        )["input_ids"]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        flat = np.fromiter(
            (i for ids in encoded for i in ids), dtype=np.int64, count=int(lengths.sum())
        )
        distinct, codes = np.unique(flat, return_inverse=True)
        names = self.tokenizer.convert_ids_to_tokens(distinct.tolist())
        row = np.repeat(np.arange(len(encoded), dtype=np.int64), lengths)
        return TokenizedChunk(
            vocabulary=names, codes=codes.astype(np.int64), row=row, n_rows=len(encoded)
        )

    def ids(self, names: list[str]) -> np.ndarray:
        return np.asarray(self.tokenizer.convert_tokens_to_ids(list(names)), dtype=np.int64)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def save(self, folder: str | Path) -> None:
        target = Path(folder) / self.FOLDER
        self.tokenizer.save_pretrained(str(target))
        shutil.copyfile(self.folder / "config.json", target / "config.json")
        write_spec(
            folder, self.kind, folder=self.FOLDER, vocabulary=self.vocab_size, prefix=self.prefix
        )

    @classmethod
    def load(
        cls, folder: str | Path, data: DataConfig, model: ModelConfig | None = None
    ) -> SubwordFeaturizer:
        # Folders saved before 2026-12 keep the prefix only in the model section.
        prefix = read_spec(folder).get("prefix", model.text_prefix if model is not None else "")
        return cls(Path(folder) / cls.FOLDER, data.max_tokens, prefix)

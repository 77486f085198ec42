"""The token featurizer of the `transformer` family: a pretrained transformer's own tokenizer,
read from the model folder's `tokenizer.json` by the `tokenizers` library (what `transformers`'
fast tokenizers run), so that the torch-free ONNX runtime tokenises as training did."""

from __future__ import annotations

import hashlib
import json
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

# What a transformers folder says about its tokenizer besides tokenizer.json: its special
# tokens (tokenizer_config.json, or special_tokens_map.json in older folders).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class SubwordFeaturizer(TokenFeaturizer):
    """A transformer's own tokenizer: titles become its pieces, pieces its ids.

    The cache stores the pieces (with the special tokens, cut at `max_tokens` by the
    tokenizer itself, so the closing token stays); `ids` maps them with the tokenizer's
    vocabulary, which is fixed (nothing to fit). The model folder keeps a copy of the
    tokenizer's files and of the transformer's config in `transformer/`, so it needs nothing
    else.
    """

    kind = "subword"
    FOLDER = "transformer"

    def __init__(self, folder: Path, max_tokens: int, prefix: str = ""):
        self.folder = Path(folder)
        self.max_tokens = max_tokens
        self.prefix = prefix
        self._tokenizer = None
        self._special: dict[str, int] = {}

    @classmethod
    def of_model(cls, folder: str | Path, data: DataConfig, prefix: str = "") -> SubwordFeaturizer:
        """The tokenizer of the `transformers` model folder `folder`."""
        if not (Path(folder) / "config.json").is_file():
            raise ConfigError(f"{folder}: not a transformers model folder (no config.json)")
        return cls(Path(folder), data.max_tokens, prefix)

    @property
    def tokenizer(self):
        """The folder's `tokenizers.Tokenizer`, cutting at `max_tokens`, padding nothing."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            path = self.folder / "tokenizer.json"
            if not path.is_file():
                raise ConfigError(
                    f"{self.folder}: no tokenizer.json (the transformer family reads a fast "
                    "tokenizer's file)"
                )
            tokenizer = Tokenizer.from_file(str(path))
            tokenizer.no_padding()
            tokenizer.enable_truncation(self.max_tokens)
            self._special = self._special_ids(tokenizer)
            self._tokenizer = tokenizer
        return self._tokenizer

    def _special_ids(self, tokenizer) -> dict[str, int]:
        """The ids of the pad and unknown tokens that the folder's configuration names."""
        named: dict[str, Any] = {}
        for name in reversed(TOKENIZER_FILES[1:]):  # tokenizer_config.json wins
            path = self.folder / name
            if path.is_file():
                named.update(json.loads(path.read_text(encoding="utf-8")))
        found = {}
        for role in ("pad_token", "unk_token"):
            token = named.get(role)
            token = token.get("content") if isinstance(token, dict) else token
            found[role] = tokenizer.token_to_id(token) if isinstance(token, str) else None
        if found["pad_token"] is None:
            raise ConfigError(f"{self.folder}: the tokenizer has no padding token")
        if found["unk_token"] is None:
            found["unk_token"] = found["pad_token"]  # a byte-level tokenizer knows every piece
        return found

    @property
    def pad_id(self) -> int:  # type: ignore[override]
        self.tokenizer  # noqa: B018 (reads the special ids)
        return int(self._special["pad_token"])

    @property
    def unk_id(self) -> int:  # type: ignore[override]
        self.tokenizer  # noqa: B018
        return int(self._special["unk_token"])

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

    def _ids_of(self, titles: list[str]) -> list[list[int]]:
        encoded = self.tokenizer.encode_batch(
            [self.prefix + (t or "") for t in titles], add_special_tokens=True
        )
        return [e.ids for e in encoded]

    def pieces(self, titles: pa.Array | list[str]) -> TokenizedChunk:
        titles = titles.to_pylist() if isinstance(titles, pa.Array) else list(titles)
        encoded = self._ids_of(titles)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        flat = np.fromiter(
            (i for ids in encoded for i in ids), dtype=np.int64, count=int(lengths.sum())
        )
        distinct, codes = np.unique(flat, return_inverse=True)
        names = [self.tokenizer.id_to_token(i) for i in distinct.tolist()]
        row = np.repeat(np.arange(len(encoded), dtype=np.int64), lengths)
        return TokenizedChunk(
            vocabulary=names, codes=codes.astype(np.int64), row=row, n_rows=len(encoded)
        )

    def ids(self, names: list[str]) -> np.ndarray:
        unk, tokenizer = self.unk_id, self.tokenizer
        ids = (tokenizer.token_to_id(name) for name in names)
        return np.fromiter((unk if i is None else i for i in ids), dtype=np.int64, count=len(names))

    def encode(self, titles: list[str] | pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """The tokenizer's ids straight (no detour through piece names), padded."""
        titles = titles.to_pylist() if isinstance(titles, pa.Array) else list(titles)
        encoded = self._ids_of(titles)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        matrix = np.full((len(encoded), max(int(lengths.max(initial=0)), 1)), self.pad_id)
        for row, ids in zip(matrix, encoded):
            row[: len(ids)] = ids
        return matrix.astype(np.int64), lengths

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def save(self, folder: str | Path) -> None:
        target = Path(folder) / self.FOLDER
        target.mkdir(parents=True, exist_ok=True)
        for name in (*TOKENIZER_FILES, "config.json"):
            if (self.folder / name).is_file():
                shutil.copyfile(self.folder / name, target / name)
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

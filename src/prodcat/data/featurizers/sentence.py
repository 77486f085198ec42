"""The vector featurizer of the `encoder` family: a frozen sentence encoder
(`prodcat.encoders.sentence`) gives each title one vector.

Its cache pieces are prodcat's words (the token cache is shared with the word families and
indexes the rows); the vectors of a cached file live beside its token ids
(`features-KEY.f16`, float16, one row per cached title, in the cache's row order), computed
once per encoder and file. Prediction rounds to float16 too, so a title's vector is the same
on both paths.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from prodcat.atomic import fsync_file, write_text_atomic
from prodcat.config import ColumnsConfig, DataConfig, TokenizerConfig
from prodcat.data.cache import EncodedFile, blank_titles, default_cache_root
from prodcat.data.featurizers.base import VectorFeaturizer, read_spec, write_spec
from prodcat.data.readers import TableReader
from prodcat.data.text import TokenizedChunk, WordPieces, tokenize
from prodcat.encoders.sentence import (
    FEATURE_DTYPE,
    EncoderSettings,
    SentenceEncoder,
    encoder_spec,
    finish,
    load_encoder,
)

if TYPE_CHECKING:
    from prodcat.config import ModelConfig


class SentenceFeaturizer(VectorFeaturizer):
    """A frozen sentence encoder: each title becomes one vector."""

    kind = "sentence"

    def __init__(
        self,
        tokenizer: TokenizerConfig,
        max_tokens: int,
        encoder: EncoderSettings,
        cache_root: Path | None = None,
    ):
        self.tokenizer = tokenizer
        self.cache_root = cache_root  # where imported encoders (E5) are kept
        self.max_tokens = max_tokens
        self.settings = EncoderSettings.model_validate(
            encoder.model_dump(include=set(EncoderSettings.model_fields))
        )
        self._encoder: SentenceEncoder | None = None
        self._dim: int | None = None

    @classmethod
    def from_config(cls, data: DataConfig, encoder: EncoderSettings) -> SentenceFeaturizer:
        return cls(data.tokenizer, data.max_tokens, encoder, data.cache_dir)

    def cache_spec(self) -> dict[str, Any]:
        # The word featurizer's pieces, so the token cache is shared with the word families.
        return WordPieces(self.tokenizer, self.max_tokens).cache_spec()

    def pieces(self, titles: pa.Array | list[str]) -> TokenizedChunk:
        return tokenize(titles, self.tokenizer)

    def encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            self._encoder = load_encoder(self.settings, self.cache_root or default_cache_root())
            self._dim = self._encoder.dim
        return self._encoder

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.encoder()
        return self._dim

    def embed(self, titles: list[str]) -> np.ndarray:
        size = self.settings.encode_batch_size
        parts = [
            finish(self.encoder().embed(titles[i : i + size]), self.settings.normalize)
            for i in range(0, len(titles), size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def file_vectors(
        self, file: EncodedFile, progress: Callable[[str, int, int], None] | None = None
    ) -> np.ndarray:
        name = f"{file.source} into vectors"
        report = (lambda done, total: progress(name, done, total)) if progress else None
        vectors = cached_vectors(file, self.settings, self.encoder, report)
        self._dim = vectors.shape[1]
        return vectors

    def save(self, folder: str | Path) -> None:
        write_spec(folder, self.kind, dim=self.dim, **self.settings.model_dump(mode="json"))

    @classmethod
    def load(
        cls, folder: str | Path, data: DataConfig, model: ModelConfig | None = None
    ) -> SentenceFeaturizer:
        spec = read_spec(folder)
        # Folders saved before 2026-12 keep the encoder's settings only in the model section.
        saved = spec if "normalize" in spec else (model.model_dump() if model else {})
        settings = {k: v for k, v in saved.items() if k in EncoderSettings.model_fields}
        featurizer = cls.from_config(data, EncoderSettings.model_validate(settings))
        featurizer._dim = spec["dim"]
        return featurizer


def cached_titles(file: EncodedFile) -> Iterator[list[str]]:
    """The titles of a cached file, batch by batch, in the cache's row order."""
    fields = {k: v for k, v in file.meta["fields"].items() if v is not None}
    reader = TableReader(file.source, ColumnsConfig(**fields), file.meta["format"])
    for batch in reader.batches():
        text = batch.column("text")
        keep = ~blank_titles(text, len(batch))
        titles = pa.chunked_array(text).combine_chunks().filter(pa.array(keep))
        yield titles.to_pylist()


def cached_vectors(
    file: EncodedFile,
    settings: EncoderSettings,
    encoder: Callable[[], SentenceEncoder],
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """(rows, dim) float16 vectors of every title of a cached file, computed once.

    `encoder()` is called only when the vectors are not cached yet.
    """
    spec = json.dumps(encoder_spec(settings), sort_keys=True, default=str)
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    path = file.folder / f"features-{key}.f16"
    meta = file.folder / f"features-{key}.json"
    if meta.is_file():
        dim = json.loads(meta.read_text())["dim"]
        shape = (file.n_rows, dim)
        if file.n_rows == 0:
            return np.zeros(shape, dtype=FEATURE_DTYPE)
        return np.memmap(path, dtype=FEATURE_DTYPE, mode="r", shape=shape)
    model = encoder()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    done = 0
    try:
        with open(tmp, "wb") as out:
            for titles in cached_titles(file):
                for start in range(0, len(titles), settings.encode_batch_size):
                    chunk = titles[start : start + settings.encode_batch_size]
                    vectors = finish(model.embed(chunk), settings.normalize)
                    out.write(vectors.astype(FEATURE_DTYPE).tobytes())
                    done += len(chunk)
                    if progress:
                        progress(done, file.n_rows)
        if done != file.n_rows:
            raise RuntimeError(f"{file.source}: read {done} titles, the cache has {file.n_rows}")
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    # The metadata marks the vectors complete: written whole, after them, or not at all.
    write_text_atomic(meta, json.dumps({"dim": model.dim, "spec": json.loads(spec)}))
    return cached_vectors(file, settings, encoder)

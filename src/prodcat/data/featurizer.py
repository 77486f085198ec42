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

A dense featurizer (`SentenceFeaturizer`, for frozen sentence encoders) gives one vector per
title instead of ids: `file_features(file)` on the cache path (computed once, cached beside
the file's pieces, which still index its rows) and `embed(titles)` on the predict path, the
same encoder both ways.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from prodcat.config import (
    Config,
    DataConfig,
    EncoderConfig,
    ModelConfig,
    TokenizerConfig,
    TransformerConfig,
)
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
    dense: ClassVar[bool] = False  # gives one vector per title (`file_features`), not ids
    # Model ids per piece: `ids` gives (n, pieces_per_token) when above 1, a piece's ids side
    # by side in the model's input (a word and its character n-grams, `NgramFeaturizer`).
    pieces_per_token: int = 1
    id_counts: np.ndarray | None = None  # training occurrences of each model id, after fit
    fitted_rows: int | None = None  # the training titles it was fitted on
    show_progress: bool = False  # a bar for long encoding work (sentence encoders)

    @classmethod
    def from_config(cls, data: DataConfig, model: ModelConfig | None = None) -> Featurizer:
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
        """Model ids of piece names (`unk_id` where unknown): (n,), or (n, pieces_per_token)."""
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, titles: list[str] | pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(N, T * pieces_per_token) int64 model ids padded with `pad_id` (T: the longest
        title, at most `max_tokens`; a token's `pieces_per_token` ids side by side), and the
        (N,) lengths in tokens."""
        chunk = self.pieces(titles)
        ids = self.ids(chunk.vocabulary)[chunk.codes]
        longest = int(chunk.lengths().max(initial=0))
        width = max(min(longest, self.max_tokens), 1)
        matrix, lengths = padded_ids(ids, chunk.row, chunk.n_rows, width, np.int64, self.pad_id)
        # (N, T, pieces) -> (N, T * pieces); spelled out, as -1 is ambiguous for no titles.
        matrix = matrix.reshape(chunk.n_rows, int(np.prod(matrix.shape[1:])))
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
    def load(cls, folder: str | Path, cfg: Config) -> Featurizer:
        raise NotImplementedError

    def file_features(self, file) -> np.ndarray:
        """(rows, D) vectors of a cached file's titles (dense featurizers only)."""
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
    def from_config(
        cls, data: DataConfig, model: ModelConfig | None = None
    ) -> VocabularyFeaturizer:
        return cls(data.tokenizer, data.max_tokens, **cls.vocabulary_settings(data))

    @staticmethod
    def vocabulary_settings(data: DataConfig) -> dict[str, Any]:
        """How the word vocabulary is built, from the data config."""
        return {
            "min_count": data.min_count,
            "max_vocab": data.max_vocab,
            "token_to_index": data.token_to_index,
        }

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
        self.id_counts = self.token_counts

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
    def load(cls, folder: str | Path, cfg: Config | DataConfig) -> VocabularyFeaturizer:
        featurizer = cls.from_config(cfg.data if isinstance(cfg, Config) else cfg)
        featurizer.vocabulary = Vocabulary.load(Path(folder) / "vocab.txt")
        return featurizer


class NgramFeaturizer(VocabularyFeaturizer):
    """Words and the hashed character n-grams inside them: fastText's subword features.

    A word's model ids are its vocabulary id (padding if training never saw it) followed by
    the ids of the n-grams of `<word>` from `min_n` to `max_n` characters, each hashed
    (CRC-32 of its UTF-8 bytes) into one of `buckets` rows placed after the vocabulary's.
    So "hidrolavadora" and an unseen "hidrolavadoras" share most of their ids. The cache
    holds words, as for `VocabularyFeaturizer` (the same cache serves both); the n-grams are
    looked up when a file's pieces are mapped to model ids, once per split.
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
        super().__init__(tokenizer, max_tokens, **settings)
        self.buckets = buckets
        self.min_n, self.max_n = min_n, max_n
        self.pieces_per_token = 1 + per_word

    @classmethod
    def from_config(cls, data: DataConfig, model: ModelConfig | None = None) -> NgramFeaturizer:
        if model is None or not model.char_ngram_buckets:
            raise ProdcatError("the ngrams featurizer needs model.char_ngram_buckets")
        return cls(
            data.tokenizer,
            data.max_tokens,
            buckets=model.char_ngram_buckets,
            min_n=model.char_ngram_min,
            max_n=model.char_ngram_max,
            per_word=model.char_ngrams_per_word,
            **cls.vocabulary_settings(data),
        )

    def cache_spec(self) -> dict[str, Any]:
        # The cache holds words: the one of the vocabulary featurizer, shared with it.
        return VocabularyFeaturizer(self.tokenizer, self.max_tokens).cache_spec()

    def char_ngrams(self, word: str) -> list[str]:
        """The character n-grams of `<word>`, the shortest first, at most `pieces_per_token - 1`."""
        marked = f"<{word}>"
        grams = [
            marked[i : i + n]
            for n in range(self.min_n, self.max_n + 1)
            for i in range(len(marked) - n + 1)
        ]
        return grams[: self.pieces_per_token - 1]

    def ids(self, names: list[str]) -> np.ndarray:
        words = self._fitted().remap_from(names)
        table = np.full((len(names), self.pieces_per_token), self.pad_id, dtype=np.int32)
        # An unseen word is its n-grams alone, as in fastText, not the shared [UNK] vector;
        # a piece the cache itself forgot ([UNK] in the file) has nothing else.
        table[:, 0] = np.where(words == self.unk_id, self.pad_id, words)
        offset = len(self._fitted())
        for i, name in enumerate(names):
            if name in (PAD, UNK):
                table[i, 0] = self.pad_id if name == PAD else self.unk_id
                continue
            grams = self.char_ngrams(name)
            table[i, 1 : 1 + len(grams)] = [
                offset + zlib.crc32(g.encode("utf-8")) % self.buckets for g in grams
            ]
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

    def save(self, folder: str | Path) -> None:
        super().save(folder)
        spec = {
            "kind": self.kind,
            "vocabulary": "vocab.txt",
            "size": len(self._fitted()),
            "buckets": self.buckets,
            "n": [self.min_n, self.max_n],
            "pieces_per_token": self.pieces_per_token,
        }
        (Path(folder) / SPEC_FILE).write_text(json.dumps(spec, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, cfg: Config) -> NgramFeaturizer:
        featurizer = cls.from_config(cfg.data, cfg.model)
        featurizer.vocabulary = Vocabulary.load(Path(folder) / "vocab.txt")
        return featurizer


class SentenceFeaturizer(Featurizer):
    """A frozen sentence encoder: each title becomes one vector (prodcat.data.sentence).

    Its cache pieces are prodcat's words (the token cache is shared with the word families
    and indexes the rows); the vectors are cached beside them, once per encoder and file.
    """

    kind = "sentence"
    dense = True

    def __init__(
        self,
        tokenizer: TokenizerConfig,
        max_tokens: int,
        encoder: EncoderConfig,
        cache_root: Path | None = None,
    ):
        self.tokenizer = tokenizer
        self.cache_root = cache_root  # where imported encoders (E5) are kept
        self.max_tokens = max_tokens
        self.encoder_cfg = encoder
        self._encoder = None
        self._dim: int | None = None

    @classmethod
    def from_config(cls, data: DataConfig, model: ModelConfig | None = None) -> SentenceFeaturizer:
        if not isinstance(model, EncoderConfig):
            raise ProdcatError("the sentence featurizer needs the encoder family's config")
        return cls(data.tokenizer, data.max_tokens, model, data.cache_dir)

    def cache_spec(self) -> dict[str, Any]:
        # The word featurizer's pieces, so the token cache is shared with the word families.
        return VocabularyFeaturizer(self.tokenizer, self.max_tokens).cache_spec()

    def pieces(self, titles: pa.Array | list[str]) -> TokenizedChunk:
        return tokenize(titles, self.tokenizer)

    def fit(self, names: list[str], counts: np.ndarray) -> None:
        """Nothing to fit: the encoder is frozen."""

    def ids(self, names: list[str]) -> np.ndarray:
        return np.zeros(len(names), dtype=np.int64)

    @property
    def vocab_size(self) -> int:
        return 0

    def encoder(self):
        from prodcat.data.sentence import load_encoder

        if self._encoder is None:
            self._encoder = load_encoder(self.encoder_cfg, self.cache_root)
            self._dim = self._encoder.dim
        return self._encoder

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.encoder()
        return self._dim

    def embed(self, titles: list[str]) -> np.ndarray:
        """(N, D) vectors of raw titles, exactly as the cached ones were made."""
        from prodcat.data.sentence import finish

        size = self.encoder_cfg.encode_batch_size
        parts = [
            finish(self.encoder().embed(titles[i : i + size]), self.encoder_cfg.normalize)
            for i in range(0, len(titles), size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def file_features(self, file) -> np.ndarray:
        from prodcat.data.sentence import file_features

        progress = _progress(file) if self.show_progress else None
        vectors = file_features(file, self.encoder_cfg, self.encoder, progress)
        self._dim = vectors.shape[1]
        return vectors

    def __call__(self, titles: list[str]) -> Batch:
        import torch

        from prodcat.data.batches import Batch

        vectors = torch.from_numpy(self.embed(list(titles)))
        n = len(vectors)
        return Batch(
            torch.zeros((n, 0), dtype=torch.int64),
            torch.zeros(n, dtype=torch.int64),
            None,
            None,
            vectors,
        )

    def save(self, folder: str | Path) -> None:
        spec = {"kind": self.kind, "encoder": self.encoder_cfg.encoder, "dim": self.dim}
        (Path(folder) / SPEC_FILE).write_text(json.dumps(spec, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, cfg: Config) -> SentenceFeaturizer:
        featurizer = cls.from_config(cfg.data, cfg.model)
        spec = json.loads((Path(folder) / SPEC_FILE).read_text(encoding="utf-8"))
        featurizer._dim = spec["dim"]
        return featurizer


class SubwordFeaturizer(Featurizer):
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
    def from_config(cls, data: DataConfig, model: ModelConfig | None = None) -> SubwordFeaturizer:
        from prodcat.data import sentence

        if not isinstance(model, TransformerConfig):
            raise ProdcatError("the subword featurizer needs the transformer family's config")
        if model.pretrained == "e5":
            folder = sentence.e5_folder(data.cache_dir)
        elif model.pretrained == "minilm":
            folder = sentence.minilm_folder()
        else:
            folder = model.model_path
        if not (Path(folder) / "config.json").is_file():
            raise ProdcatError(f"{folder}: not a transformers model folder (no config.json)")
        return cls(folder, data.max_tokens, model.text_prefix)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
            if self._tokenizer.pad_token_id is None:
                raise ProdcatError(f"{self.folder}: the tokenizer has no padding token")
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

    def fit(self, names: list[str], counts: np.ndarray) -> None:
        """Nothing to fit: the tokenizer's vocabulary is the model's."""

    def ids(self, names: list[str]) -> np.ndarray:
        return np.asarray(self.tokenizer.convert_tokens_to_ids(list(names)), dtype=np.int64)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def save(self, folder: str | Path) -> None:
        target = Path(folder) / self.FOLDER
        self.tokenizer.save_pretrained(str(target))
        shutil.copyfile(self.folder / "config.json", target / "config.json")
        spec = {"kind": self.kind, "folder": self.FOLDER, "vocabulary": self.vocab_size}
        (Path(folder) / SPEC_FILE).write_text(json.dumps(spec, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, cfg: Config) -> SubwordFeaturizer:
        return cls(Path(folder) / cls.FOLDER, cfg.data.max_tokens, cfg.model.text_prefix)


def _progress(file):
    """A bar for encoding a file's titles, which takes minutes on a CPU."""
    from rich.progress import Progress

    from prodcat.training.progress import STDERR

    state: dict[str, Any] = {}

    def report(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = Progress(console=STDERR, transient=True)
            state["bar"].start()
            state["task"] = state["bar"].add_task(
                f"vectors of {Path(file.source).name}", total=total
            )
        state["bar"].update(state["task"], completed=done)
        if done >= total:
            state["bar"].stop()

    return report


FEATURIZERS: dict[str, type[Featurizer]] = {
    VocabularyFeaturizer.kind: VocabularyFeaturizer,
    NgramFeaturizer.kind: NgramFeaturizer,
    SentenceFeaturizer.kind: SentenceFeaturizer,
    SubwordFeaturizer.kind: SubwordFeaturizer,
}


def _featurizer_class(kind: str) -> type[Featurizer]:
    if kind not in FEATURIZERS:
        raise ProdcatError(f"unknown featurizer '{kind}' (known: {', '.join(FEATURIZERS)})")
    return FEATURIZERS[kind]


def make_featurizer(cfg: Config | DataConfig) -> Featurizer:
    """The unfitted featurizer the configured family needs (a word vocabulary by default)."""
    if isinstance(cfg, DataConfig):
        return VocabularyFeaturizer.from_config(cfg)
    return _featurizer_class(cfg.model.featurizer).from_config(cfg.data, cfg.model)


def load_featurizer(folder: str | Path, cfg: Config) -> Featurizer:
    """The fitted featurizer saved in a model folder."""
    spec = json.loads((Path(folder) / SPEC_FILE).read_text(encoding="utf-8"))
    return _featurizer_class(spec["kind"]).load(folder, cfg)

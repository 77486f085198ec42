"""`TextClassifier`: embedder -> encoder -> classification head. Families differ in the encoder.

A model is built from its config, its number of classes and its fitted featurizer, which
says how many ids there are and which one pads. The embedder is a component the family
chooses (`build_embedder`): word families take `TokenEmbedder`; a transformer or a frozen
sentence encoder brings its own and has no word-embedding table. The settings shared by
families of a kind are config classes here (`ClassifierConfig`, `TableConfig`,
`WordModelConfig`), which each family's config extends.

A model saves its weights into a model folder and reads them back (`save_weights`,
`load_folder`); `prodcat.models.folder` writes and checks the rest of the folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pydantic import Field, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from prodcat.config import Config, DataConfig, ModelConfig
from prodcat.data.batches import Batch
from prodcat.data.dataset import Split, file_split
from prodcat.data.featurizers import (
    SPEC_FILE,
    Featurizer,
    NgramFeaturizer,
    VocabularyFeaturizer,
    load_featurizer,
)
from prodcat.data.vocab import LabelMap
from prodcat.errors import ConfigError, ProdcatError
from prodcat.evaluation.calibration import Calibration
from prodcat.evaluation.evaluate import calibrate_split

if TYPE_CHECKING:
    from prodcat.data.featurizers import TokenFeaturizer

WEIGHTS = "model.safetensors"


class ClassifierConfig(ModelConfig):
    """A model that classifies each title's vector with a head of its own."""

    # A linear head over the encoding: deeper heads overfit tens of thousands of titles.
    hidden_layers: list[int] = Field(default_factory=list)
    dropout: float = Field(0.0, ge=0, lt=1)


class TableConfig(ClassifierConfig):
    """A model whose first layer is a table with a row per word, per hashed character n-gram
    of a word and per hashed word bigram (the word families and the linear one)."""

    embedding_dim: int = Field(200, ge=1)
    ngram_buckets: int = Field(
        0, ge=0, description="hashed word-bigram embeddings added to the tokens (0: none)"
    )
    # fastText's subword features: a word's vector is the mean of its own embedding and those
    # of the character n-grams of "<word>", hashed into this many rows. Words never seen in
    # training (brands, model codes, typos) then still have a vector built from their parts.
    char_ngram_buckets: int = Field(
        0, ge=0, description="hashed character n-grams of every word, seen or not (0: none)"
    )
    char_ngram_min: int = Field(3, ge=1, description="shortest character n-gram")
    char_ngram_max: int = Field(5, ge=1, description="longest character n-gram")
    char_ngrams_per_word: int = Field(
        40, ge=1, description="n-grams kept per word (the shortest first)"
    )
    sparse_embeddings: bool = Field(
        True, description="update only the embedding rows a batch uses (much faster)"
    )
    embedding_dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _ngram_sizes(self) -> TableConfig:
        if self.char_ngram_min > self.char_ngram_max:
            raise ValueError(
                f"char_ngram_min ({self.char_ngram_min}) is above char_ngram_max "
                f"({self.char_ngram_max})"
            )
        return self


class WordModelConfig(TableConfig):
    """A word-embedding model (MLP, CNN, RNN): word vectors, pooled or read in order."""

    word_dropout: float = Field(
        0.0, ge=0, lt=1, description="share of a title's words hidden at random in training"
    )
    pretrained_embeddings: Path | None = Field(
        None, description="word vectors (word2vec/fastText text, or .bin) to start from"
    )
    freeze_embeddings: bool = Field(False, description="keep the pretrained vectors as they are")

    @model_validator(mode="after")
    def _frozen_needs_vectors(self) -> WordModelConfig:
        if self.freeze_embeddings and self.pretrained_embeddings is None:
            raise ValueError(
                "freeze_embeddings needs pretrained_embeddings (frozen random vectors learn "
                "nothing)"
            )
        return self


def word_featurizer(data: DataConfig, model: TableConfig) -> VocabularyFeaturizer:
    """The featurizer of a table's families: words, with their character n-grams when
    `char_ngram_buckets` is set."""
    if model.char_ngram_buckets:
        return NgramFeaturizer.from_config(
            data,
            buckets=model.char_ngram_buckets,
            min_n=model.char_ngram_min,
            max_n=model.char_ngram_max,
            per_word=model.char_ngrams_per_word,
        )
    return VocabularyFeaturizer.from_config(data)


class TitleReader:
    """How a model reads what it classifies: raw titles (`__call__`) and the rows of a
    labelled file (`split`), through its data settings and fitted featurizer."""

    def __init__(self, data: DataConfig, featurizer: Featurizer):
        self.data = data
        self.featurizer = featurizer

    def __call__(self, titles: list[str]) -> Batch:
        return self.featurizer(titles)

    def split(self, path: str | Path, labels: LabelMap, name: str = "evaluation") -> Split:
        return file_split(path, self.data, self.featurizer, labels, name)

    def encodings(self) -> list[tuple[str, Featurizer]]:
        """The featurizers whose (ids, lengths) the model's exported graph takes, in order,
        each with the folder (in the model folder) that keeps it."""
        return [(".", self.featurizer)]


# Odd multipliers of a multiplicative hash for word pairs (fastText hashes n-grams likewise).
_HASH_A, _HASH_B = 116_049_371, 2_654_435_761


def hashed_bigrams(
    words: torch.Tensor, pad_id: int, buckets: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) word ids -> the bucket of each bigram (t-1, t), and where both words exist."""
    # Shifted by one, padding first (concatenated: `nn.functional.pad` exports as 12 ONNX ops).
    prev = torch.cat([torch.full_like(words[:, :1], pad_id), words[:, :-1]], dim=1)
    valid = (prev != pad_id) & (words != pad_id)
    return (prev * _HASH_A + words * _HASH_B) % buckets, valid


def packed_bags(ids: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row of (N, K) ids as a bag for `embedding_bag`, padding left out before the
    lookup rather than skipped inside it (a row of 41 slots holds ~20 ids, and the sparse
    gradient would carry a row per slot: 3x slower): (flat ids, offsets, ids per row)."""
    used = ids != pad_id
    counts = used.sum(1)
    return ids[used], torch.cumsum(counts, 0) - counts, counts


class TokenEmbedder(nn.Module):
    """Token embeddings, plus optional hashed word-bigram embeddings, one vector per position.

    With `ngram_buckets`, position t also carries the bigram (t-1, t) hashed into a bucket
    of a second table; the two vectors are summed, as fastText does for its n-grams.
    With `pieces_per_token` k > 1 (character n-grams, `NgramFeaturizer`), the input holds k
    ids per word side by side, the word's first; the word's vector is the mean of their
    rows, padding left out (one `embedding_bag`, as fastText averages a word's n-grams).
    `word_dropout` hides whole words at random while training.
    """

    def __init__(
        self, vocab_size: int, cfg: TableConfig, pad_id: int = 0, pieces_per_token: int = 1
    ):
        super().__init__()
        sparse = cfg.sparse_embeddings
        self.pad_id = pad_id
        self.per_token = pieces_per_token
        self.word_dropout = cfg.word_dropout
        self.tokens = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=pad_id, sparse=sparse)
        self.buckets = cfg.ngram_buckets
        self.bigrams = (
            nn.Embedding(cfg.ngram_buckets, cfg.embedding_dim, sparse=sparse)
            if self.buckets
            else None
        )
        self.dropout = nn.Dropout(cfg.embedding_dropout)
        # Start small (uniform ±1/dim, as fastText does) rather than at PyTorch's N(0, 1):
        # rare tokens and bigram buckets get few updates and would stay mostly noise.
        # Measured on meli-es-51k (validation BAC, tuned MLP): 0.915 -> 0.925.
        bound = 1.0 / cfg.embedding_dim
        with torch.no_grad():
            for table in (self.tokens, self.bigrams):
                if table is not None:
                    table.weight.uniform_(-bound, bound)
            self.tokens.weight[pad_id].zero_()
        if cfg.freeze_embeddings:
            self.tokens.weight.requires_grad_(False)

    def load_pretrained(self, cfg: WordModelConfig, featurizer: Featurizer) -> dict[str, float]:
        """Start the table from `cfg.pretrained_embeddings`, row by row of the vocabulary.

        Rows of words the file lacks start at the found rows' scale. Returns coverage numbers.
        """
        from prodcat.data.vectors import fill_missing

        path = cfg.pretrained_embeddings
        if path is None:
            return {}
        if not isinstance(featurizer, VocabularyFeaturizer):
            raise ConfigError(f"the {featurizer.kind} featurizer cannot align word vectors")
        started = time.perf_counter()
        rows = featurizer.pretrained_rows(path)
        if rows.dim != self.dim:
            raise ConfigError(
                f"{path}: vectors of {rows.dim} dimensions, but model.embedding_dim is "
                f"{self.dim} (set it to {rows.dim})"
            )
        with torch.no_grad():
            found = torch.from_numpy(fill_missing(rows, pad_id=self.pad_id))
            self.tokens.weight[: len(found)].copy_(found)  # the words' rows, not the n-grams'
        report = rows.coverage(featurizer.token_counts)
        report["words_in_file"] = rows.words_in_file
        report["read_seconds"] = time.perf_counter() - started
        return report

    @property
    def dim(self) -> int:
        return self.tokens.embedding_dim

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T * pieces) ids -> (B, T, dim) vectors (`lengths` unused: padding is id 0)."""
        k = self.per_token
        if self.training and self.word_dropout:
            words = input_ids.view(input_ids.shape[0], -1, k)
            hidden = torch.rand(words.shape[:2], device=input_ids.device) < self.word_dropout
            input_ids = words.masked_fill(hidden.unsqueeze(-1), self.pad_id).flatten(1)
        if k > 1 and torch.onnx.is_in_onnx_export():
            # ONNX has no bag operator (torch writes embedding_bag as a loop): every slot's
            # row, padding weighing 0, averaged by one batched MatMul; shapes of -1 rather than
            # computed (each node costs a served title ~1 µs).
            n = input_ids.shape[0]
            bags = input_ids.reshape(-1, k)
            used = (bags != self.pad_id).to(self.tokens.weight.dtype)
            share = used / used.sum(1, keepdim=True).clamp(min=1)
            x = torch.matmul(share.unsqueeze(1), self.tokens.weight[bags]).reshape(n, -1, self.dim)
            input_ids = bags[:, 0].reshape(n, -1)  # the words, for their bigrams
        elif k > 1:
            n, width = input_ids.shape[0], input_ids.shape[1] // k
            bags = input_ids.reshape(n * width, k)
            flat, offsets, _ = packed_bags(bags, self.pad_id)
            x = nn.functional.embedding_bag(
                flat, self.tokens.weight, offsets, mode="mean", sparse=self.tokens.sparse
            ).view(n, width, -1)
            input_ids = bags[:, 0].view(n, width)  # the words, for their bigrams
        else:
            x = self.tokens(input_ids)
        if self.bigrams is not None:
            bucket, valid = hashed_bigrams(input_ids, self.pad_id, self.buckets)
            x = x + self.bigrams(bucket) * valid.unsqueeze(-1)
        return self.dropout(x)


def mlp_head(input_dim: int, hidden: list[int], n_classes: int, dropout: float) -> nn.Sequential:
    """Hidden layers (ReLU, dropout) and the output layer."""
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
    for size in hidden:
        layers += [nn.Linear(input_dim, size), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        input_dim = size
    layers.append(nn.Linear(input_dim, n_classes))
    return nn.Sequential(*layers)


def padding_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, T) True where a position holds a token."""
    positions = torch.arange(width, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


class TextClassifier(nn.Module):
    """Base of every family: embed tokens, encode them into one vector, classify it.

    A family implements `build_encoder` and `encode`; it may override `build_embedder`
    (its embedder is called with the ids and their lengths) and `build_head`.
    """

    def __init__(self, cfg: ClassifierConfig, n_classes: int, featurizer: Featurizer):
        super().__init__()
        self.cfg = cfg
        self.n_classes = n_classes
        self.embedder = self.build_embedder(featurizer)
        self.encoder_dim = self.build_encoder(self.embedder.dim)
        self.head = self.build_head()
        self.init_report: dict[str, float] = {}

    def build_head(self) -> nn.Module:
        """The layers from the encoding to the categories' logits."""
        return mlp_head(self.encoder_dim, self.cfg.hidden_layers, self.n_classes, self.cfg.dropout)

    def build_embedder(self, featurizer: TokenFeaturizer) -> nn.Module:
        """The component that turns ids into vectors; it has a `dim`."""
        return TokenEmbedder(
            featurizer.vocab_size, self.cfg, featurizer.pad_id, featurizer.pieces_per_token
        )

    def initialise(self, featurizer: Featurizer) -> dict[str, float]:
        """Load what a new model starts from (pretrained vectors); not done when reloading.

        Returns numbers worth recording (e.g. the vectors' coverage of the vocabulary).
        """
        if isinstance(self.embedder, TokenEmbedder):
            return {
                f"pretrained.{k}": v
                for k, v in self.embedder.load_pretrained(self.cfg, featurizer).items()
            }
        return {}

    def build_encoder(self, input_dim: int) -> int:
        """Create the encoder's layers; return the size of the vector `encode` returns."""
        raise NotImplementedError

    def encode(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, E) embeddings and (B,) lengths -> (B, encoder_dim)."""
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor | Batch,
        lengths: torch.Tensor | None = None,
        mix: tuple[torch.Tensor, float] | None = None,
    ):
        """Logits (B, n_classes) of a `Batch`, or of (B, T) ids and their (B,) lengths.

        Plain tensors let export and serving call the model without prodcat's dataclass.
        `mix` = (permutation, lam): each title's vector becomes lam x itself + (1 - lam) x
        that of the title the permutation pairs it with, before the head (mixup, in
        training).
        """
        vectors = self.title_vectors(input_ids, lengths)
        if mix is not None:
            partner, lam = mix
            vectors = vectors * lam + vectors[partner] * (1 - lam)
        return self.head(vectors)

    def title_vectors(
        self, input_ids: torch.Tensor | Batch, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, encoder_dim): what the head classifies."""
        if isinstance(input_ids, Batch):
            input_ids, lengths = input_ids.input_ids, input_ids.lengths
        if lengths is None:
            raise TypeError("forward(input_ids, lengths) needs the lengths")
        return self.encode(self.embedder(input_ids, lengths), lengths)

    def calibrate(
        self, validation: Split, batch_size: int, device: torch.device, autocast: bool = False
    ) -> tuple[Calibration, dict[str, float]]:
        """Fit what makes the probabilities honest on the validation rows (temperature
        scaling), and return it with the rows' metrics under it."""
        return calibrate_split(self, validation, batch_size, device, autocast)

    def onnx_module(self, reader: TitleReader) -> nn.Module:
        """The module `prodcat export` traces: called with the (input_ids, lengths) of each of
        `reader.encodings()`, it returns the logits. A family that cannot be exported raises a
        `ConfigError` saying why."""
        return IdsAndLengths(self)

    @classmethod
    def build(
        cls, cfg: Config, n_classes: int, featurizer: Featurizer, initialise: bool = True
    ) -> TextClassifier:
        """A new model of `cfg.model` over a fitted featurizer; `initialise`: load what it
        starts from (pretrained vectors), which a model about to get saved weights skips."""
        model = cls(cfg.model, n_classes, featurizer)
        model.init_report = model.initialise(featurizer) if initialise else {}
        return model

    def save_weights(self, folder: Path, float16: bool = False) -> None:
        """Write the weights into a model folder being written; `float16`: its float
        matrices in 16 bits (`load_state_dict` widens them back to the model's float32)."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        if float16:
            state = float16_state(state)
        try:
            save_file(state, str(folder / WEIGHTS))
        except SafetensorError as e:  # how safetensors reports a full disk
            raise OSError(f"cannot write {folder / WEIGHTS}: {e}") from None

    @classmethod
    def load_folder(
        cls, folder: Path, cfg: Config, labels: LabelMap
    ) -> tuple[TextClassifier, TitleReader]:
        """The model saved in `folder` (its checked files) and how it reads titles."""
        for name in (SPEC_FILE, WEIGHTS):
            if not (folder / name).is_file():
                raise ProdcatError(f"{folder}: not a model folder (no {name})")
        featurizer = load_featurizer(folder, cfg.data, cfg.model)
        model = cls.build(cfg, len(labels), featurizer, initialise=False)
        try:
            model.load_state_dict(load_file(str(folder / WEIGHTS)))
        except (SafetensorError, RuntimeError, OSError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ProdcatError(f"{folder / WEIGHTS}: cannot load the weights ({reason})") from None
        return model, TitleReader(cfg.data, featurizer)


def float16_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with each float32 matrix in float16 where float16 holds it (no value beyond
    its range); vectors (biases, idf, scales) and everything else as they are."""
    return {name: _half(tensor) for name, tensor in state.items()}


def _half(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype != torch.float32 or tensor.dim() < 2:
        return tensor
    if tensor.numel() and tensor.abs().max() >= torch.finfo(torch.float16).max:
        return tensor
    return tensor.half()


class IdsAndLengths(nn.Module):
    """A model called with plain (ids, lengths) tensors, as the ONNX exporter calls it."""

    def __init__(self, model: TextClassifier):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, lengths)

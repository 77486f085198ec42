"""A linear model over a TF-IDF-like bag of features: the classical baseline, trained and
served like every other family.

A title is the bag of its words, the character n-grams of its words and its word bigrams
(`model.char_ngram_buckets`, `model.ngram_buckets`), each weighted by its inverse document
frequency and the bag L2-normalised, as scikit-learn's `TfidfVectorizer` does; the bag is
projected to `embedding_dim` dimensions by one `embedding_bag` and classified by the head
(a linear layer unless `hidden_layers` says otherwise). With `full_rank`, the table has one
column per category and the bag is the categories' scores, plus a bias: scikit-learn's
linear model over the same features.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from prodcat.data.featurizers import NgramFeaturizer, TokenFeaturizer
from prodcat.models.base import (
    TableConfig,
    TextClassifier,
    hashed_bigrams,
    word_featurizer,
)
from prodcat.registry import register


class LinearConfig(TableConfig):
    """The classical baseline as a prodcat model: a TF-IDF-like bag of the title's words,
    their character n-grams and word bigrams, L2-normalised, into a linear layer.

    Every feature weighs its inverse document frequency (from the training rows); the bag is
    projected to `embedding_dim` dimensions (a low-rank linear model), or, with `full_rank`,
    scored by one weight per feature and category: scikit-learn's model, trained best with
    `training.loss: squared_hinge` and `optimizer: adagrad` (`configs/fast.yaml`).
    """

    family: Literal["linear"] = "linear"
    embedding_dim: int = Field(300, ge=1)
    full_rank: bool = Field(
        False,
        description="no projection: one weight per feature and category, as scikit-learn's "
        "linear models have (embedding_dim is unused; the table is features x categories, "
        "~1 GB for 400 k features and 632 categories)",
    )
    char_ngram_buckets: int = Field(
        200_000, ge=0, description="hashed character n-grams of every word, seen or not (0: none)"
    )
    ngram_buckets: int = Field(200_000, ge=0, description="hashed word-bigram features (0: none)")
    idf: bool = Field(True, description="weigh each feature by its inverse document frequency")
    separate_norms: bool = Field(
        False,
        description="L2-normalise the words (with their bigrams) and the character n-grams "
        "each on its own, as a FeatureUnion of two TfidfVectorizers does (false: the whole bag "
        "at once, ~150 n-grams then drowning ~10 words)",
    )
    min_count: int = Field(
        1,
        ge=1,
        description="features seen fewer times in training weigh 0 (scikit-learn's min_df)",
    )
    norm: Literal["distinct", "occurrences"] = Field(
        "distinct",
        description="the bag's L2 norm over its distinct features, one seen twice weighing "
        "2 idf (scikit-learn's), or over every occurrence, each weighing its idf: the same "
        "bag but for titles that repeat a feature, and no search for repeats when a title is "
        "served (a third less time per title under ONNX Runtime for configs/fast.yaml)",
    )

    @model_validator(mode="after")
    def _full_rank_has_no_hidden_layers(self) -> LinearConfig:
        if self.full_rank and self.hidden_layers:
            raise ValueError(
                "full_rank scores categories straight from the bag: hidden_layers must be []"
            )
        return self


class BagEmbedder(nn.Module):
    """(B, T) ids -> (B, D): the idf-weighted, L2-normalised bag of features, projected."""

    def __init__(self, featurizer: TokenFeaturizer, cfg: LinearConfig, dim: int):
        super().__init__()
        self.pad_id = featurizer.pad_id
        self.per_token = featurizer.pieces_per_token
        self.n_ids = featurizer.vocab_size
        self.buckets = cfg.ngram_buckets
        # Ids from here to n_ids are character n-grams; below, words (bigrams come after).
        ngrams = featurizer.buckets if isinstance(featurizer, NgramFeaturizer) else 0
        self.char_start = self.n_ids - ngrams
        self.separate_norms = cfg.separate_norms
        self.occurrence_norm = cfg.norm == "occurrences"
        self.min_count = cfg.min_count
        rows = self.n_ids + self.buckets
        # A full-rank model starts as linear models do, every category scoring 0 (built
        # zeroed: N(0, 1) for ~300 M weights first would take 2 s).
        start = torch.zeros(rows, dim) if cfg.full_rank else None
        self.table = nn.Embedding(rows, dim, sparse=cfg.sparse_embeddings, _weight=start)
        if not cfg.full_rank:
            with torch.no_grad():
                self.table.weight.uniform_(-1.0 / dim, 1.0 / dim)
        # Saved with the weights: a reloaded model weighs features as the trained one did.
        self.register_buffer("idf", torch.ones(rows))
        self.dropout = nn.Dropout(cfg.embedding_dropout)

    def fit_idf(self, featurizer: TokenFeaturizer) -> dict[str, float]:
        """idf = ln((1 + titles) / (1 + occurrences)) + 1 of each feature (scikit-learn's
        smoothed idf, occurrences standing for document frequency: titles rarely repeat a
        word); word bigrams and never-seen features get the largest. Features seen fewer than
        `min_count` times weigh 0 (scikit-learn's min_df)."""
        counts = featurizer.id_counts
        if counts is None:
            return {}
        counts = torch.as_tensor(counts, dtype=torch.float64)
        rows = float(featurizer.fitted_rows or counts.max().item())
        idf = torch.full((len(self.idf),), math.log(rows + 1) + 1, dtype=torch.float64)
        idf[: len(counts)] = torch.log((1 + rows) / (1 + counts)) + 1
        idf[: len(counts)][counts < self.min_count] = 0.0
        with torch.no_grad():
            self.idf.copy_(idf.float())
        return {"features_seen": float((counts > 0).sum().item())}

    @property
    def dim(self) -> int:
        return self.table.embedding_dim

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        n, k = input_ids.shape[0], self.per_token
        ids = input_ids
        if self.buckets:
            bucket, valid = hashed_bigrams(
                input_ids.view(n, -1, k)[:, :, 0], self.pad_id, self.buckets
            )
            ids = torch.cat([ids, torch.where(valid, self.n_ids + bucket, self.pad_id)], dim=1)
        width = ids.shape[1]
        used = ids != self.pad_id
        positions = used.view(-1).nonzero().squeeze(1)
        flat = ids.view(-1)[positions]
        owner = torch.div(positions, width, rounding_mode="trunc")  # ids are >= 0: one Div
        # The bag's Euclidean norm, two per title: with separate_norms, the words' part (with
        # bigrams) and the n-grams' part each have theirs.
        part = owner * 2
        if self.separate_norms:
            part = part + _is_ngram(flat, self.char_start, self.n_ids)
        idf = self.idf[flat]
        norm = torch.zeros(2 * n, dtype=self.idf.dtype, device=ids.device)
        if self.occurrence_norm:
            norm = norm.scatter_add(0, part, idf * idf)
        else:  # over distinct features, as TfidfVectorizer's: each (title, feature) pair once
            rows = len(self.idf)
            pairs, counts = torch.unique(owner * rows + flat, return_counts=True)
            feature = pairs % rows
            pair_part = torch.div(pairs, rows, rounding_mode="trunc") * 2
            if self.separate_norms:
                pair_part = pair_part + _is_ngram(feature, self.char_start, self.n_ids)
            pair_weight = counts.to(self.idf.dtype) * self.idf[feature]
            norm = norm.scatter_add(0, pair_part, pair_weight * pair_weight)
        weights = idf / norm.sqrt().clamp(min=1e-6)[part]
        per_title = used.sum(1)
        offsets = torch.cumsum(per_title, 0) - per_title
        if torch.onnx.is_in_onnx_export():
            return self.dropout(self._slot_bag(flat, weights, owner, per_title, offsets))
        table, rows = self.table.weight, flat
        if torch.is_grad_enabled() and table.requires_grad:
            # Look each distinct feature up once and bag those rows: the sparse gradient then
            # has a row per distinct feature of the batch, not one per occurrence, and its rows
            # rise already (no coalescing). An epoch of configs/fast.yaml: 13 s, not 58 s.
            features, rows = torch.unique(flat, return_inverse=True)
            table = nn.functional.embedding(features, table, sparse=self.table.sparse)
        bag = nn.functional.embedding_bag(
            rows, table, offsets, mode="sum", per_sample_weights=weights
        )
        return self.dropout(bag)

    def _slot_bag(self, flat, weights, owner, per_title, offsets) -> torch.Tensor:
        """The bag as the exported graph computes it (ONNX has no bag operator, and torch
        writes embedding_bag as a loop over titles): each title's features and weights laid
        into a (titles, longest) grid of slots, the slots' rows gathered, and each title's
        weights times its rows as one batched MatMul. Every slot is written once, so no
        scatter adds: ScatterND's add races on several threads (onnxruntime#18048; a title's
        probabilities moved by up to 0.05 from one call to the next), and ScatterElements
        adds an element at a time (600 µs, not 40, for one title of configs/fast.yaml)."""
        n = per_title.shape[0]
        longest = per_title.max()
        rank = torch.arange(flat.shape[0], device=flat.device) - offsets[owner]
        slot = owner * longest + rank
        grid = torch.arange(n * longest, device=flat.device)  # dynamic in the graph: Range
        slot_ids = torch.full_like(grid, self.pad_id).scatter(0, slot, flat)
        slot_weights = torch.zeros_like(grid, dtype=weights.dtype).scatter(0, slot, weights)
        rows = self.table.weight[slot_ids].view(n, -1, self.dim)
        return torch.matmul(slot_weights.view(n, 1, -1), rows)[:, 0]  # no Squeeze: an If node


def _is_ngram(ids: torch.Tensor, start: int, end: int) -> torch.Tensor:
    return ((ids >= start) & (ids < end)).long()


class CategoryBias(nn.Module):
    """The full-rank model's head: the bag holds the categories' scores; add a bias each."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores + self.bias


@register("linear", config=LinearConfig, featurizer=word_featurizer)
class LinearClassifier(TextClassifier):
    def build_embedder(self, featurizer: TokenFeaturizer) -> nn.Module:
        dim = self.n_classes if self.cfg.full_rank else self.cfg.embedding_dim
        return BagEmbedder(featurizer, self.cfg, dim)

    def build_head(self) -> nn.Module:
        return CategoryBias(self.n_classes) if self.cfg.full_rank else super().build_head()

    def initialise(self, featurizer: TokenFeaturizer) -> dict[str, float]:
        return self.embedder.fit_idf(featurizer) if self.cfg.idf else {}

    def build_encoder(self, input_dim: int) -> int:
        return input_dim

    def encode(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return embedded  # the bag is the title's vector already

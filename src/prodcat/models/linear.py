"""A linear model over a TF-IDF-like bag of features: the classical baseline, trained and
served like every other family.

A title is the bag of its words, the character n-grams of its words and its word bigrams
(`model.char_ngram_buckets`, `model.ngram_buckets`), each weighted by its inverse document
frequency and the bag L2-normalised, as scikit-learn's `TfidfVectorizer` does; the bag is
projected to `embedding_dim` dimensions by one `embedding_bag` and classified by the head
(a linear layer unless `hidden_layers` says otherwise).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from prodcat.config import LinearConfig
from prodcat.models.base import TextClassifier, hashed_bigrams, packed_bags
from prodcat.registry import register

if TYPE_CHECKING:
    from prodcat.data.featurizer import Featurizer


class BagEmbedder(nn.Module):
    """(B, T) ids -> (B, D): the idf-weighted, L2-normalised bag of features, projected."""

    def __init__(self, featurizer: Featurizer, cfg: LinearConfig):
        super().__init__()
        self.pad_id = featurizer.pad_id
        self.per_token = featurizer.pieces_per_token
        self.n_ids = featurizer.vocab_size
        self.buckets = cfg.ngram_buckets
        rows = self.n_ids + self.buckets
        self.table = nn.Embedding(rows, cfg.embedding_dim, sparse=cfg.sparse_embeddings)
        bound = 1.0 / cfg.embedding_dim
        with torch.no_grad():
            self.table.weight.uniform_(-bound, bound)
        # Saved with the weights: a reloaded model weighs features as the trained one did.
        self.register_buffer("idf", torch.ones(rows))
        self.dropout = nn.Dropout(cfg.embedding_dropout)

    def fit_idf(self, featurizer: Featurizer) -> dict[str, float]:
        """idf = ln((1 + titles) / (1 + occurrences)) + 1 of each feature (scikit-learn's
        smoothed idf, occurrences standing for document frequency: titles rarely repeat a
        word); word bigrams and never-seen features get the largest."""
        counts = featurizer.id_counts
        if counts is None:
            return {}
        counts = torch.as_tensor(counts, dtype=torch.float64)
        rows = float(featurizer.fitted_rows or counts.max().item())
        idf = torch.full((len(self.idf),), math.log(rows + 1) + 1, dtype=torch.float64)
        idf[: len(counts)] = torch.log((1 + rows) / (1 + counts)) + 1
        with torch.no_grad():
            self.idf.copy_(idf.float())
        return {"features_seen": float((counts > 0).sum().item())}

    @property
    def dim(self) -> int:
        return self.table.embedding_dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        n, k = input_ids.shape[0], self.per_token
        ids = input_ids
        if self.buckets:
            bucket, valid = hashed_bigrams(
                input_ids.view(n, -1, k)[:, :, 0], self.pad_id, self.buckets
            )
            ids = torch.cat([ids, torch.where(valid, self.n_ids + bucket, self.pad_id)], dim=1)
        flat, offsets, counts = packed_bags(ids, self.pad_id)
        weights = self.idf[flat]
        # The bag's Euclidean norm over distinct features (a feature twice in a title weighs
        # 2 idf), as TfidfVectorizer's: sum the weights of each (title, feature) first.
        owner = torch.repeat_interleave(torch.arange(n, device=ids.device), counts)
        pairs, where = torch.unique(owner * len(self.idf) + flat, return_inverse=True)
        per_pair = torch.zeros(len(pairs), device=ids.device).index_add_(0, where, weights)
        norm = torch.zeros(n, device=ids.device).index_add_(
            0, pairs // len(self.idf), per_pair * per_pair
        )
        norm = norm.sqrt()
        bag = nn.functional.embedding_bag(
            flat,
            self.table.weight,
            offsets,
            mode="sum",
            sparse=self.table.sparse,
            per_sample_weights=weights,
        )
        return self.dropout(bag / norm.clamp(min=1e-6).unsqueeze(1))


@register("linear")
class LinearClassifier(TextClassifier):
    config_class = LinearConfig

    def build_embedder(self, featurizer: Featurizer) -> nn.Module:
        return BagEmbedder(featurizer, self.cfg)

    def initialise(self, featurizer: Featurizer) -> dict[str, float]:
        return self.embedder.fit_idf(featurizer) if self.cfg.idf else {}

    def build_encoder(self, input_dim: int) -> int:
        return input_dim

    def encode(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return embedded  # the bag is the title's vector already

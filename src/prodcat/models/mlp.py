"""MLP over pooled word embeddings.

The course's baseline; with hashed bigrams it is fastText's architecture with a deeper head.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from prodcat.models.base import TextClassifier, WordModelConfig, padding_mask, word_featurizer
from prodcat.registry import register


class MLPConfig(WordModelConfig):
    """Mean (or max) of the title's word embeddings."""

    family: Literal["mlp"] = "mlp"
    # sqrt_sum: the sum over sqrt(tokens), the NNLM sentence encoders' pooling; with frozen
    # pretrained vectors it is the study's averaged-word-vectors encoder.
    pooling: Literal["mean", "max", "mean+max", "sqrt_sum"] = Field(
        "mean", description="over the title's tokens"
    )


@register("mlp", config=MLPConfig, featurizer=word_featurizer)
class MLPClassifier(TextClassifier):
    def build_encoder(self, input_dim: int) -> int:
        return input_dim * (2 if self.cfg.pooling == "mean+max" else 1)

    def encode(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = padding_mask(lengths, embedded.shape[1]).unsqueeze(-1)
        pooled = []
        if self.cfg.pooling in ("mean", "mean+max", "sqrt_sum"):
            total = (embedded * mask).sum(1)
            count = lengths.clamp(min=1).unsqueeze(1).to(total.dtype)
            pooled.append(total / (count.sqrt() if self.cfg.pooling == "sqrt_sum" else count))
        if self.cfg.pooling in ("max", "mean+max"):
            pooled.append(embedded.masked_fill(~mask, -1e4).amax(1) * (lengths > 0).unsqueeze(1))
        return torch.cat(pooled, dim=1) if len(pooled) > 1 else pooled[0]

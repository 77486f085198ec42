"""MLP over pooled word embeddings.

The course's baseline; with hashed bigrams it is fastText's architecture with a deeper head.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from prodcat.config import ModelConfig
from prodcat.data.batches import Batch
from prodcat.models.base import TextClassifier, padding_mask
from prodcat.registry import register


class MLPConfig(ModelConfig):
    family: Literal["mlp"] = "mlp"
    pooling: Literal["mean", "max", "mean+max"] = Field(
        "mean", description="over the title's tokens"
    )


@register("mlp")
class MLPClassifier(TextClassifier):
    config_class = MLPConfig

    def build_encoder(self, input_dim: int) -> int:
        return input_dim * (2 if self.cfg.pooling == "mean+max" else 1)

    def encode(self, embedded: torch.Tensor, batch: Batch) -> torch.Tensor:
        mask = padding_mask(batch, embedded.shape[1]).unsqueeze(-1)
        pooled = []
        if self.cfg.pooling in ("mean", "mean+max"):
            total = (embedded * mask).sum(1)
            pooled.append(total / batch.lengths.clamp(min=1).unsqueeze(1).to(total.dtype))
        if self.cfg.pooling in ("max", "mean+max"):
            pooled.append(
                embedded.masked_fill(~mask, -1e4).amax(1) * (batch.lengths > 0).unsqueeze(1)
            )
        return torch.cat(pooled, dim=1) if len(pooled) > 1 else pooled[0]

"""A model family written for tests/test_layers.py, to show that a new family is one file and
nothing else: its settings, how it reads titles, its network, and the one registration."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from prodcat.models.base import TextClassifier, WordModelConfig, padding_mask, word_featurizer
from prodcat.registry import register


class SumConfig(WordModelConfig):
    """The sum of a title's word embeddings, scaled."""

    family: Literal["sum"] = "sum"
    scale: float = Field(1.0, gt=0, description="what the sum is multiplied by")


@register("sum", config=SumConfig, featurizer=word_featurizer)
class SumClassifier(TextClassifier):
    def build_encoder(self, input_dim: int) -> int:
        return input_dim

    def encode(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = padding_mask(lengths, embedded.shape[1]).unsqueeze(-1)
        return (embedded * mask).sum(1) * self.cfg.scale

"""A frozen sentence encoder + MLP head: the language-model study's method.

The encoder runs in the featurizer (its vectors are cached per file); the model is the head
alone, over each title's vector.
"""

from __future__ import annotations

import torch
from torch import nn

from prodcat.config import EncoderConfig
from prodcat.data.batches import Batch
from prodcat.models.base import TextClassifier
from prodcat.registry import register


class TitleVectors(nn.Module):
    """The embedder of a sentence-encoder model: the title vectors are the input as they are."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim


@register("encoder")
class SentenceEncoderClassifier(TextClassifier):
    config_class = EncoderConfig

    def build_embedder(self, featurizer) -> nn.Module:
        return TitleVectors(featurizer.dim)

    def build_encoder(self, input_dim: int) -> int:
        return input_dim

    def title_vectors(
        self, features: torch.Tensor | Batch, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The (B, D) title vectors of a `Batch`, or those given."""
        return features.features if isinstance(features, Batch) else features

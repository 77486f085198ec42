"""A frozen sentence encoder + MLP head: the language-model study's method.

The encoder runs in the featurizer (its vectors are cached per file); the model is the head
alone, over each title's vector.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from prodcat.config import DataConfig
from prodcat.data.batches import Batch
from prodcat.data.featurizers import SentenceFeaturizer, VectorFeaturizer
from prodcat.encoders.sentence import EncoderSettings
from prodcat.errors import ConfigError
from prodcat.models.base import ClassifierConfig, TextClassifier
from prodcat.registry import register


class EncoderConfig(ClassifierConfig, EncoderSettings):
    """A frozen pretrained sentence encoder turns each title into one vector; the head
    (hidden_layers, dropout) classifies it."""

    family: Literal["encoder"] = "encoder"


def sentence_featurizer(data: DataConfig, model: EncoderConfig) -> SentenceFeaturizer:
    return SentenceFeaturizer.from_config(data, model)


class TitleVectors(nn.Module):
    """The embedder of a sentence-encoder model: the title vectors are the input as they are."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim


@register("encoder", config=EncoderConfig, featurizer=sentence_featurizer)
class SentenceEncoderClassifier(TextClassifier):
    def build_embedder(self, featurizer: VectorFeaturizer) -> nn.Module:
        return TitleVectors(featurizer.dim)

    def build_encoder(self, input_dim: int) -> int:
        return input_dim

    def title_vectors(
        self, features: torch.Tensor | Batch, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The (B, D) title vectors of a `Batch`, or those given."""
        return features.features if isinstance(features, Batch) else features

    def onnx_module(self, reader) -> nn.Module:
        raise ConfigError(
            "the encoder family cannot be exported to ONNX: its sentence encoder "
            "runs outside the network"
        )

"""CNN: parallel 1-D convolutions of several widths with max-over-time pooling (Kim, 2014)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from prodcat.models.base import TextClassifier, WordModelConfig, word_featurizer
from prodcat.registry import register


class CNNConfig(WordModelConfig):
    """Convolutions of several widths, max-pooled over time."""

    family: Literal["cnn"] = "cnn"
    filters_length: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    num_filters: int = Field(128, ge=1, description="filters per width")


@register("cnn", config=CNNConfig, featurizer=word_featurizer)
class CNNClassifier(TextClassifier):
    def build_encoder(self, input_dim: int) -> int:
        self.convs = nn.ModuleList(
            nn.Conv1d(input_dim, self.cfg.num_filters, width, padding=width - 1)
            for width in self.cfg.filters_length
        )
        return self.cfg.num_filters * len(self.cfg.filters_length)

    def encode(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = embedded.transpose(1, 2)  # (B, E, T)
        width = embedded.shape[1]
        pooled = []
        for conv, w in zip(self.convs, self.cfg.filters_length):
            # Padding w-1 each side gives T+w-1 windows; window j ends at token j, so a window
            # is real if it starts before the title ends: j - (w-1) < length.
            out = torch.relu(conv(x))
            ends = torch.arange(width + w - 1, device=x.device)
            real = (ends.unsqueeze(0) - (w - 1)) < lengths.clamp(min=1).unsqueeze(1)
            pooled.append(out.masked_fill(~real.unsqueeze(1), 0).amax(2))
        return torch.cat(pooled, dim=1)

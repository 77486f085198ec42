"""LSTM and GRU encoders over packed sequences, optionally bidirectional."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from prodcat.config import ModelConfig
from prodcat.data.batches import Batch
from prodcat.models.base import TextClassifier, padding_mask
from prodcat.registry import register


class RNNConfig(ModelConfig):
    family: Literal["lstm"] = "lstm"
    hidden_size: int = Field(128, ge=1)
    num_layers: int = Field(1, ge=1)
    bidirectional: bool = True
    rnn_dropout: float = Field(0.0, ge=0, lt=1, description="between stacked layers")
    pooling: Literal["last", "mean", "max"] = "max"


class RNNClassifier(TextClassifier):
    config_class = RNNConfig
    cell: type[nn.Module] = nn.LSTM

    def build_encoder(self, input_dim: int) -> int:
        cfg = self.cfg
        self.rnn = self.cell(
            input_dim,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            bidirectional=cfg.bidirectional,
            dropout=cfg.rnn_dropout if cfg.num_layers > 1 else 0.0,
            batch_first=True,
        )
        return cfg.hidden_size * (2 if cfg.bidirectional else 1)

    def encode(self, embedded: torch.Tensor, batch: Batch) -> torch.Tensor:
        lengths = batch.lengths.clamp(min=1).cpu()
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        output, state = self.rnn(packed)
        if self.cfg.pooling == "last":
            hidden = state[0] if isinstance(state, tuple) else state  # (layers*dirs, B, H)
            dirs = 2 if self.cfg.bidirectional else 1
            return torch.cat(list(hidden[-dirs:]), dim=1)
        out, _ = pad_packed_sequence(output, batch_first=True)
        mask = padding_mask(batch, out.shape[1]).unsqueeze(-1)
        if self.cfg.pooling == "mean":
            return (out * mask).sum(1) / lengths.to(out.device).unsqueeze(1).to(out.dtype)
        return out.masked_fill(~mask, -1e4).amax(1)


@register("lstm")
class LSTMClassifier(RNNClassifier):
    cell = nn.LSTM


class GRUConfig(RNNConfig):
    family: Literal["gru"] = "gru"  # type: ignore[assignment]


@register("gru")
class GRUClassifier(RNNClassifier):
    config_class = GRUConfig
    cell = nn.GRU

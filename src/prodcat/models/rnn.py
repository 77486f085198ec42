"""LSTM and GRU encoders over packed sequences, optionally bidirectional."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from prodcat.config import GRUConfig, RNNConfig
from prodcat.models.base import TextClassifier, padding_mask
from prodcat.registry import register


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

    def encode(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Packing reads the lengths on the CPU, wherever they and the model are.
        packed = pack_padded_sequence(
            embedded, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        output, state = self.rnn(packed)
        if self.cfg.pooling == "last":
            hidden = state[0] if isinstance(state, tuple) else state  # (layers*dirs, B, H)
            dirs = 2 if self.cfg.bidirectional else 1
            return torch.cat(list(hidden[-dirs:]), dim=1)
        out, _ = pad_packed_sequence(output, batch_first=True)
        mask = padding_mask(lengths.to(out.device), out.shape[1]).unsqueeze(-1)
        if self.cfg.pooling == "mean":
            counts = lengths.clamp(min=1).to(device=out.device, dtype=out.dtype)
            return (out * mask).sum(1) / counts.unsqueeze(1)
        return out.masked_fill(~mask, -1e4).amax(1)


@register("lstm")
class LSTMClassifier(RNNClassifier):
    cell = nn.LSTM


@register("gru")
class GRUClassifier(RNNClassifier):
    config_class = GRUConfig
    cell = nn.GRU

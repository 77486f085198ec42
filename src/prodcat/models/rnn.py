"""LSTM and GRU encoders over packed sequences, optionally bidirectional.

Packed sequences have no ONNX operator, so the families export an equivalent padded form
(`PaddedRNN`): each direction of each layer is one ONNX LSTM/GRU over the padded batch; the
backward direction runs over each title reversed *within its length*, so padding never
reaches a real step.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from prodcat.models.base import TextClassifier, WordModelConfig, padding_mask, word_featurizer
from prodcat.registry import register


class RNNConfig(WordModelConfig):
    """A recurrent encoder (LSTM; GRUConfig for a GRU)."""

    family: Literal["lstm"] = "lstm"
    hidden_size: int = Field(128, ge=1)
    num_layers: int = Field(1, ge=1)
    bidirectional: bool = True
    rnn_dropout: float = Field(0.0, ge=0, lt=1, description="between stacked layers")
    pooling: Literal["last", "mean", "max"] = "max"


class GRUConfig(RNNConfig):
    family: Literal["gru"] = "gru"  # type: ignore[assignment]


class RNNClassifier(TextClassifier):
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

    def onnx_module(self, reader) -> nn.Module:
        return PaddedRNN(self)


@register("lstm", config=RNNConfig, featurizer=word_featurizer)
class LSTMClassifier(RNNClassifier):
    cell = nn.LSTM


@register("gru", config=GRUConfig, featurizer=word_featurizer)
class GRUClassifier(RNNClassifier):
    cell = nn.GRU


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, E) rows with each row's first `length` steps reversed; padding stays put."""
    width = x.shape[1]
    steps = torch.arange(width, device=x.device).unsqueeze(0)  # (1, T)
    last = lengths.unsqueeze(1) - 1
    index = torch.where(steps <= last, last - steps, steps)  # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class PaddedRNN(nn.Module):
    """An `RNNClassifier`'s forward without packed sequences, for export; same logits.

    Every direction of every layer is a one-layer, one-direction copy of the trained RNN's
    weights, run on the padded batch: positions at or past a title's length hold garbage
    that no real position depends on (forward), or that reversal keeps past the end
    (backward); pooling masks them as the packed model's padding is masked.
    """

    def __init__(self, model: RNNClassifier):
        super().__init__()
        self.model = model
        rnn = model.rnn
        self.directions = 2 if rnn.bidirectional else 1
        self.layers = nn.ModuleList()
        for layer in range(rnn.num_layers):
            cells = nn.ModuleList()
            for direction in range(self.directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                input_size = rnn.input_size if layer == 0 else rnn.hidden_size * self.directions
                cell = type(rnn)(input_size, rnn.hidden_size, batch_first=True)
                with torch.no_grad():
                    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                        getattr(cell, f"{name}_l0").copy_(getattr(rnn, name + suffix))
                cells.append(cell)
            self.layers.append(cells)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        model = self.model
        x = model.embedder(input_ids)
        steps = lengths.clamp(min=1)  # packing treats an empty title as one pad token
        last = (steps - 1).view(-1, 1, 1)
        finals: list[torch.Tensor] = []
        for cells in self.layers:
            outputs, finals = [], []
            for direction, cell in enumerate(cells):
                seq = reverse_within_length(x, steps) if direction else x
                out, _ = cell(seq)
                # The state after a title's last real step is the packed RNN's final state.
                finals.append(out.gather(1, last.expand(-1, 1, out.shape[2])).squeeze(1))
                outputs.append(reverse_within_length(out, steps) if direction else out)
            x = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
        if model.cfg.pooling == "last":
            encoded = torch.cat(finals, dim=1) if len(finals) > 1 else finals[0]
        else:
            mask = padding_mask(lengths, x.shape[1]).unsqueeze(-1)
            if model.cfg.pooling == "mean":
                encoded = (x * mask).sum(1) / steps.unsqueeze(1).to(x.dtype)
            else:
                encoded = x.masked_fill(~mask, -1e4).amax(1)
        return model.head(encoded)

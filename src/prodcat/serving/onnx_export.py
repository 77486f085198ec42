"""`prodcat export --format onnx`: a model folder's network as an ONNX graph.

The graph takes what every family takes, `input_ids` (N, T) int64 padded with the
featurizer's pad id and `lengths` (N,) int64, and returns `logits` (N, C); N and T are
dynamic. Tokenising stays outside the graph (`serving/title_encoder.py`), so ONNX Runtime
serves a model with no torch (`serving/onnx_runtime.py`).

MLP and CNN trace as they are. LSTM and GRU run over packed sequences, which ONNX has no
operator for, so they are exported in an equivalent padded form (`PaddedRNN`): each
direction of each layer is one ONNX LSTM/GRU over the padded batch; the backward direction
runs over each title reversed *within its length*, so padding never reaches a real step.
Exported by the TorchScript exporter (`dynamo=False`): it needs only the `onnx` package.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

import prodcat
from prodcat.config import load_config
from prodcat.errors import ConfigError, ProdcatError
from prodcat.models.base import TextClassifier, padding_mask
from prodcat.models.folder import load_model_folder
from prodcat.models.rnn import RNNClassifier
from prodcat.serving.onnx_runtime import ONNX_FILE
from prodcat.serving.title_encoder import TitleEncoder

OPSET = 17
EXPORTABLE = ("mlp", "cnn", "lstm", "gru")
NOT_EXPORTABLE = {
    "encoder": "its sentence encoder runs outside the network",
    "transformer": "its subword tokenizer has no torch-free twin here yet",
    "ensemble": "its members are separate networks: predict and serve it with the torch runtime",
}
INPUTS = ("input_ids", "lengths")
OUTPUT = "logits"

log = logging.getLogger(__name__)


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


class IdsAndLengths(nn.Module):
    """A model called with plain (ids, lengths) tensors, as the exporter calls it."""

    def __init__(self, model: TextClassifier):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, lengths)


def exportable(model: TextClassifier) -> nn.Module:
    """The module the exporter traces: `PaddedRNN` for LSTM/GRU, the model itself otherwise."""
    module = PaddedRNN(model) if isinstance(model, RNNClassifier) else IdsAndLengths(model)
    return module.eval()


def export_onnx(folder: str | Path, output: str | Path | None = None) -> Path:
    """Export a model folder's network to ONNX (default `FOLDER/model.onnx`); return the path."""
    try:
        import onnx
    except ImportError:
        raise ProdcatError(
            'ONNX export needs the onnx extra: pip install "prodcat[onnx]"'
        ) from None
    folder = Path(folder)
    if not (folder / "config.yaml").is_file():
        raise ProdcatError(f"{folder}: not a model folder (no config.yaml)")
    family = load_config(folder / "config.yaml").model.family
    if family not in EXPORTABLE:
        why = NOT_EXPORTABLE.get(family, "")
        raise ConfigError(
            f"ONNX export supports the {', '.join(EXPORTABLE)} families, not '{family}'"
            + (f" ({why})" if why else "")
        )
    cfg, model, featurizer, labels = load_model_folder(folder)
    if not TitleEncoder.supports(featurizer):
        raise ConfigError(f"ONNX export needs a vocabulary featurizer, not '{featurizer.kind}'")
    path = Path(output) if output is not None else folder / ONNX_FILE
    if path.is_dir():
        raise ProdcatError(f"{path}: is a folder; --output needs a file name")
    # Two titles of different lengths, so no shape is traced as a constant.
    pad, last = featurizer.pad_id, featurizer.vocab_size - 1
    ids = torch.tensor([[last, last - 1, last], [last - 1, pad, pad]], dtype=torch.int64)
    lengths = torch.tensor([3, 1], dtype=torch.int64)
    dynamic = {
        "input_ids": {0: "titles", 1: "tokens"},
        "lengths": {0: "titles"},
        OUTPUT: {0: "titles"},
    }
    partial = path.with_name(f".{path.name}.partial")
    try:
        # The tracer's warnings (constant shapes, batch_first RNNs) concern graphs unlike
        # these: tests/test_export.py checks that the graph's outputs match the model's.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                exportable(model),
                (ids, lengths),
                str(partial),
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
        graph = onnx.load(str(partial))
        for key, value in {
            "prodcat.family": family,
            "prodcat.version": prodcat.__version__,
            "prodcat.classes": str(len(labels)),
            "prodcat.pad_id": str(featurizer.pad_id),
        }.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, str(partial))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    log.info("exported %s (%s) to %s", folder, family, path)
    return path

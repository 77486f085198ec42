"""`prodcat export --format onnx`: a model folder's network as an ONNX graph.

The graph takes what every family takes, `input_ids` (N, T) int64 padded with the
featurizer's pad id and `lengths` (N,) int64, and returns `logits` (N, C); N and T are
dynamic. Tokenising stays outside the graph (the featurizer's), so ONNX Runtime serves a
model with no torch (`serving/onnx_runtime.py`). Each family says what is traced
(`TextClassifier.onnx_module`: the model itself, or an equivalent form such as the RNNs'
padded one) or why it cannot be. Exported by the TorchScript exporter (`dynamo=False`): it
needs only the `onnx` package.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from prodcat.errors import ProdcatError
from prodcat.models.folder import load_model_folder
from prodcat.serving.onnx_runtime import ONNX_FILE
from prodcat.version import __version__

OPSET = 17
INPUTS = ("input_ids", "lengths")
OUTPUT = "logits"

log = logging.getLogger(__name__)


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
    cfg, model, reader, labels, _ = load_model_folder(folder)
    family = cfg.model.family
    module = model.onnx_module().eval()  # a family that cannot be exported says why
    featurizer = reader.featurizer
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
                module,
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
            "prodcat.version": __version__,
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

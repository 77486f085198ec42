"""`prodcat export --format onnx`: a model folder's network as an ONNX graph.

The graph takes what every family takes, `input_ids` (N, T) int64 padded with the
featurizer's pad id and `lengths` (N,) int64, and returns `logits` (N, C); N and T are
dynamic. An ensemble's graph takes such a pair for each distinct featurizer of its members
(`input_ids_I`, `lengths_I`); the graph's metadata (`prodcat.inputs`) says which folder's
featurizer feeds which. Tokenising stays outside the graph, so ONNX Runtime serves a model
with no torch (`serving/onnx_runtime.py`). Each family says what is traced
(`TextClassifier.onnx_module`: the model itself, or an equivalent form such as the RNNs'
padded one) or why it cannot be. Exported by the TorchScript exporter (`dynamo=False`): it
needs only the `onnx` package. `quantize` rewrites the graph's large weights in 8 bits (ONNX
Runtime's quantisation tools) or stores them as float16.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from prodcat.errors import ConfigError, ProdcatError
from prodcat.models.folder import load_model_folder
from prodcat.serving.onnx_runtime import FEEDS_KEY, ONNX_FILE
from prodcat.version import __version__

OPSET = 17
OUTPUT = "logits"
# Titles of different lengths, so that no shape is traced as a constant.
EXAMPLE = ["Placa De Sonido Behringer Umc22 Usb", "Bolso"]

log = logging.getLogger(__name__)


def input_names(count: int) -> list[tuple[str, str]]:
    """The (ids, lengths) inputs of a graph that reads `count` encodings of a title."""
    if count == 1:
        return [("input_ids", "lengths")]
    return [(f"input_ids_{i}", f"lengths_{i}") for i in range(count)]


QUANTIZE = ("none", "int8", "float16")
# Weights smaller than this stay float32 under --quantize: biases, idf vectors and small
# layers weigh little and some (idf, layer norms) are not worth their rounding.
LARGE = 1 << 16


def export_onnx(
    folder: str | Path, output: str | Path | None = None, quantize: str = "none"
) -> Path:
    """Export a model folder's network to ONNX (default `FOLDER/model.onnx`); return the path.

    `quantize`: `int8`, its large weight tables and matrices stored as 8-bit integers (ONNX
    Runtime's dynamic quantisation: a scale per table, per output column of a matrix);
    `float16`, stored as 16-bit floats and widened when the runtime loads them.
    """
    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize must be one of {', '.join(QUANTIZE)}, got '{quantize}'")
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
    module = model.onnx_module(reader).eval()  # a family that cannot be exported says why
    path = Path(output) if output is not None else folder / ONNX_FILE
    if path.is_dir():
        raise ProdcatError(f"{path}: is a folder; --output needs a file name")
    encodings = reader.encodings()
    names = input_names(len(encodings))
    example, dynamic, feeds = [], {OUTPUT: {0: "titles"}}, []
    for (where, featurizer), (ids_name, lengths_name) in zip(encodings, names):
        ids, lengths = featurizer.encode(EXAMPLE)
        example += [torch.from_numpy(ids), torch.from_numpy(lengths)]
        dynamic[ids_name] = {0: "titles", 1: f"{ids_name}_width"}
        dynamic[lengths_name] = {0: "titles"}
        feeds.append({"folder": where, "input_ids": ids_name, "lengths": lengths_name})
    partial = path.with_name(f".{path.name}.partial")
    try:
        # The tracer's warnings (constant shapes, batch_first RNNs) concern graphs unlike
        # these: tests/test_export.py checks that the graph's outputs match the model's.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                tuple(example),
                str(partial),
                input_names=[name for pair in names for name in pair],
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
            "prodcat.quantize": quantize,
            FEEDS_KEY: json.dumps(feeds),
        }.items():
            graph.metadata_props.add(key=key, value=value)
        if quantize == "float16":
            graph = float16_storage(graph)
        onnx.save(graph, str(partial))
        if quantize == "int8":
            quantize_int8(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    log.info("exported %s (%s, quantize %s) to %s", folder, family, quantize, path)
    return path


def large_weights(graph) -> dict[str, object]:
    """The float32 initializers of at least `LARGE` values, by name."""
    from onnx import TensorProto

    return {
        tensor.name: tensor
        for tensor in graph.graph.initializer
        if tensor.data_type == TensorProto.FLOAT and math.prod(tensor.dims) >= LARGE
    }


def quantize_int8(path: Path) -> None:
    """Rewrite the graph at `path` with its large weights in 8 bits: ONNX Runtime's dynamic
    quantisation of the lookups (Gather) and matrix products that read them."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(path))
    large = large_weights(graph)
    # A Gemm (an output layer) is named twice: the quantiser first rewrites it as a MatMul
    # named NAME_MatMul, and named as the Gemm only, it stayed in 32 bits (compact's head of
    # 200 x 632 weights: 0.5 MB read for every title served).
    nodes = [
        name
        for node in graph.graph.node
        if node.op_type in ("Gather", "MatMul", "Gemm") and any(i in large for i in node.input)
        for name in (node.name, f"{node.name}_MatMul")
    ]
    if not nodes:
        return
    quantized = path.with_name(f"{path.name}.int8")
    try:
        with _quiet("onnxruntime.quantization", "root"):
            quantize_dynamic(
                graph,
                quantized,
                per_channel=True,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=nodes,
                op_types_to_quantize=["Gather", "MatMul", "Gemm"],
            )
        quantized.replace(path)
    finally:
        quantized.unlink(missing_ok=True)


def float16_storage(graph):
    """The graph with its large weights stored as float16, each widened back to float32 by a
    Cast node (which ONNX Runtime folds when it loads the model): half the file, the same
    arithmetic on weights rounded to float16."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for name, tensor in large_weights(graph).items():
        values = numpy_helper.to_array(tensor).astype(np.float16)
        tensor.CopyFrom(numpy_helper.from_array(values, f"{name}.float16"))
        casts.append(helper.make_node("Cast", [f"{name}.float16"], [name], to=TensorProto.FLOAT))
    nodes = list(graph.graph.node)
    graph.graph.ClearField("node")
    graph.graph.node.extend(casts + nodes)
    onnx.checker.check_model(graph, full_check=False)
    return graph


@contextmanager
def _quiet(*loggers: str):
    """ONNX Runtime's quantiser logs advice at INFO and WARNING that concerns other models."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)

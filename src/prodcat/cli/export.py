"""`prodcat export MODEL --format onnx`: a trained model in a form other runtimes serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

FORMATS = ("onnx",)


def export(
    model: Annotated[
        str,
        typer.Argument(help="Model folder written by `prodcat train` (or runs:/... models:/...)."),
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="Export format: onnx.")] = "onnx",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write. Default: MODEL/model.onnx."),
    ] = None,
    quantize: Annotated[
        str,
        typer.Option(
            help="none; int8: large weights in 8 bits (about a quarter of the size); float16: "
            "stored in 16 bits (half), widened when loaded."
        ),
    ] = "none",
) -> None:
    """Export a model's network to ONNX, for `--runtime onnx` or any ONNX runtime.

    Inputs `input_ids` (N, T) and `lengths` (N,), output `logits` (N, C); `predict` and
    `serve` run it with `--runtime onnx`, without torch. An ensemble's graph takes
    `input_ids_I`, `lengths_I` for each distinct featurizer of its members.

    Every family exports but the frozen sentence encoders. Titles are tokenised outside the
    graph, as the model folder's featurizer says (a transformer's by the `tokenizers`
    library). What `--quantize` costs in agreement with the torch model is measured in
    benchmarks/README.md.
    """
    from rich.console import Console

    from prodcat.errors import ConfigError
    from prodcat.serving.location import is_mlflow_uri, local_model_folder

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if is_mlflow_uri(model) and output is None:
        raise ConfigError(f"exporting {model} needs --output: its download folder is temporary")
    folder = local_model_folder(model)
    from prodcat.serving.onnx_export import export_onnx

    path = export_onnx(folder, output, quantize)
    Console().print(f"{model} -> {path} ({path.stat().st_size:,} bytes)", soft_wrap=True)

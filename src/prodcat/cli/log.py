"""`prodcat log FOLDER`: record a finished model folder in MLflow afterwards (a run whose
tracking server went away, or one trained with --no-track)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def log(
    folder: Annotated[Path, typer.Argument(help="Model folder written by `prodcat train`.")],
    store: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI. Default: the folder's tracking.uri, else "
            "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."
        ),
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(help="MLflow experiment name. Default: the folder's tracking.experiment."),
    ] = None,
    run_name: Annotated[
        str | None,
        typer.Option(help="MLflow run name. Default: the folder's, as training names it."),
    ] = None,
) -> None:
    """Log a finished model folder to MLflow as a new run.

    The run holds what training logs: the config as params, each epoch's metrics, the final
    metrics, the folder's files and the MLflow Model (`prodcat predict runs:/ID/model`). A run
    its training left unfinished is marked FAILED.
    """
    from prodcat.cli.output import out, setup_logging
    from prodcat.tracking.mlflow_store import log_model_folder

    setup_logging(quiet=True)
    run_id = log_model_folder(folder, store, experiment, run_name)
    out.print(f"MLflow run {run_id}: prodcat predict runs:/{run_id}/model TITLE")

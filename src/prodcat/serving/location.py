"""Where a model comes from: a folder written by `prodcat train`, or an MLflow URI
(`runs:/<id>/model`, `models:/<name>/<version>`) whose artifacts are downloaded first.
A local folder needs neither torch nor mlflow."""

from __future__ import annotations

from pathlib import Path

from prodcat.errors import ProdcatError

MLFLOW_SCHEMES = ("runs:/", "models:/")


def is_mlflow_uri(location: str | Path) -> bool:
    """Whether `location` is an MLflow model URI rather than a path."""
    return str(location).startswith(MLFLOW_SCHEMES)


def local_model_folder(location: str | Path) -> Path:
    """The model folder at `location`: a path as it is, an MLflow URI downloaded first."""
    if not is_mlflow_uri(location):
        return Path(location)
    try:
        from prodcat.tracking.mlflow_store import download_model_folder
    except ImportError:
        raise ProdcatError(
            f"loading {location} needs mlflow: pip install 'prodcat[train]' (or mlflow)"
        ) from None
    return download_model_folder(str(location))

"""Where a model comes from and what runs it, for `predict`, `serve` and the Python API.

A model is a folder written by `prodcat train`, or an MLflow URI (`runs:/<id>/model`,
`models:/<name>/<version>`) whose artifacts are downloaded first. The `torch` runtime loads
the folder's weights (`Classifier`); the `onnx` runtime runs its exported `model.onnx` under
ONNX Runtime (`OnnxClassifier`) and imports neither torch nor mlflow for a local folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prodcat.errors import ConfigError, ProdcatError

if TYPE_CHECKING:
    from prodcat.serving.onnx_runtime import OnnxClassifier
    from prodcat.serving.predictor import Classifier

RUNTIMES = ("torch", "onnx")
MLFLOW_SCHEMES = ("runs:/", "models:/")
PYFUNC_FOLDER = "model_folder"  # the prodcat folder's name among an MLflow Model's artifacts


class NamedTopK:
    """`predict_top_k` for a runtime that has `top_k(titles, k, batch_size)` (class ids and
    probabilities) and `labels`: one definition for the torch and the ONNX runtimes."""

    def predict_top_k(
        self, titles: str | list[str], k: int = 3, batch_size: int = 4096
    ) -> list[list[tuple[str, float]]]:
        """The `k` most likely (category, probability) pairs of each title, best first."""
        titles = [titles] if isinstance(titles, str) else list(titles)
        indices, probs = self.top_k(titles, k, batch_size)
        names = self.labels.names
        return [
            [(names[i], p) for i, p in zip(ix, ps)]
            for ix, ps in zip(indices.tolist(), probs.tolist())
        ]


def is_mlflow_uri(location: str | Path) -> bool:
    """Whether `location` is an MLflow model URI rather than a path."""
    return str(location).startswith(MLFLOW_SCHEMES)


def local_model_folder(location: str | Path) -> Path:
    """The model folder at `location`: a path as it is, an MLflow URI downloaded first.

    A run's `model` artifact holds the folder's files beside the MLflow Model's; a registered
    model holds them under `artifacts/model_folder` (`serving/pyfunc.py`).
    """
    if not is_mlflow_uri(location):
        return Path(location)
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise ProdcatError(
            f"loading {location} needs mlflow: pip install 'prodcat[train]' (or mlflow)"
        ) from None
    try:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(location)))
    except MlflowException as e:
        raise ProdcatError(f"{location}: cannot download it from MLflow ({e.message})") from None
    for folder in (root, root / "artifacts" / PYFUNC_FOLDER):
        if (folder / "config.yaml").is_file():
            return folder
    raise ProdcatError(f"{location}: holds no prodcat model folder (no config.yaml)")


def load_classifier(
    location: str | Path, runtime: str = "torch", onnx_path: str | Path | None = None
) -> Classifier | OnnxClassifier:
    """The model at `location` under `runtime` (`torch` or `onnx`; `onnx_path` defaults to
    the folder's `model.onnx`)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}, got '{runtime}'")
    if onnx_path is not None and runtime != "onnx":
        raise ConfigError("--onnx is the ONNX graph of --runtime onnx: add --runtime onnx")
    folder = local_model_folder(location)
    if runtime == "onnx":
        from prodcat.serving.onnx_runtime import OnnxClassifier

        return OnnxClassifier.load(folder, onnx_path)
    from prodcat.serving.predictor import Classifier

    return Classifier.load(folder)

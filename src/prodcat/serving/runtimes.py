"""What runs a model for `predict`, `serve` and the Python API: the `torch` runtime loads the
folder's weights (`Classifier`); the `onnx` runtime runs its exported `model.onnx` under ONNX
Runtime (`OnnxClassifier`) and imports neither torch nor mlflow for a local folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prodcat.errors import ConfigError
from prodcat.serving.location import local_model_folder

if TYPE_CHECKING:
    from prodcat.serving.onnx_runtime import OnnxClassifier
    from prodcat.serving.predictor import Classifier

RUNTIMES = ("torch", "onnx")


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

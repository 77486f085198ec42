"""A prodcat model as an MLflow Model with the `python_function` (pyfunc) flavor.

`log_pyfunc_model(folder)` logs a trained model folder under the active run, so that
`mlflow.pyfunc.load_model("runs:/<run id>/model")`, `mlflow models serve` and the model
registry work as MLflow users expect. The MLflow Model holds the files `Classifier.load`
reads (config, featurizer, vocabulary, labels, weights) as its `model_folder` artifact and
loads them with `ClassifierModel`, logged as code (`pyfunc_code.py`) rather than pickled.

Input: a DataFrame with a `title` column (or one column of strings), a Series, or a list of
titles. Output: a DataFrame, one row per title: `category` and `probability` (the best),
`categories` and `probabilities` (the `top_k` best, best first; `params={"top_k": 3}`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

import prodcat
from prodcat.errors import ProdcatError
from prodcat.models.manifest import listed_files
from prodcat.serving.runtimes import PYFUNC_FOLDER

CODE_FILE = Path(__file__).with_name("pyfunc_code.py")
# What `Classifier.load` reads of a folder without a manifest; plots, predictions and reports
# stay in the run's artifacts.
FOLDER_FILES = (
    "config.yaml",
    "featurizer.json",
    "vocab.txt",
    "labels.txt",
    "model.safetensors",
    "calibration.json",
)
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.string)]),
    outputs=Schema(
        [
            ColSpec(DataType.string, "category"),
            ColSpec(DataType.double, "probability"),
        ]
    ),
    params=ParamSchema([ParamSpec("top_k", DataType.long, 1)]),
)
INPUT_EXAMPLE = ["Placa De Sonido - Behringer Umc22"]
# Installed beside the model by `mlflow models serve` (prodcat itself is not on PyPI: serve
# with `--env-manager local` from an environment that has it).
REQUIREMENTS = (
    "prodcat",
    "torch",
    "mlflow",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "pyyaml",
    "safetensors",
)


def titles_of(model_input: Any) -> list[str]:
    """The titles of a pyfunc input: a DataFrame (its `title` column, or its only column),
    a Series, a list or a NumPy array of strings."""
    if isinstance(model_input, pd.DataFrame):
        if "title" in model_input.columns:
            column = model_input["title"]
        elif len(model_input.columns) == 1:
            column = model_input.iloc[:, 0]
        else:
            raise ProdcatError(
                f"a DataFrame of titles needs a 'title' column, got {list(model_input.columns)}"
            )
        model_input = column
    if isinstance(model_input, str):
        return [model_input]
    titles = list(model_input)
    bad = next((t for t in titles if t is not None and not isinstance(t, str)), None)
    if bad is not None:
        raise ProdcatError(f"titles must be strings, got {type(bad).__name__}: {bad!r}")
    return ["" if t is None else t for t in titles]


class ClassifierModel(mlflow.pyfunc.PythonModel):
    """`Classifier` behind MLflow's pyfunc interface."""

    def load_context(self, context) -> None:
        from prodcat.serving.predictor import Classifier

        self.classifier = Classifier.load(context.artifacts[PYFUNC_FOLDER])

    # Inputs are checked against SIGNATURE (which carries the top_k param) and by titles_of:
    # MLflow's own type-hint validation would replace that signature, and, without hints,
    # warn when this class is defined.
    _skip_type_hint_validation = True

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per title: best category and probability, and the `top_k` best."""
        titles = titles_of(model_input)
        k = int((params or {}).get("top_k", 1))
        indices, probs = self.classifier.top_k(titles, k)
        names = self.classifier.labels.names
        categories = [[names[i] for i in row] for row in indices.tolist()]
        probabilities = probs.astype(float).tolist()
        return pd.DataFrame(
            {
                "category": [row[0] for row in categories],
                "probability": [row[0] for row in probabilities],
                "categories": categories,
                "probabilities": probabilities,
            }
        )


def requirements() -> list[str]:
    """Pinned versions of what loading the model needs, from this environment."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def log_pyfunc_model(folder: str | Path, name: str = "model") -> str:
    """Log a model folder as an MLflow Model under the active run; return its URI."""
    folder = Path(folder)
    # MLflow checks the logged model by downloading it again, with a progress bar per file
    # that would break into prodcat's own output (a user's setting wins).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as staging:
        copy = Path(staging) / PYFUNC_FOLDER
        copy.mkdir()
        # The manifest lists every file that rebuilds the model (a transformer's tokenizer
        # folder too), and the copy is checked against it when loaded.
        for file in listed_files(folder) or FOLDER_FILES:
            if (folder / file).is_file():
                (copy / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / file, copy / file)
        where = (
            {"name": name}
            if int(mlflow.__version__.split(".")[0]) >= 3
            else {"artifact_path": name}
        )
        info = mlflow.pyfunc.log_model(
            python_model=str(CODE_FILE),
            artifacts={PYFUNC_FOLDER: str(copy)},
            signature=SIGNATURE,
            input_example=INPUT_EXAMPLE,
            pip_requirements=requirements(),
            metadata={"prodcat_version": prodcat.__version__},
            **where,
        )
    return info.model_uri

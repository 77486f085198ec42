"""The code MLflow runs to load a logged prodcat model ("models from code", not a pickle):
the `python_function` (pyfunc) flavor of a model folder, which `prodcat.tracking.mlflow_store`
logs with every tracked run. MLflow runs this file; prodcat imports it nowhere.

Input: a DataFrame with a `title` column (or one column of strings), a Series, or a list of
titles. Output: a DataFrame, one row per title: `category` and `probability` (the best),
`categories` and `probabilities` (the `top_k` best, best first; `params={"top_k": 3}`).
Anything but text (a number, a null) is refused, naming the row: `mlflow models serve`
answers it with a 400, as `prodcat serve` answers a 422.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

MODEL_FOLDER = "model_folder"  # the artifact that holds the prodcat folder (mlflow_store's)


def titles_of(model_input: Any) -> list[str]:
    """The titles of a pyfunc input: a DataFrame (its `title` column, or its only column),
    a Series, a list or a NumPy array of strings; anything else is an `MlflowException`
    (INVALID_PARAMETER_VALUE) naming the row."""
    field = "inputs"
    if isinstance(model_input, pd.DataFrame):
        if "title" in model_input.columns:
            field, column = "title", model_input["title"]
        elif len(model_input.columns) == 1:
            name = model_input.columns[0]  # a number when the input was a plain list
            field = name if isinstance(name, str) else "inputs"
            column = model_input.iloc[:, 0]
        else:
            raise MlflowException(
                f"a DataFrame of titles needs a 'title' column, got {list(model_input.columns)}",
                INVALID_PARAMETER_VALUE,
            )
        model_input = column
    if isinstance(model_input, str):
        return [model_input]
    titles = list(model_input)
    for row, title in enumerate(titles):
        if not isinstance(title, str):
            null = title is None or title != title  # None, or NaN in a DataFrame
            what = "null" if null else f"{type(title).__name__} {title!r}"
            raise MlflowException(
                f"{field}[{row}]: a title must be a string, got {what}", INVALID_PARAMETER_VALUE
            )
    return titles


class ClassifierModel(mlflow.pyfunc.PythonModel):
    """`Classifier` behind MLflow's pyfunc interface."""

    def load_context(self, context) -> None:
        from prodcat.serving.predictor import Classifier

        self.classifier = Classifier.load(context.artifacts[MODEL_FOLDER])

    # Inputs are checked against the logged signature (which carries the top_k param) and by
    # titles_of: MLflow's own type-hint validation would replace that signature, and, without
    # hints, warn when this class is defined.
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


set_model(ClassifierModel())

"""The code MLflow runs to load a logged prodcat model ("models from code", not a pickle):
the `python_function` (pyfunc) flavor of a model folder, which `prodcat.tracking.mlflow_store`
logs with every tracked run. MLflow runs this file; prodcat imports it nowhere.

Input: a DataFrame with a `title` column (or one column of strings), a Series, or a list of
titles. Output: a DataFrame, one row per title: `category` and `probability` (the best),
`categories` and `probabilities` (the `top_k` best, best first; `params={"top_k": 3}`).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.models import set_model

from prodcat.errors import ProdcatError

MODEL_FOLDER = "model_folder"  # the artifact that holds the prodcat folder (mlflow_store's)


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

"""The metrics: balanced accuracy (the MeLi challenge's), accuracy, macro-F1.

Also the per-category report saved with every run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """balanced_accuracy (mean recall over the categories present), accuracy and macro_f1."""
    with warnings.catch_warnings():
        # Predicting a category absent from y_true is normal with hundreds of categories.
        warnings.simplefilter("ignore")
        return {
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        }


def write_category_report(
    y_true: np.ndarray, y_pred: np.ndarray, names: list[str], path: str | Path
) -> None:
    """CSV of precision, recall, F1 and support per category, worst recall first."""
    labels = np.arange(len(names))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    order = np.lexsort((-support, recall))
    lines = ["category,precision,recall,f1,support"]
    for i in order[support[order] > 0]:
        lines.append(f"{names[i]},{precision[i]:.4f},{recall[i]:.4f},{f1[i]:.4f},{support[i]}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")

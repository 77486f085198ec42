"""The metrics: balanced accuracy (the MeLi challenge's), accuracy, macro-F1.

Also the per-category report saved with every run.
"""

from __future__ import annotations

import csv
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
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")  # quotes names holding commas or quotes
        writer.writerow(["category", "precision", "recall", "f1", "support"])
        for i in order[support[order] > 0]:
            scores = [f"{column[i]:.4f}" for column in (precision, recall, f1)]
            writer.writerow([names[i], *scores, int(support[i])])

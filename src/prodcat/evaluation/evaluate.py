"""Run a model over a split: predictions, loss and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from prodcat.data.batches import Batch
from prodcat.data.dataset import Split
from prodcat.data.vocab import LabelMap
from prodcat.evaluation.metrics import classification_metrics

PREDICTIONS_FILE = "predictions.parquet"


def weighted_loss(
    logits: torch.Tensor,
    batch: Batch,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of row-weighted cross-entropy over the batch, and the sum of the row weights."""
    losses = F.cross_entropy(
        logits.float(),
        batch.labels,
        weight=class_weights,
        reduction="none",
        label_smoothing=label_smoothing,
    )
    if batch.weights is None:
        return losses.sum(), torch.tensor(float(len(losses)), device=losses.device)
    return (losses * batch.weights).sum(), batch.weights.sum()


@dataclass
class Predictions:
    """The k most likely classes of each row of a split, in its order, and the mean loss."""

    top_ids: np.ndarray  # (N, k) int64 class ids, most likely first
    top_probs: np.ndarray  # (N, k) float32
    loss: float


@torch.no_grad()
def predict_split(
    model: torch.nn.Module,
    split: Split,
    batch_size: int,
    device: torch.device,
    autocast: bool = False,
    top_k: int = 1,
) -> Predictions:
    """Top-k classes and probabilities of every row of `split`, and the mean loss."""
    was_training = model.training
    model.eval()
    ids, probs, loss_sum, weight_sum = [], [], 0.0, 0.0
    for batch in split.batches(batch_size):
        batch = batch.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(batch)
        loss, weight = weighted_loss(logits, batch)
        loss_sum += float(loss)
        weight_sum += float(weight)
        p, i = torch.softmax(logits.float(), dim=1).topk(min(top_k, logits.shape[1]), dim=1)
        ids.append(i.cpu().numpy())
        probs.append(p.cpu().numpy())
    model.train(was_training)
    k = min(top_k, getattr(model, "n_classes", top_k))
    return Predictions(
        np.concatenate(ids) if ids else np.zeros((0, k), dtype=np.int64),
        np.concatenate(probs) if probs else np.zeros((0, k), dtype=np.float32),
        loss_sum / max(weight_sum, 1e-12),
    )


def evaluate_split(
    model: torch.nn.Module,
    split: Split,
    batch_size: int,
    device: torch.device,
    autocast: bool = False,
    top_k: int = 1,
) -> tuple[dict[str, float], Predictions]:
    """balanced_accuracy, accuracy, macro_f1, loss and rows of a labelled split; predictions."""
    predictions = predict_split(model, split, batch_size, device, autocast, top_k)
    metrics = classification_metrics(split.labels, predictions.top_ids[:, 0])
    metrics["loss"] = predictions.loss
    metrics["rows"] = len(split)
    return metrics, predictions


def save_predictions(
    folder: str | Path, split: Split, predictions: Predictions, labels: LabelMap
) -> Path:
    """`predictions.parquet`: per row of `split`, its line in the source file, its category
    and the top-k categories with their probabilities (for paired tests between runs)."""
    names = pa.array(labels.names, type=pa.string())
    k = predictions.top_ids.shape[1]
    offsets = pa.array(np.arange(0, len(split) * k + 1, k, dtype=np.int32))
    table = pa.table(
        {
            "line": pa.array(np.asarray(split.file.lines[split.rows], dtype=np.int64)),
            "category": names.take(pa.array(split.labels)),
            "predicted": pa.ListArray.from_arrays(
                offsets, names.take(pa.array(predictions.top_ids.ravel()))
            ),
            "probability": pa.ListArray.from_arrays(
                offsets, pa.array(predictions.top_probs.ravel(), type=pa.float32())
            ),
        }
    )
    path = Path(folder) / PREDICTIONS_FILE
    pq.write_table(table, path)
    return path

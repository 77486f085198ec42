"""Run a model over a split: predictions, loss and metrics."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from prodcat.data.batches import Batch
from prodcat.data.dataset import Split
from prodcat.evaluation.metrics import classification_metrics


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


@torch.no_grad()
def predict_split(
    model: torch.nn.Module,
    split: Split,
    batch_size: int,
    device: torch.device,
    autocast: bool = False,
) -> tuple[np.ndarray, float]:
    """Predicted class ids of every row of `split`, in its order, and the mean loss."""
    was_training = model.training
    model.eval()
    predictions, loss_sum, weight_sum = [], 0.0, 0.0
    for batch in split.batches(batch_size):
        batch = batch.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(batch)
        loss, weight = weighted_loss(logits, batch)
        loss_sum += float(loss)
        weight_sum += float(weight)
        predictions.append(logits.argmax(1).cpu().numpy())
    model.train(was_training)
    y_pred = np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)
    return y_pred, loss_sum / max(weight_sum, 1e-12)


def evaluate_split(
    model: torch.nn.Module,
    split: Split,
    batch_size: int,
    device: torch.device,
    autocast: bool = False,
) -> tuple[dict[str, float], np.ndarray]:
    """balanced_accuracy, accuracy, macro_f1, loss and rows of a labelled split; predictions."""
    y_pred, loss = predict_split(model, split, batch_size, device, autocast)
    metrics = classification_metrics(split.labels, y_pred)
    metrics["loss"] = loss
    metrics["rows"] = len(split)
    return metrics, y_pred

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
from prodcat.evaluation.calibration import (
    CHUNK_ROWS,
    Calibration,
    calibrate_logits,
    calibration_metrics,
)
from prodcat.evaluation.metrics import classification_metrics

PREDICTIONS_FILE = "predictions.parquet"


def weighted_loss(
    logits: torch.Tensor,
    batch: Batch,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    kind: str = "cross_entropy",
    distill: tuple[float, float] = (0.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the row-weighted loss over the batch, and the sum of the row weights.

    `kind`: "cross_entropy", or "squared_hinge", one-vs-rest as scikit-learn's LinearSVC
    trains: sum over categories of max(0, 1 - t s)^2, t = +1 for the title's category and -1
    for every other, s the category's score. `distill` = (weight w, temperature T): for a batch
    with a teacher's probabilities p (its top classes), each row's loss is (1 - w) x that
    plus w x T^2 x KL(p || softmax(logits / T)) (Hinton et al.'s distillation).
    """
    if kind == "squared_hinge":
        scores = logits.float()
        signs = torch.full_like(scores, -1.0)
        signs.scatter_(1, batch.labels.unsqueeze(1), 1.0)
        losses = (1 - signs * scores).clamp(min=0).square().sum(1)
        if class_weights is not None:
            losses = losses * class_weights[batch.labels]
    else:
        losses = F.cross_entropy(
            logits.float(),
            batch.labels,
            weight=class_weights,
            reduction="none",
            label_smoothing=label_smoothing,
        )
    weight, temperature = distill
    if weight and batch.teacher_probs is not None:
        log_q = torch.log_softmax(logits.float() / temperature, dim=1).gather(1, batch.teacher_ids)
        p = batch.teacher_probs
        divergence = (p * (torch.log(p.clamp(min=1e-12)) - log_q)).sum(1) * temperature**2
        if class_weights is not None:
            divergence = divergence * class_weights[batch.labels]
        losses = (1 - weight) * losses + weight * divergence
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
    temperature: float = 1.0,
) -> Predictions:
    """Top-k classes and probabilities of every row of `split`, and the mean loss, of the
    logits divided by `temperature` (the model's calibration)."""
    was_training = model.training
    model.eval()
    # The outputs are filled in place, not gathered as small arrays per batch: those,
    # interleaved with each batch's large logits, fragmented the heap by about one batch's
    # logits per batch (2 M validation rows ran a 24 GB machine out of memory, 2026-11-29).
    ids, probs, loss_sum, weight_sum, done = None, None, 0.0, 0.0, 0
    for batch in split.batches(batch_size):
        batch = batch.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(batch)
        logits = logits.float() / temperature
        loss, weight = weighted_loss(logits, batch)
        loss_sum += float(loss)
        weight_sum += float(weight)
        p, i = torch.softmax(logits.float(), dim=1).topk(min(top_k, logits.shape[1]), dim=1)
        if ids is None:
            ids = np.empty((len(split), i.shape[1]), dtype=np.int64)
            probs = np.empty((len(split), i.shape[1]), dtype=np.float32)
        ids[done : done + len(i)] = i.cpu().numpy()
        probs[done : done + len(i)] = p.cpu().numpy()
        done += len(i)
    model.train(was_training)
    k = min(top_k, getattr(model, "n_classes", top_k))
    return Predictions(
        ids[:done] if ids is not None else np.zeros((0, k), dtype=np.int64),
        probs[:done] if probs is not None else np.zeros((0, k), dtype=np.float32),
        loss_sum / max(weight_sum, 1e-12),
    )


def evaluate_split(
    model: torch.nn.Module,
    split: Split,
    batch_size: int,
    device: torch.device,
    autocast: bool = False,
    top_k: int = 1,
    temperature: float = 1.0,
) -> tuple[dict[str, float], Predictions]:
    """`split_metrics` of a labelled split, its logits divided by `temperature`; predictions."""
    predictions = predict_split(model, split, batch_size, device, autocast, top_k, temperature)
    return split_metrics(split.labels, predictions), predictions


def split_metrics(labels: np.ndarray, predictions: Predictions) -> dict[str, float]:
    """balanced_accuracy, accuracy, macro_f1, loss, calibration (ece, auto_label_share_95/99
    and their thresholds) and rows, of predictions against the true class ids."""
    metrics = classification_metrics(labels, predictions.top_ids[:, 0])
    metrics["loss"] = predictions.loss
    correct = predictions.top_ids[:, 0] == np.asarray(labels)
    metrics.update(calibration_metrics(predictions.top_probs[:, 0], correct))
    metrics["rows"] = len(labels)
    return metrics


@torch.no_grad()
def split_logits(
    model: torch.nn.Module,
    split: Split,
    batch_size: int,
    device: torch.device,
    autocast: bool = False,
) -> torch.Tensor:
    """(N, C) float32 logits of every row of `split`, in its order, on the CPU (filled in
    place: gathered and concatenated, they were held twice)."""
    was_training = model.training
    model.eval()
    out, done = torch.zeros(0, getattr(model, "n_classes", 0)), 0
    for batch in split.batches(batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(batch.to(device)).float().cpu()
        if done == 0:
            out = torch.empty(len(split), logits.shape[1])
        out[done : done + len(logits)] = logits
        done += len(logits)
    model.train(was_training)
    return out[:done]


def logits_predictions(
    logits: torch.Tensor,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    top_k: int = 1,
    temperature: float = 1.0,
) -> Predictions:
    """The `Predictions` of (N, C) logits already in memory, divided by `temperature`, with
    their mean loss on `labels` (weighted by `weights` as `predict_split` weights it);
    computed `CHUNK_ROWS` rows at a time, as `predict_split` goes batch by batch."""
    n, k = len(logits), min(top_k, logits.shape[1]) if logits.ndim == 2 else top_k
    target = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    row_weights = None if weights is None else torch.from_numpy(np.asarray(weights))
    ids, probs = np.empty((n, k), dtype=np.int64), np.empty((n, k), dtype=np.float32)
    loss_sum, weight_sum = 0.0, 0.0
    for i in range(0, n, CHUNK_ROWS):
        rows = slice(i, i + CHUNK_ROWS)
        scaled = logits[rows].float() / temperature
        chunk_weights = None if row_weights is None else row_weights[rows]
        # weighted_loss reads a batch's labels and weights only.
        chunk = Batch(None, None, target[rows], chunk_weights)  # type: ignore[arg-type]
        loss, weight = weighted_loss(scaled, chunk)
        loss_sum, weight_sum = loss_sum + float(loss), weight_sum + float(weight)
        p, top = torch.softmax(scaled, dim=1).topk(k, dim=1)
        ids[rows], probs[rows] = top.numpy(), p.numpy()
    return Predictions(ids, probs, loss_sum / max(weight_sum, 1e-12))


# Rows of predictions.parquet built and written at a time (a row group each): the category
# names of 500,000 rows' top 5 made at once took 1.07 GB, the run's largest allocation.
PREDICTION_ROWS = 65_536


def save_predictions(
    folder: str | Path, split: Split, predictions: Predictions, labels: LabelMap
) -> Path:
    """`predictions.parquet`: per row of `split`, its line in the source file, its category
    and the top-k categories with their probabilities (for paired tests between runs),
    written `PREDICTION_ROWS` rows at a time."""
    names = pa.array(labels.names, type=pa.string())
    k = predictions.top_ids.shape[1]
    lines = split.file.lines
    path = Path(folder) / PREDICTIONS_FILE
    schema = pa.schema(
        [
            ("line", pa.int64()),
            ("category", pa.string()),
            ("predicted", pa.list_(pa.string())),
            ("probability", pa.list_(pa.float32())),
        ]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, max(len(split), 1), PREDICTION_ROWS):
            rows = slice(start, start + PREDICTION_ROWS)
            n = len(split.rows[rows])
            offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
            top_ids, top_probs = predictions.top_ids[rows], predictions.top_probs[rows]
            columns = [
                pa.array(np.asarray(lines[split.rows[rows]], dtype=np.int64)),
                names.take(pa.array(split.labels[rows])),
                pa.ListArray.from_arrays(offsets, names.take(pa.array(top_ids.ravel()))),
                pa.ListArray.from_arrays(offsets, pa.array(top_probs.ravel(), type=pa.float32())),
            ]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
    return path


# Rows a temperature is fitted on at most: one scalar needs no more, and the logits of a
# 2 M-row validation split over 1,588 categories would take 13 GB.
CALIBRATION_ROWS = 100_000


def calibrate_split(
    model: torch.nn.Module,
    split: Split,
    batch_size: int,
    device: torch.device,
    autocast: bool = False,
    max_rows: int = CALIBRATION_ROWS,
) -> tuple[Calibration, dict[str, float]]:
    """The temperature scaling fitted on a labelled split (the validation rows; a fixed
    sample of `max_rows` of them when there are more), and the split's `split_metrics` under
    it, over all its rows."""
    sample = split.sample(max_rows, seed=0)
    logits = split_logits(model, sample, batch_size, device, autocast)
    labels = torch.from_numpy(np.asarray(sample.labels, dtype=np.int64))
    calibration = calibrate_logits(logits, labels)
    if sample is not split:  # score every row, streaming, not from the sample's logits
        metrics, _ = evaluate_split(
            model, split, batch_size, device, autocast, temperature=calibration.temperature
        )
        return calibration, metrics
    scaled = logits_predictions(logits, split.labels, split.weights, 1, calibration.temperature)
    return calibration, split_metrics(split.labels, scaled)

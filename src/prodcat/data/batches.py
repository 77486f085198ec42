"""Padded batches of token ids, read straight from a memory-mapped cache."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from prodcat.fault_points import pause_point

if TYPE_CHECKING:
    import torch


@dataclass
class Batch:
    """What every model receives, whatever its family."""

    input_ids: torch.Tensor  # (B, T) int64, padded with 0
    lengths: torch.Tensor  # (B,) int64, tokens before padding
    labels: torch.Tensor | None = None  # (B,) int64
    weights: torch.Tensor | None = None  # (B,) float32 per-row loss weights
    features: torch.Tensor | None = None  # (B, D) float32 title vectors (sentence encoders)
    # A teacher's most likely classes of each row (B, k) int64 and their probabilities (B, k)
    # float32, summing to 1 (distillation: `training.teacher`).
    teacher_ids: torch.Tensor | None = None
    teacher_probs: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        moved = {
            f.name: (None if v is None else v.to(device, non_blocking=True))
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return Batch(**moved)

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory, so that a copy to a GPU runs asynchronously."""
        return Batch(
            **{
                f.name: (None if v is None else v.pin_memory())
                for f in fields(self)
                for v in [getattr(self, f.name)]
            }
        )

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def batch_order(
    n: int, *, shuffle: bool, seed: int, epoch: int, buffer: int | None = None
) -> np.ndarray:
    """Order in which to visit `n` rows in an epoch; the same for the same seed and epoch.

    With `buffer`, rows are shuffled only inside consecutive windows of that many rows (and
    the windows' order is shuffled), so reads stay local in files larger than memory.
    """
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch])
    if buffer is None or buffer >= n:
        return rng.permutation(n).astype(np.int64)
    starts = rng.permutation(np.arange(0, n, buffer))
    return np.concatenate([s + rng.permutation(min(buffer, n - s)) for s in starts]).astype(
        np.int64
    )


def bucket_by_length(
    order: np.ndarray, lengths: np.ndarray, batch_size: int, *, seed: int, epoch: int
) -> np.ndarray:
    """`order` rearranged so that each run of `batch_size` rows holds titles of similar length.

    Within windows of 64 batches of the shuffled order, rows are sorted by length
    (`lengths[i]` is row `order[i]`'s) and cut into batches; the full batches are then
    visited in a shuffled order, the same for the same seed and epoch. RNNs and transformers
    then pad little, and an epoch still mixes lengths and categories.
    """
    window = batch_size * 64
    parts = []
    for begin in range(0, len(order), window):
        part = order[begin : begin + window]
        parts.append(part[np.argsort(lengths[begin : begin + window], kind="stable")])
    order = np.concatenate(parts) if parts else order
    full = len(order) // batch_size
    rng = np.random.default_rng([seed, epoch, 1])
    blocks = order[: full * batch_size].reshape(full, batch_size)[rng.permutation(full)]
    return np.concatenate([blocks.reshape(-1), order[full * batch_size :]])


def iterate_batches(
    tokens: np.ndarray,
    lengths: np.ndarray,
    rows: np.ndarray,
    *,
    remap: np.ndarray,
    labels: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    features: np.ndarray | None = None,
    teacher: tuple[np.ndarray, np.ndarray] | None = None,
    batch_size: int,
    order: np.ndarray | None = None,
    start: int = 0,
) -> Iterator[Batch]:
    """Yield batches over `rows` of the cache (in `order`), from batch number `start` on.

    `remap` turns cache token ids into model ids (a row of ids per token when 2-D, laid side
    by side: `Featurizer.pieces_per_token`); `labels` and `weights` are aligned with
    `rows`. Each batch is cut to its longest title. With `features` (one vector per cache
    row), batches carry those vectors and no token ids. `teacher`: (ids, probabilities) of a
    teacher's top classes, aligned with `rows`.
    """
    import torch  # here, not at the top: `prodcat data` commands never pay for importing torch

    order = np.arange(len(rows)) if order is None else order
    for begin in range(start * batch_size, len(order), batch_size):
        pause_point("batch")  # training and evaluation batches alike
        # Sorted positions read the memory map in file order; the batch's order is irrelevant.
        pick = np.sort(order[begin : begin + batch_size])
        where = rows[pick]
        rowwise = {
            "labels": None if labels is None else torch.from_numpy(labels[pick]),
            "weights": None if weights is None else torch.from_numpy(weights[pick]),
        }
        if teacher is not None:
            rowwise["teacher_ids"] = torch.from_numpy(teacher[0][pick].astype(np.int64))
            rowwise["teacher_probs"] = torch.from_numpy(teacher[1][pick].astype(np.float32))
        if features is not None:
            yield Batch(
                input_ids=torch.zeros((len(pick), 0), dtype=torch.int64),
                lengths=torch.zeros(len(pick), dtype=torch.int64),
                features=torch.from_numpy(np.asarray(features[where], dtype=np.float32)),
                **rowwise,
            )
            continue
        lens = lengths[where].astype(np.int64)
        width = max(int(lens.max()), 1)
        ids = remap[tokens[where, :width]].reshape(len(where), -1)  # several ids per piece
        yield Batch(
            input_ids=torch.from_numpy(ids.astype(np.int64, copy=False)),
            lengths=torch.from_numpy(lens),
            **rowwise,
        )

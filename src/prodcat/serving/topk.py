"""The k most likely categories of titles, the same for every runtime."""

from __future__ import annotations

import numpy as np


def softmax_top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) ids of the `k` largest logits of each row, best first, and their softmax
    probabilities."""
    k = min(k, logits.shape[1])
    if k == logits.shape[1]:
        indices = np.argsort(-logits, axis=1, kind="stable")
    else:
        part = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(logits, part, 1), axis=1, kind="stable")
        indices = np.take_along_axis(part, order, 1)
    values = np.take_along_axis(logits, indices, 1)
    top = logits.max(axis=1, keepdims=True)
    log_norm = top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    return indices, np.exp(values - log_norm)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, (N, C)."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class NamedTopK:
    """`predict_top_k` for a runtime that has `top_k(titles, k, batch_size)` (class ids and
    probabilities) and `labels`: one definition for the torch and the ONNX runtimes."""

    def predict_top_k(
        self, titles: str | list[str], k: int = 3, batch_size: int = 4096
    ) -> list[list[tuple[str, float]]]:
        """The `k` most likely (category, probability) pairs of each title, best first."""
        titles = [titles] if isinstance(titles, str) else list(titles)
        indices, probs = self.top_k(titles, k, batch_size)
        names = self.labels.names
        return [
            [(names[i], p) for i, p in zip(ix, ps)]
            for ix, ps in zip(indices.tolist(), probs.tolist())
        ]

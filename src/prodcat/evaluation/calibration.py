"""Probabilities you can trust: temperature scaling, expected calibration error and the
share of titles that can be labelled automatically at a given precision.

A catalogue team auto-accepts a category when the model is confident enough and sends the
rest to a person; that only works if "0.97" means right 97 times in 100. Temperature
scaling (Guo et al., 2017) divides the logits by one scalar T fitted on the validation rows
(minimum NLL): it changes no prediction, only how sure they are. `calibration.json` in a
model folder holds T; `Classifier` applies it to every probability it returns.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch only where a temperature is fitted: the ONNX runtime reads this file
    import torch

CALIBRATION_FILE = "calibration.json"
ECE_BINS = 15
AUTO_LABEL_PRECISIONS = (0.95, 0.99)
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0


# Rows whose (rows, C) temporaries exist at once when a temperature is fitted or its ECE
# measured: the logits of a 100 k-row sample over 1,588 categories are 635 MB, and the NLL's
# softmax, its gradient and the division by T over all rows at once were four copies more.
# Chunks of 1,588 categories stay above glibc's largest mmap threshold (32 MB), so each is
# given back when freed: 4,096 rows (26 MB chunks) fragmented the heap to twice the growth.
CHUNK_ROWS = 8192


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 100) -> float:
    """The T > 0 that minimises the NLL of `softmax(logits / T)` on (N, C) logits and (N,)
    labels: LBFGS over log T (so T stays positive), started at T = 1, kept within
    [MIN_TEMPERATURE, MAX_TEMPERATURE]; 1 when every row is right already. The NLL and its
    slope are summed `CHUNK_ROWS` rows at a time: memory beyond the logits is two chunks'."""
    import torch

    logits = logits.detach()
    labels = labels.detach().long()
    n = len(labels)
    if n == 0 or all(
        bool((logits[i : i + CHUNK_ROWS].argmax(1) == labels[i : i + CHUNK_ROWS]).all())
        for i in range(0, n, CHUNK_ROWS)
    ):
        # No row wrong: the NLL falls forever as T -> 0, and the rows say nothing of how
        # sure the model should be. Keep it as it is.
        return 1.0
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe", tolerance_change=1e-9
    )

    def nll() -> torch.Tensor:
        # NLL(T) = mean(logsumexp(z / T) - z_y / T); its slope in log T is
        # mean(z_y - E_p[z]) / T, p = softmax(z / T): written out, not autograd's, so a chunk
        # needs one (rows, C) temporary beside logsumexp's, not five.
        t = math.exp(float(log_t.detach()))
        total, slope = 0.0, 0.0
        with torch.no_grad():
            for i in range(0, n, CHUNK_ROWS):
                z, y = logits[i : i + CHUNK_ROWS].float(), labels[i : i + CHUNK_ROWS, None]
                scaled = z / t
                lse = torch.logsumexp(scaled, dim=1, keepdim=True)
                z_y = z.gather(1, y)
                total += float((lse - z_y / t).sum())
                expected = scaled.sub_(lse).exp_().mul_(z).sum(1, keepdim=True)  # E_p[z]
                slope += float((z_y - expected).sum()) / t
        log_t.grad = torch.tensor([slope / n])
        return torch.tensor(total / n)

    optimizer.step(nll)
    temperature = math.exp(log_t.item())
    if not math.isfinite(temperature):
        return 1.0  # a NaN from degenerate logits: keep the model as it is
    # Nearly every row right (or wrong) pushes T to an extreme: stop at the bounds.
    return min(max(temperature, MIN_TEMPERATURE), MAX_TEMPERATURE)


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: over `bins` equal-width bins of top-1 confidence, the row-weighted mean of
    |accuracy - mean confidence| of each bin (0 for a perfectly calibrated model)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if len(confidence) == 0:
        return math.nan
    # Bins are (lo, hi]; a confidence of 0 joins the first bin.
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)
    return float(np.abs(gap).sum() / len(confidence))


def auto_label_share(
    confidence: np.ndarray, correct: np.ndarray, precision: float
) -> tuple[float, float]:
    """The largest share of rows that, taken most confident first, are right at least
    `precision` of the time, and the confidence threshold that selects them (the least
    confidence among them; 1.0 with a share of 0 when even the most confident row fails).

    Rows of equal confidence are taken or left together: a threshold cannot split them.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    n = len(confidence)
    if n == 0:
        return math.nan, math.nan
    order = np.argsort(-confidence, kind="stable")
    sorted_conf = confidence[order]
    running = np.cumsum(correct[order]) / np.arange(1, n + 1)
    # Only prefixes that end where the confidence changes can be chosen by a threshold.
    ends = np.r_[sorted_conf[1:] != sorted_conf[:-1], True]
    ok = np.flatnonzero(ends & (running >= precision - 1e-12))
    if len(ok) == 0:
        return 0.0, 1.0
    last = ok[-1]
    return float((last + 1) / n), float(sorted_conf[last])


def calibration_metrics(confidence: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """ece, and auto_label_share_95/_99 with their confidence thresholds
    (auto_label_threshold_95/_99), of top-1 confidences and whether each top-1 was right."""
    metrics = {"ece": expected_calibration_error(confidence, correct)}
    for precision in AUTO_LABEL_PRECISIONS:
        share, threshold = auto_label_share(confidence, correct, precision)
        name = f"{round(precision * 100)}"
        metrics[f"auto_label_share_{name}"] = share
        metrics[f"auto_label_threshold_{name}"] = threshold
    return metrics


@dataclass
class Calibration:
    """The temperature a model's logits are divided by, and the validation ECE it fixed."""

    temperature: float = 1.0
    ece_before: float = math.nan
    ece_after: float = math.nan
    rows: int = 0  # validation rows it was fitted on

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Calibration:
        """The folder's calibration; none (T = 1) for a folder saved without one."""
        path = Path(folder) / CALIBRATION_FILE
        if not path.is_file():
            return cls()
        from prodcat.errors import ProdcatError

        try:
            calibration = cls(**json.loads(path.read_text(encoding="utf-8")))
            if not (calibration.temperature > 0 and math.isfinite(calibration.temperature)):
                raise ValueError(f"temperature {calibration.temperature}")
        except (ValueError, TypeError) as e:
            raise ProdcatError(f"{path}: not a calibration file ({e})") from None
        return calibration


def calibrate_logits(logits: torch.Tensor, labels: torch.Tensor) -> Calibration:
    """Fit the temperature of (N, C) validation logits; report ECE before and after."""
    import torch

    def ece(temperature: float) -> float:
        confidence, correct = [], []
        for i in range(0, len(labels), CHUNK_ROWS):
            scaled = logits[i : i + CHUNK_ROWS].float() / temperature
            top, predicted = torch.softmax(scaled, dim=1).max(dim=1)
            confidence.append(top.numpy())
            correct.append((predicted == labels[i : i + CHUNK_ROWS]).numpy())
        if not confidence:
            return math.nan
        return expected_calibration_error(np.concatenate(confidence), np.concatenate(correct))

    temperature = fit_temperature(logits, labels)
    return Calibration(
        temperature=temperature,
        ece_before=ece(1.0),
        ece_after=ece(temperature),
        rows=len(labels),
    )

"""Ensembles as models: several trained model folders behind one, whose probabilities are a
weighted mean of the members' calibrated probabilities.

An ensemble folder holds `config.yaml` (family `ensemble`, the members' model configs and
the data section titles are read with), `labels.txt`, `ensemble.json` (the members'
sub-folders and weights), `calibration.json` (a temperature on top of the mean) and each
member's own model folder under `members/`; `manifest.json` covers them all.

The model is an `nn.Module` like any other: `EnsembleModel(batch)` returns logits, the log
of the weighted mean of probabilities (softmax gives the mean back), so evaluation,
calibration and serving use it unchanged. Its input is an `EnsembleBatch`, one `Batch` per
member, since each member reads titles through its own featurizer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prodcat.data.batches import Batch
from prodcat.data.dataset import Split
from prodcat.errors import ProdcatError

ENSEMBLE_FILE = "ensemble.json"
MEMBERS_FOLDER = "members"


def is_ensemble_folder(folder: str | Path) -> bool:
    """Whether `folder` holds an ensemble (its `ensemble.json`)."""
    return (Path(folder) / ENSEMBLE_FILE).is_file()


@dataclass
class EnsembleSpec:
    """What `ensemble.json` holds: member sub-folders (relative) and their weights."""

    members: list[str]
    weights: list[float]
    fitted_on: str | None = None  # what chose the weights: "validation", a file name, None

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / ENSEMBLE_FILE
        spec = {"members": self.members, "weights": self.weights, "fitted_on": self.fitted_on}
        path.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> EnsembleSpec:
        path = Path(folder) / ENSEMBLE_FILE
        try:
            tree = json.loads(path.read_text(encoding="utf-8"))
            spec = cls(list(tree["members"]), [float(w) for w in tree["weights"]])
            spec.fitted_on = tree.get("fitted_on")
            if len(spec.members) != len(spec.weights) or not spec.members:
                raise ValueError("members and weights differ in length")
        except (ValueError, KeyError, TypeError) as e:
            raise ProdcatError(f"{path}: not an ensemble file ({e})") from None
        return spec


@dataclass
class EnsembleBatch:
    """One `Batch` per member, of the same titles; labels and weights of the first."""

    parts: list[Batch]

    @property
    def labels(self) -> torch.Tensor | None:
        return self.parts[0].labels

    @property
    def weights(self) -> torch.Tensor | None:
        return self.parts[0].weights

    def to(self, device: torch.device | str) -> EnsembleBatch:
        return EnsembleBatch([part.to(device) for part in self.parts])

    def __len__(self) -> int:
        return len(self.parts[0])


class EnsembleSplit:
    """The same rows of a file as each member encodes them; reads like a `Split`."""

    def __init__(self, parts: Sequence[Split]):
        first = parts[0]
        for part in parts[1:]:
            if len(part) != len(first) or not np.array_equal(part.labels, first.labels):
                raise ProdcatError(
                    f"the members read different {first.name} rows ({len(first)} and "
                    f"{len(part)}): their data settings must select the same rows"
                )
        self.parts = list(parts)
        self.name = first.name
        self.file, self.rows = first.file, first.rows
        self.labels, self.weights = first.labels, first.weights

    def __len__(self) -> int:
        return len(self.parts[0])

    def sample(self, rows: int | None, seed: int) -> EnsembleSplit:
        """The same fixed sample of every member's rows (`Split.sample`)."""
        return (
            self
            if rows is None or rows >= len(self)
            else EnsembleSplit([part.sample(rows, seed) for part in self.parts])
        )

    def batches(self, batch_size: int, **options) -> Iterator[EnsembleBatch]:
        """The members' batches of the same rows, in step (no shuffling)."""
        for parts in zip(*(part.batches(batch_size) for part in self.parts)):
            yield EnsembleBatch(list(parts))


class EnsembleModel(nn.Module):
    """Logits log(sum_i w_i softmax(member_i / T_i)): the weighted mean of the members'
    calibrated probabilities, as logits."""

    def __init__(
        self, members: Sequence[nn.Module], weights: Sequence[float], temperatures: Sequence[float]
    ):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.n_classes = members[0].n_classes
        self.register_buffer("temperatures", torch.tensor(list(temperatures), dtype=torch.float32))
        self.register_buffer("log_weights", torch.zeros(len(members)))
        self.set_weights(weights)
        self.init_report: dict[str, float] = {}

    def set_weights(self, weights: Sequence[float]) -> None:
        w = torch.tensor(list(weights), dtype=torch.float32)
        if len(w) != len(self.members) or (w < 0).any() or float(w.sum()) <= 0:
            raise ProdcatError(f"ensemble weights must be non-negative, one per member: {weights}")
        self.log_weights.copy_((w / w.sum()).log())

    @property
    def weights(self) -> list[float]:
        return self.log_weights.exp().tolist()

    def member_log_probs(self, batch: EnsembleBatch) -> torch.Tensor:
        """(M, B, C) calibrated log-probabilities of every member."""
        return torch.stack(
            [
                torch.log_softmax(member(part).float() / t, dim=1)
                for member, part, t in zip(self.members, batch.parts, self.temperatures)
            ]
        )

    def forward(self, batch: EnsembleBatch) -> torch.Tensor:
        log_probs = self.member_log_probs(batch)
        return torch.logsumexp(log_probs + self.log_weights.view(-1, 1, 1), dim=0)


def fit_weights(true_log_probs: np.ndarray, iterations: int = 500) -> np.ndarray:
    """Non-negative weights summing to 1 that maximise sum_n log sum_i w_i p_i(y_n), from
    (N, M) log-probabilities each member gives each row's true class: EM for the weights of a
    mixture, which raises the likelihood at every step."""
    log_p = np.asarray(true_log_probs, dtype=np.float64)
    members = log_p.shape[1]
    weights = np.full(members, 1.0 / members)
    if len(log_p) == 0:
        return weights
    for _ in range(iterations):
        joint = log_p + np.log(np.maximum(weights, 1e-300))
        top = joint.max(axis=1, keepdims=True)
        responsibility = np.exp(joint - top)
        responsibility /= responsibility.sum(axis=1, keepdims=True)
        updated = responsibility.mean(axis=0)
        if np.abs(updated - weights).max() < 1e-7:
            weights = updated
            break
        weights = updated
    return weights / weights.sum()


@torch.no_grad()
def true_class_log_probs(
    model: EnsembleModel, split: EnsembleSplit, batch_size: int, device: torch.device
) -> np.ndarray:
    """(N, M): the calibrated log-probability each member gives each row's true class."""
    model.eval()
    rows = []
    for batch in split.batches(batch_size):
        batch = batch.to(device)
        log_probs = model.member_log_probs(batch)  # (M, B, C)
        index = batch.labels.view(1, -1, 1).expand(log_probs.shape[0], -1, 1)
        rows.append(log_probs.gather(2, index).squeeze(2).T.cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, len(model.members)))

"""`Classifier`: a saved model folder behind a scikit-learn-like API, whatever family (an
ensemble too) the folder holds.

Every probability it returns is calibrated: the logits are divided by the temperature the
folder's `calibration.json` holds (1 without one).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from prodcat.config import Config
from prodcat.data.vocab import LabelMap
from prodcat.errors import ProdcatError
from prodcat.evaluation.calibration import Calibration
from prodcat.evaluation.evaluate import evaluate_split
from prodcat.models.folder import load_model_folder
from prodcat.serving.location import local_model_folder
from prodcat.serving.topk import NamedTopK

# Up to this many titles a call runs on one thread (and takes the featurizers' pure-Python
# path): a few titles gain nothing from several intra-op threads and, on a busy machine, wait
# for them: one title took 6 ms with 2 threads on 2 busy cores, 0.1 ms with 1.
SMALL_BATCH = 256


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run torch ops of the calling thread on `n` threads, then restore the setting."""
    saved = torch.get_num_threads()
    if saved == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class Classifier(NamedTopK):
    """Predict categories of product titles with a trained model.

    >>> clf = Classifier.load("runs/mlp")
    >>> clf.predict(["Placa De Sonido - Behringer Umc22"])
    ['SOUND_CARDS']
    """

    runtime = "torch"

    def __init__(
        self,
        cfg: Config,
        model: torch.nn.Module,
        reader,
        labels: LabelMap,
        folder: Path | None = None,
        calibration: Calibration | None = None,
    ):
        self.cfg = cfg
        self.model = model
        self.reader = reader  # titles -> the model's input (`models.base.TitleReader`)
        self.labels = labels
        self.folder = folder
        self.calibration = calibration or Calibration()

    @classmethod
    def load(cls, folder: str | Path) -> Classifier:
        """Load a model folder written by `prodcat train` or `prodcat ensemble`, or one
        MLflow logged (`runs:/<run id>/model`, `models:/<name>/<version>`)."""
        folder = local_model_folder(folder)
        loaded = load_model_folder(folder)  # checks the manifest
        cfg, model, reader, labels, calibration = loaded
        return cls(cfg, model, reader, labels, folder, calibration)

    @property
    def featurizer(self):
        """A single network's featurizer (an ensemble's members have one each)."""
        return self.reader.featurizer

    @property
    def temperature(self) -> float:
        """What the model's logits are divided by (calibration.json; 1 without one)."""
        return self.calibration.temperature

    @property
    def categories(self) -> list[str]:
        return list(self.labels.names)

    def batch(self, titles: list[str]):
        """The model's input for raw titles."""
        return self.reader(titles)

    @staticmethod
    def _threads(n_titles: int):
        return intra_op_threads(1 if n_titles <= SMALL_BATCH else torch.get_num_threads())

    def logits(self, titles: list[str], batch_size: int = 4096) -> torch.Tensor:
        """(N, C) calibrated logits of raw titles (the model's, divided by its temperature),
        `batch_size` titles per model call."""
        if batch_size < 1:
            raise ProdcatError(f"batch size must be at least 1, got {batch_size}")
        with torch.inference_mode(), self._threads(len(titles)):
            chunks = [
                self.model(self.batch(titles[i : i + batch_size]))
                for i in range(0, len(titles), batch_size)
            ]
        if not chunks:
            return torch.zeros(0, len(self.labels))
        logits = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
        return logits / self.temperature if self.temperature != 1.0 else logits

    def top_k(
        self, titles: list[str], k: int, batch_size: int = 4096
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, k) class ids of the `k` most likely categories, best first, and their
        probabilities; the softmax's normaliser is taken without materialising it."""
        if k < 1:
            raise ProdcatError(f"top-k must be at least 1, got {k}")
        logits = self.logits(titles, batch_size).float()
        with self._threads(len(titles)):
            values, indices = logits.topk(min(k, logits.shape[1]), dim=1)
            probs = (values - torch.logsumexp(logits, dim=1, keepdim=True)).exp()
        return indices.numpy(), probs.numpy()

    def predict(self, titles: str | list[str], batch_size: int = 4096) -> list[str]:
        """The most likely category of each title."""
        titles = [titles] if isinstance(titles, str) else list(titles)
        logits = self.logits(titles, batch_size)
        with self._threads(len(titles)):
            ids = logits.argmax(1).tolist()  # no softmax needed
        return [self.labels.names[i] for i in ids]

    def predict_proba(self, titles: str | list[str], batch_size: int = 4096) -> np.ndarray:
        """Probabilities over `categories`, (N, C), as scikit-learn's `predict_proba`."""
        titles = [titles] if isinstance(titles, str) else list(titles)
        logits = self.logits(titles, batch_size).float()
        with self._threads(len(titles)):
            return torch.softmax(logits, dim=1).numpy()

    def labelled_split(self, path: str | Path):
        """Every row of a labelled file, encoded as the model reads it."""
        return self.reader.split(path, self.labels)

    def evaluate(self, path: str | Path, batch_size: int = 4096) -> dict[str, float]:
        """balanced_accuracy, accuracy, macro_f1, loss, calibration (ece, auto_label_share_95
        and _99 with their confidence thresholds) and rows, on a labelled file."""
        split = self.labelled_split(path)
        metrics, _ = evaluate_split(
            self.model, split, batch_size, torch.device("cpu"), temperature=self.temperature
        )
        return metrics

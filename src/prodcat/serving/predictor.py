"""`Classifier`: a saved model folder behind a scikit-learn-like API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from prodcat.config import Config
from prodcat.data.cache import encode_file
from prodcat.data.dataset import labelled_split
from prodcat.errors import ProdcatError
from prodcat.evaluation.evaluate import evaluate_split
from prodcat.models.folder import load_model_folder


class Classifier:
    """Predict categories of product titles with a trained model.

    >>> clf = Classifier.load("runs/mlp")
    >>> clf.predict(["Placa De Sonido - Behringer Umc22"])
    ['SOUND_CARDS']
    """

    def __init__(self, cfg: Config, model, featurizer, labels, folder: Path | None = None):
        self.cfg = cfg
        self.model = model
        self.featurizer = featurizer
        self.labels = labels
        self.folder = folder

    @classmethod
    def load(cls, folder: str | Path) -> Classifier:
        """Load a model folder written by `prodcat train`."""
        cfg, model, featurizer, labels = load_model_folder(folder)
        return cls(cfg, model, featurizer, labels, Path(folder))

    @property
    def categories(self) -> list[str]:
        return list(self.labels.names)

    @torch.no_grad()
    def _logits(self, titles: list[str], batch_size: int) -> torch.Tensor:
        chunks = [
            self.model(self.featurizer(titles[i : i + batch_size]))
            for i in range(0, len(titles), batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0, len(self.labels))

    def predict(self, titles: str | list[str], batch_size: int = 4096) -> list[str]:
        """The most likely category of each title."""
        titles = [titles] if isinstance(titles, str) else list(titles)
        ids = self._logits(titles, batch_size).argmax(1).tolist()
        return [self.labels.names[i] for i in ids]

    def predict_proba(self, titles: str | list[str], batch_size: int = 4096) -> np.ndarray:
        """Probabilities over `categories`, (N, C), as scikit-learn's `predict_proba`."""
        titles = [titles] if isinstance(titles, str) else list(titles)
        return torch.softmax(self._logits(titles, batch_size).float(), dim=1).numpy()

    def predict_top_k(
        self, titles: str | list[str], k: int = 3, batch_size: int = 4096
    ) -> list[list[tuple[str, float]]]:
        """The `k` most likely (category, probability) pairs of each title, best first."""
        if k < 1:
            raise ProdcatError(f"top-k must be at least 1, got {k}")
        titles = [titles] if isinstance(titles, str) else list(titles)
        probs = torch.softmax(self._logits(titles, batch_size).float(), dim=1)
        values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
        return [
            [(self.labels.names[i], float(p)) for p, i in zip(vs.tolist(), ix.tolist())]
            for vs, ix in zip(values, indices)
        ]

    def evaluate(self, path: str | Path, batch_size: int = 4096) -> dict[str, float]:
        """balanced_accuracy, accuracy, macro_f1, loss and rows on a labelled file."""
        file = encode_file(path, self.cfg.data, self.featurizer)
        rows = np.arange(file.n_rows)
        split = labelled_split(
            "evaluation", file, rows, self.featurizer, self.labels, self.cfg.data
        )
        metrics, _ = evaluate_split(self.model, split, batch_size, torch.device("cpu"))
        return metrics

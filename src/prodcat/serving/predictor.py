"""`Classifier`: a saved model folder behind a scikit-learn-like API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from prodcat.config import Config
from prodcat.data.batches import Batch
from prodcat.data.cache import encode_file
from prodcat.data.dataset import labelled_split
from prodcat.errors import ProdcatError
from prodcat.evaluation.evaluate import evaluate_split
from prodcat.models.folder import load_model_folder
from prodcat.serving.runtimes import NamedTopK, local_model_folder
from prodcat.serving.title_encoder import TitleEncoder

# The most titles a call encodes with the pure-Python tokenizer (Arrow's costs ~2 ms a call
# whatever the count) and runs on one thread; more go through the data layer's Arrow path.
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

    def __init__(self, cfg: Config, model, featurizer, labels, folder: Path | None = None):
        self.cfg = cfg
        self.model = model
        self.featurizer = featurizer
        self.labels = labels
        self.folder = folder
        # Up to SMALL_BATCH titles skip Arrow's fixed cost (~2 ms a call) for the pure-Python
        # twin of its tokenizer, which gives the same ids (serving/title_encoder.py).
        self.title_encoder = TitleEncoder(featurizer) if TitleEncoder.supports(featurizer) else None

    @classmethod
    def load(cls, folder: str | Path) -> Classifier:
        """Load a model folder written by `prodcat train`, or one MLflow logged
        (`runs:/<run id>/model`, `models:/<name>/<version>`)."""
        folder = local_model_folder(folder)
        cfg, model, featurizer, labels = load_model_folder(folder)
        return cls(cfg, model, featurizer, labels, folder)

    @property
    def categories(self) -> list[str]:
        return list(self.labels.names)

    def batch(self, titles: list[str]) -> Batch:
        """Model input for raw titles: the fast path for a few, the featurizer for many."""
        if self.title_encoder is not None and len(titles) <= SMALL_BATCH:
            matrix, lengths = self.title_encoder.encode(titles)
            return Batch(torch.from_numpy(matrix), torch.from_numpy(lengths))
        return self.featurizer(titles)

    @staticmethod
    def _threads(n_titles: int):
        # A few titles gain nothing from several intra-op threads and, on a busy machine,
        # wait for them: one title took 6 ms with 2 threads on 2 busy cores, 0.1 ms with 1.
        return intra_op_threads(1 if n_titles <= SMALL_BATCH else torch.get_num_threads())

    def logits(self, titles: list[str], batch_size: int = 4096) -> torch.Tensor:
        """(N, C) logits of raw titles, `batch_size` titles per model call."""
        if batch_size < 1:
            raise ProdcatError(f"batch size must be at least 1, got {batch_size}")
        with torch.inference_mode(), self._threads(len(titles)):
            chunks = [
                self.model(self.batch(titles[i : i + batch_size]))
                for i in range(0, len(titles), batch_size)
            ]
        if not chunks:
            return torch.zeros(0, len(self.labels))
        return torch.cat(chunks) if len(chunks) > 1 else chunks[0]

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

    def evaluate(self, path: str | Path, batch_size: int = 4096) -> dict[str, float]:
        """balanced_accuracy, accuracy, macro_f1, loss and rows on a labelled file."""
        file = encode_file(path, self.cfg.data, self.featurizer)
        rows = np.arange(file.n_rows)
        split = labelled_split(
            "evaluation", file, rows, self.featurizer, self.labels, self.cfg.data
        )
        metrics, _ = evaluate_split(self.model, split, batch_size, torch.device("cpu"))
        return metrics

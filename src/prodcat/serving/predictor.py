"""`Classifier`: a saved model folder behind a scikit-learn-like API.

Every probability it returns is calibrated: the logits are divided by the temperature the
folder's `calibration.json` holds (1 without one). An ensemble folder loads as an
`EnsembleClassifier`, the same API over its members.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from prodcat.config import Config
from prodcat.data.batches import Batch
from prodcat.data.dataset import file_split
from prodcat.errors import ProdcatError
from prodcat.evaluation.calibration import Calibration
from prodcat.evaluation.evaluate import evaluate_split
from prodcat.models.ensemble import EnsembleBatch, EnsembleSpec, EnsembleSplit, is_ensemble_folder
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

    def __init__(
        self,
        cfg: Config,
        model,
        featurizer,
        labels,
        folder: Path | None = None,
        calibration: Calibration | None = None,
    ):
        self.cfg = cfg
        self.model = model
        self.featurizer = featurizer
        self.labels = labels
        self.folder = folder
        self.calibration = calibration or Calibration()
        # Up to SMALL_BATCH titles skip Arrow's fixed cost (~2 ms a call) for the pure-Python
        # twin of its tokenizer, which gives the same ids (serving/title_encoder.py).
        self.title_encoder = TitleEncoder(featurizer) if TitleEncoder.supports(featurizer) else None

    @classmethod
    def load(cls, folder: str | Path) -> Classifier:
        """Load a model folder written by `prodcat train`, or one MLflow logged
        (`runs:/<run id>/model`, `models:/<name>/<version>`); an ensemble folder gives an
        `EnsembleClassifier`."""
        folder = local_model_folder(folder)
        if is_ensemble_folder(folder):
            return EnsembleClassifier.load(folder)
        cfg, model, featurizer, labels = load_model_folder(folder)  # checks the manifest
        return cls(cfg, model, featurizer, labels, folder, Calibration.load(folder))

    @property
    def temperature(self) -> float:
        """What the model's logits are divided by (calibration.json; 1 without one)."""
        return self.calibration.temperature

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
        return file_split(path, self.cfg.data, self.featurizer, self.labels)

    def evaluate(self, path: str | Path, batch_size: int = 4096) -> dict[str, float]:
        """balanced_accuracy, accuracy, macro_f1, loss, calibration (ece, auto_label_share_95
        and _99 with their confidence thresholds) and rows, on a labelled file."""
        split = self.labelled_split(path)
        metrics, _ = evaluate_split(
            self.model, split, batch_size, torch.device("cpu"), temperature=self.temperature
        )
        return metrics


class EnsembleClassifier(Classifier):
    """An ensemble folder (`models/ensemble.py`): each member reads the titles through its
    own featurizer; the model averages their calibrated probabilities."""

    def __init__(
        self,
        cfg: Config,
        members: list[Classifier],
        spec: EnsembleSpec,
        labels,
        folder: Path | None = None,
        calibration: Calibration | None = None,
    ):
        from prodcat.models.ensemble import EnsembleModel

        model = EnsembleModel(
            [m.model for m in members], spec.weights, [m.temperature for m in members]
        ).eval()
        super().__init__(cfg, model, None, labels, folder, calibration)
        self.members = members
        self.spec = spec

    @classmethod
    def load(cls, folder: str | Path) -> EnsembleClassifier:
        """An ensemble folder written by `prodcat train` or `prodcat ensemble`."""
        from prodcat.config import load_config
        from prodcat.data.vocab import LabelMap
        from prodcat.models.manifest import verify_model_folder

        folder = local_model_folder(folder)
        verify_model_folder(folder)
        spec = EnsembleSpec.load(folder)
        members = [Classifier.load(folder / name) for name in spec.members]
        labels = LabelMap.load(folder / "labels.txt")
        for name, member in zip(spec.members, members):
            if list(member.labels.names) != list(labels.names):
                raise ProdcatError(f"{folder / name}: its categories differ from the ensemble's")
        cfg = load_config(folder / "config.yaml")
        return cls(cfg, members, spec, labels, folder, Calibration.load(folder))

    def batch(self, titles: list[str]) -> EnsembleBatch:  # type: ignore[override]
        """One batch of the titles per member, each encoded by the member's featurizer."""
        return EnsembleBatch([member.batch(titles) for member in self.members])

    def labelled_split(self, path: str | Path) -> EnsembleSplit:
        """Every row of a labelled file, as each member reads it."""
        return EnsembleSplit([member.labelled_split(path) for member in self.members])

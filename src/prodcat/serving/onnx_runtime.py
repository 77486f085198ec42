"""`OnnxClassifier`: an exported model (`prodcat export`) under ONNX Runtime, without torch.

It offers what `Classifier` offers to `predict` and `serve` (`top_k`, `predict`,
`predict_proba`, `predict_top_k`, `labels`, `cfg`, `folder`), from the model folder's config,
featurizer and labels and its `model.onnx`. Titles are encoded as `Classifier` encodes them,
by the folder's featurizer (an ensemble's: each distinct member featurizer once), into numpy
arrays; the config is read without its family's schema (the graph is the network), so nothing
here imports torch (tests/test_install.py checks it for every family).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prodcat.config import Config, load_config
from prodcat.data.featurizers import SPEC_FILE, TokenFeaturizer, load_featurizer
from prodcat.data.vocab import LabelMap
from prodcat.errors import ConfigError, ProdcatError
from prodcat.evaluation.calibration import Calibration
from prodcat.serving.topk import NamedTopK, softmax, softmax_top_k

ONNX_FILE = "model.onnx"  # where `prodcat export` writes by default
# The graph's metadata entry that says which featurizer feeds which inputs: a JSON list of
# {"folder", "input_ids", "lengths"}, the folder relative to the model folder (an ensemble's
# members' folders); graphs exported before it take `input_ids`, `lengths` of the folder's.
FEEDS_KEY = "prodcat.inputs"


DEFAULT_FEED = {"folder": ".", "input_ids": "input_ids", "lengths": "lengths"}


# Titles per session run. ONNX Runtime keeps the largest intermediates it ever allocated in
# its arena: an n-gram model's (titles x tokens x n-grams x dim) lookups of 4,096 titles
# held best-cpu's ensemble graph at 24 GB. 512 titles a run are also faster: 10,016 against
# 6,679 titles/s for compact, 3,515 against 1,163 for fast (2 threads, 10,188 real titles).
BATCH = 512


class OnnxClassifier(NamedTopK):
    """Predict categories with an exported model under ONNX Runtime; no torch imported.

    >>> clf = OnnxClassifier.load("runs/mlp")          # runs/mlp/model.onnx
    >>> clf.predict(["Placa De Sonido - Behringer Umc22"])
    ['SOUND_CARDS']
    """

    runtime = "onnx"

    def __init__(
        self,
        cfg: Config,
        session,
        feeds: list[tuple[TokenFeaturizer, str, str | None]],
        labels: LabelMap,
        folder: Path | None,
        calibration: Calibration | None = None,
    ):
        self.cfg = cfg
        # The graph returns the network's logits; probabilities are calibrated here, as
        # `Classifier` calibrates them.
        self.temperature = (calibration or Calibration()).temperature
        self.session = session
        self.feeds = feeds  # (featurizer, ids input, lengths input) of each encoding
        self.labels = labels
        self.folder = folder

    @classmethod
    def load(
        cls, folder: str | Path, onnx_path: str | Path | None = None, threads: int | None = None
    ) -> OnnxClassifier:
        """A model folder and its exported graph (`onnx_path`, default `FOLDER/model.onnx`);
        `threads`: ONNX Runtime's intra-op threads (default: its own choice)."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise ProdcatError(
                "the onnx runtime needs onnxruntime: pip install 'prodcat[onnx]'"
            ) from None
        folder = Path(folder)
        for name in ("config.yaml", "labels.txt"):
            if not (folder / name).is_file():
                raise ProdcatError(f"{folder}: not a model folder (no {name})")
        path = Path(onnx_path) if onnx_path is not None else folder / ONNX_FILE
        if not path.is_file():
            raise ConfigError(
                f"{path}: no such ONNX file; write it with `prodcat export {folder} --format onnx`"
            )
        cfg = load_config(folder / "config.yaml", check_family=False)
        labels = LabelMap.load(folder / "labels.txt")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own unexported error types
            raise ProdcatError(f"{path}: not a readable ONNX model ({e})") from None
        meta = session.get_modelmeta().custom_metadata_map
        feeds = []
        for feed in json.loads(meta.get(FEEDS_KEY, json.dumps([DEFAULT_FEED]))):
            where = folder / feed["folder"]
            if not (where / SPEC_FILE).is_file():
                raise ProdcatError(f"{where}: not a model folder (no {SPEC_FILE})")
            data = (
                cfg.data
                if where == folder
                else load_config(where / "config.yaml", check_family=False).data
            )
            feeds.append((load_featurizer(where, data), feed["input_ids"], feed["lengths"]))
        # A graph that never reads an input (the linear family's lengths) was exported without.
        inputs = {node.name for node in session.get_inputs()}
        feeds = [(f, ids, n if n in inputs else None) for f, ids, n in feeds]
        outputs = session.get_outputs()[0].shape
        if isinstance(outputs[-1], int) and outputs[-1] != len(labels):
            raise ConfigError(
                f"{path}: gives {outputs[-1]} classes, but {folder} has {len(labels)} "
                "categories: export this folder's model"
            )
        return cls(cfg, session, feeds, labels, folder, Calibration.load(folder))

    @property
    def categories(self) -> list[str]:
        return list(self.labels.names)

    def logits(self, titles: list[str], batch_size: int = BATCH) -> np.ndarray:
        """(N, C) float32 calibrated logits of raw titles (divided by the folder's
        temperature), `batch_size` titles per run."""
        if batch_size < 1:
            raise ProdcatError(f"batch size must be at least 1, got {batch_size}")
        chunks = []
        for start in range(0, len(titles), batch_size):
            chunk, feed = titles[start : start + batch_size], {}
            for featurizer, ids_name, lengths_name in self.feeds:
                feed[ids_name], lengths = featurizer.encode(chunk)
                if lengths_name is not None:
                    feed[lengths_name] = lengths
            chunks.append(self.session.run(None, feed)[0])
        if not chunks:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        logits = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        return logits / np.float32(self.temperature) if self.temperature != 1.0 else logits

    def top_k(
        self, titles: list[str], k: int, batch_size: int = BATCH
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, k) class ids of the `k` most likely categories, best first, and their
        probabilities."""
        if k < 1:
            raise ProdcatError(f"top-k must be at least 1, got {k}")
        return softmax_top_k(self.logits(titles, batch_size), k)

    def predict(self, titles: str | list[str], batch_size: int = BATCH) -> list[str]:
        """The most likely category of each title."""
        titles = [titles] if isinstance(titles, str) else list(titles)
        ids = self.logits(titles, batch_size).argmax(1).tolist()
        return [self.labels.names[i] for i in ids]

    def predict_proba(self, titles: str | list[str], batch_size: int = BATCH) -> np.ndarray:
        """Probabilities over `categories`, (N, C)."""
        titles = [titles] if isinstance(titles, str) else list(titles)
        return softmax(self.logits(titles, batch_size))

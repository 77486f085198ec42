"""A model folder holds everything needed to rebuild a model and predict, nothing else.

`config.yaml`, the featurizer (`featurizer.json`, `vocab.txt`), `labels.txt` and the
weights in `model.safetensors`; training adds `metrics.json`, the per-category report and plots.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from prodcat.config import Config, load_config
from prodcat.data.featurizer import VocabularyFeaturizer
from prodcat.data.vocab import LabelMap
from prodcat.errors import ProdcatError
from prodcat.models.base import TextClassifier
from prodcat.registry import get_family

FEATURIZERS = {VocabularyFeaturizer.kind: VocabularyFeaturizer}
WEIGHTS = "model.safetensors"


def build_model(cfg: Config, n_classes: int, vocab_size: int) -> TextClassifier:
    """Build the configured family's model."""
    if cfg.model.pretrained_embeddings is not None:
        raise ProdcatError("pretrained word vectors are not yet supported (a later release)")
    return get_family(cfg.model.family)(cfg.model, n_classes, vocab_size)


def save_model_folder(
    folder: str | Path,
    cfg: Config,
    model: TextClassifier,
    featurizer: VocabularyFeaturizer,
    labels: LabelMap,
) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    featurizer.save(folder)
    labels.save(folder / "labels.txt")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))


def load_model_folder(
    folder: str | Path,
) -> tuple[Config, TextClassifier, VocabularyFeaturizer, LabelMap]:
    """Rebuild a saved model on the CPU, in eval mode."""
    folder = Path(folder)
    for name in ("config.yaml", "featurizer.json", "labels.txt", WEIGHTS):
        if not (folder / name).is_file():
            raise ProdcatError(f"{folder}: not a model folder (no {name})")
    cfg = load_config(folder / "config.yaml")
    spec = json.loads((folder / "featurizer.json").read_text(encoding="utf-8"))
    featurizer = FEATURIZERS[spec["kind"]].load(folder)
    labels = LabelMap.load(folder / "labels.txt")
    model = get_family(cfg.model.family)(cfg.model, len(labels), len(featurizer.vocabulary))
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    model.eval()
    return cfg, model, featurizer, labels

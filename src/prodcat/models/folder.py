"""A model folder holds everything needed to rebuild a model and predict, nothing else.

`config.yaml` (every setting, the featurizer's too), what the featurizer fitted
(`featurizer.json`, `vocab.txt`), `labels.txt` and the weights in `model.safetensors`;
training adds `metrics.json`, test predictions, the per-category report and plots.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from prodcat.config import Config, load_config
from prodcat.data.featurizer import SPEC_FILE, Featurizer, load_featurizer
from prodcat.data.vocab import LabelMap
from prodcat.errors import ProdcatError
from prodcat.models.base import TextClassifier
from prodcat.registry import get_family

WEIGHTS = "model.safetensors"


def build_model(
    cfg: Config, n_classes: int, featurizer: Featurizer, initialise: bool = True
) -> TextClassifier:
    """Build the configured family's model over a fitted featurizer.

    `initialise`: load what a new model starts from (pretrained vectors); a model about to
    receive saved weights skips it.
    """
    model = get_family(cfg.model.family)(cfg.model, n_classes, featurizer)
    model.init_report = model.initialise(featurizer) if initialise else {}
    return model


def save_model_folder(
    folder: str | Path,
    cfg: Config,
    model: TextClassifier,
    featurizer: Featurizer,
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
) -> tuple[Config, TextClassifier, Featurizer, LabelMap]:
    """Rebuild a saved model on the CPU, in eval mode."""
    folder = Path(folder)
    for name in ("config.yaml", SPEC_FILE, "labels.txt", WEIGHTS):
        if not (folder / name).is_file():
            raise ProdcatError(f"{folder}: not a model folder (no {name})")
    cfg = load_config(folder / "config.yaml")
    featurizer = load_featurizer(folder, cfg)
    labels = LabelMap.load(folder / "labels.txt")
    model = build_model(cfg, len(labels), featurizer, initialise=False)
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    model.eval()
    return cfg, model, featurizer, labels

"""A model folder holds everything needed to rebuild a model and predict, nothing else.

`config.yaml` (every setting, the featurizer's too), what the featurizer fitted
(`featurizer.json`, `vocab.txt`), `labels.txt`, the weights in `model.safetensors` and the
temperature its logits are divided by (`calibration.json`, when calibrated);
training adds `metrics.json`, test predictions, the per-category report and plots.
`manifest.json` holds the checksums of the files that rebuild the model, checked on load.

The folder is written atomically: files are made in a hidden `.partial-*` folder inside it and
renamed into place, `metrics.json` (what marks a finished run) last; a kill leaves the old
files or the new ones, never a half-written file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from prodcat.atomic import publish_folder
from prodcat.config import Config, load_config
from prodcat.data.featurizer import SPEC_FILE, Featurizer, load_featurizer
from prodcat.data.vocab import LabelMap
from prodcat.errors import ProdcatError
from prodcat.evaluation.calibration import Calibration
from prodcat.models.base import TextClassifier
from prodcat.models.manifest import verify_model_folder, write_manifest
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
    calibration: Calibration | None = None,
) -> None:
    """Write the files that rebuild the model into `folder`, atomically, with a manifest."""
    with staging_folder(folder) as staging:
        write_model_files(staging, cfg, model, featurizer, labels, calibration)


def write_model_files(
    folder: Path,
    cfg: Config,
    model: TextClassifier,
    featurizer: Featurizer,
    labels: LabelMap,
    calibration: Calibration | None = None,
) -> None:
    """The model's files and their manifest, written in place (into a staging folder);
    `calibration.json` too when the model was calibrated."""
    (folder / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    featurizer.save(folder)
    labels.save(folder / "labels.txt")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        save_file(state, str(folder / WEIGHTS))
    except SafetensorError as e:  # how safetensors reports a full disk
        raise OSError(f"cannot write {folder / WEIGHTS}: {e}") from None
    if calibration is not None:
        calibration.save(folder)
    write_manifest(folder)


@contextmanager
def staging_folder(folder: str | Path, last: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a hidden folder inside `folder`; what the block writes there is moved into
    `folder` when it ends (the names in `last` after all others), or dropped on an error."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".partial-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    staging = folder / f".partial-{os.getpid()}"
    staging.mkdir()
    try:
        yield staging
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, OSError) and e.errno and not e.filename:  # a full disk: say where
            raise OSError(e.errno, e.strerror, str(folder)) from None
        raise
    publish_folder(staging, folder, last=last)


def load_model_folder(
    folder: str | Path,
) -> tuple[Config, TextClassifier, Featurizer, LabelMap]:
    """Rebuild a saved model on the CPU, in eval mode."""
    folder = Path(folder)
    for name in ("config.yaml", SPEC_FILE, "labels.txt", WEIGHTS):
        if not (folder / name).is_file():
            raise ProdcatError(f"{folder}: not a model folder (no {name})")
    verify_model_folder(folder)
    cfg = load_config(folder / "config.yaml")
    featurizer = load_featurizer(folder, cfg)
    labels = LabelMap.load(folder / "labels.txt")
    model = build_model(cfg, len(labels), featurizer, initialise=False)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except (SafetensorError, RuntimeError, OSError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ProdcatError(f"{folder / WEIGHTS}: cannot load the weights ({reason})") from None
    model.eval()
    return cfg, model, featurizer, labels

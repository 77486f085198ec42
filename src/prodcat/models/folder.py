"""A model folder holds everything needed to rebuild a model and predict, nothing else.

`config.yaml` (every setting, the featurizer's too), `labels.txt`, what the model saves of
itself (`model.safetensors` and what its featurizer fitted, `featurizer.json`, `vocab.txt`;
an ensemble's `ensemble.json` and its members' folders) and the temperature its logits are
divided by (`calibration.json`, when calibrated); training adds `metrics.json`, predictions,
the per-category report and plots. `manifest.json` holds the checksums of the files that
rebuild the model, checked on load.

The folder is written atomically: files are made in a hidden `.partial-*` folder inside it and
renamed into place, `metrics.json` (what marks a finished run) last; a kill leaves the old
files or the new ones, never a half-written file. Any family's folder is read by
`load_model_folder`: its family's model class reads its own files (`load_folder`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from prodcat import registry
from prodcat.atomic import publish_folder
from prodcat.config import Config, load_config
from prodcat.data.featurizers import Featurizer
from prodcat.data.vocab import LabelMap
from prodcat.errors import ProdcatError
from prodcat.evaluation.calibration import Calibration
from prodcat.models.manifest import verify_model_folder, write_manifest


class ModelFolder(NamedTuple):
    """A loaded model folder: the model on the CPU in eval mode, how it reads titles
    (`reader(titles)`, `reader.split(path, labels)`), its categories and its calibration."""

    cfg: Config
    model: Any  # a TextClassifier, or an ensemble's model of models
    reader: Any  # prodcat.models.base.TitleReader, or an ensemble's MemberReader
    labels: LabelMap
    calibration: Calibration


def build_model(cfg: Config, n_classes: int, featurizer: Featurizer, initialise: bool = True):
    """A new model of the configured family over a fitted featurizer (`initialise`: load what
    a new model starts from, pretrained vectors; a model about to get saved weights skips it)."""
    return registry.family(cfg.model.family).model.build(cfg, n_classes, featurizer, initialise)


def write_model_files(
    folder: Path,
    cfg: Config,
    model,
    featurizer: Featurizer | None,
    labels: LabelMap,
    calibration: Calibration | None = None,
    in_place: Mapping[str, Path] | None = None,
) -> None:
    """The model's files and their manifest, written into a staging folder; `calibration.json`
    when the model was calibrated. `in_place`: files the folder holds already (an ensemble's
    members, trained in place), by their names in it, for the manifest."""
    (folder / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    labels.save(folder / "labels.txt")
    if featurizer is not None:
        featurizer.save(folder)
    model.save_weights(folder, float16=cfg.training.weights_float16)
    if calibration is not None:
        calibration.save(folder)
    write_manifest(folder, in_place)


def save_model_folder(
    folder: str | Path,
    cfg: Config,
    model,
    featurizer: Featurizer | None,
    labels: LabelMap,
    calibration: Calibration | None = None,
) -> None:
    """Write the files that rebuild the model into `folder`, atomically, with a manifest."""
    with staging_folder(folder) as staging:
        write_model_files(staging, cfg, model, featurizer, labels, calibration)


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


def load_model_folder(folder: str | Path) -> ModelFolder:
    """Rebuild the model a folder holds (any family, an ensemble too) on the CPU, in eval
    mode; a folder that is incomplete or changed since it was written is refused by name."""
    folder = Path(folder)
    for name in ("config.yaml", "labels.txt"):
        if not (folder / name).is_file():
            raise ProdcatError(f"{folder}: not a model folder (no {name})")
    verify_model_folder(folder)
    cfg = load_config(folder / "config.yaml")
    labels = LabelMap.load(folder / "labels.txt")
    model, reader = registry.family(cfg.model.family).model.load_folder(folder, cfg, labels)
    return ModelFolder(cfg, model.eval(), reader, labels, Calibration.load(folder))

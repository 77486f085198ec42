"""Distillation: a model trained on a teacher's probabilities as well as on the labels
(`training.teacher`).

The teacher is a model folder, or a config YAML that `run()` trains first, on the student's
data section (both then see the same training, validation and test rows), into
`OUTPUT-teacher`; a finished teacher of the same config there is reused. Its calibrated
probabilities on the student's training rows, at `training.distill_temperature` and cut to its
`teacher_top_k` most likely categories, are computed once and cached in the data cache, keyed
by the teacher's files, the rows and those settings. The student's training split carries them
(`Split.teacher`), and the loss adds the divergence from them (`weighted_loss`). With
`training.distill_copies`, the teacher also answers on perturbed copies of each training title
(`transfer_file`, `perturb`), which join the student's training split.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from prodcat.atomic import atomic_path
from prodcat.config import Config, build_config, load_config
from prodcat.data.cache import default_cache_root
from prodcat.data.dataset import Split, Splits, file_split
from prodcat.data.readers import TableReader, bundled_sample
from prodcat.errors import ConfigError, ProdcatError
from prodcat.evaluation.evaluate import predict_split
from prodcat.models.folder import load_model_folder
from prodcat.models.manifest import MANIFEST
from prodcat.training.device import resolve_device
from prodcat.training.result import METRICS_FILE

log = logging.getLogger(__name__)


def teacher_output(output: Path) -> Path:
    """Where a teacher named by its config trains: beside the student's folder, so that the
    student's folder holds only what serving it needs."""
    return output.with_name(f"{output.name}-teacher")


def teacher_config(cfg: Config) -> Config:
    """The config a teacher YAML trains with: its model and training sections, the student's
    data (the same rows in each split) and tracking."""
    path = cfg.training.teacher
    teacher = build_config(path)
    if teacher.training.teacher is not None:
        raise ConfigError(f"{path}: a teacher distils no teacher of its own (training.teacher)")
    tree = teacher.model_dump(mode="json")
    tree["data"] = cfg.data.model_dump(mode="json")
    tree["tracking"] = cfg.tracking.model_dump(mode="json")
    return Config.model_validate(tree)


def prepare_teacher(cfg: Config, output: Path, train: Callable[[Config, Path], object]) -> Path:
    """The teacher's model folder: `training.teacher` itself, or where `train(config, folder)`
    trained the config it names (kept from an earlier run of the same config)."""
    path = Path(cfg.training.teacher)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise ConfigError(f"{path}: training.teacher is not a model folder (no config.yaml)")
        return path
    if not path.is_file():
        raise ConfigError(f"{path}: training.teacher is neither a model folder nor a config file")
    teacher = teacher_config(cfg)
    folder = teacher_output(output)
    if (folder / METRICS_FILE).is_file() and _same_config(folder, teacher):
        log.info("teacher: %s, trained already with this config", folder)
        return folder
    log.info("teacher: training %s into %s", path, folder)
    train(teacher, folder)
    return folder


def _same_config(folder: Path, cfg: Config) -> bool:
    try:
        return load_config(folder / "config.yaml").model_dump() == cfg.model_dump()
    except (ProdcatError, OSError, ValueError):
        return False


def with_teacher(cfg: Config, splits: Splits, folder: Path) -> Splits:
    """`splits` with the teacher's top categories and probabilities on the training rows
    (and, with `training.distill_copies`, on their perturbed copies, which join them)."""
    train, source = splits.train, Path(cfg.data.train or bundled_sample())
    if cfg.training.distill_copies:
        source = transfer_file(cfg, splits.train, source)
        data = cfg.data.model_copy(update={"format": "jsonl"})
        train = file_split(source, data, splits.featurizer, splits.labels, "train")
        log.info("teacher: %s training rows with their copies", f"{len(train):,}")
    ids, probs = teacher_targets(cfg, splits.labels.names, train, source, folder)
    return replace(splits, train=replace(train, teacher=(ids, probs)))


def teacher_targets(
    cfg: Config, names: list[str], train: Split, source: Path, folder: Path
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, k) class ids (of `names`, the student's) and probabilities summing to 1 of the
    teacher's most likely categories for each row of `train`, read from `source`; cached."""
    t = cfg.training
    key = _targets_key(cfg, names, train, folder)
    cache = _cache(cfg) / f"{key}.npz"
    if cache.is_file():
        with np.load(cache) as saved:
            log.info("teacher: probabilities of %s rows from %s", f"{len(train):,}", cache)
            return saved["ids"].astype(np.int64), saved["probs"].astype(np.float32)
    teacher = load_model_folder(folder)
    known = set(teacher.labels.names)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(
            f"{folder}: the teacher knows no category {unknown[0]!r} of the training rows "
            f"({len(unknown)} in all): train it on the same data"
        )
    student = {name: i for i, name in enumerate(names)}
    to_student = np.array([student.get(name, -1) for name in teacher.labels.names])
    rows = teacher.reader.split(source, teacher.labels, "teacher")
    if len(rows) != train.file.n_rows:
        raise ConfigError(
            f"{folder}: the teacher reads {len(rows):,} rows of {source}, this run "
            f"{train.file.n_rows:,}: give it the same data settings (data.max_rows, filters)"
        )
    rows = rows.subset(train.rows)  # the cache's rows are the file's: the same positions
    if t.threads:
        torch.set_num_threads(t.threads)
    temperature = teacher.calibration.temperature * t.distill_temperature
    log.info("teacher: scoring %s training rows with %s", f"{len(rows):,}", folder)
    predicted = predict_split(
        teacher.model,
        rows,
        t.eval_batch_size,
        resolve_device(t.device),
        top_k=t.teacher_top_k,
        temperature=temperature,
    )
    ids = to_student[predicted.top_ids]
    probs = np.where(ids >= 0, predicted.top_probs, 0.0)
    probs /= np.maximum(probs.sum(1, keepdims=True), 1e-12)
    ids = np.maximum(ids, 0)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as partial, open(partial, "wb") as f:
        np.savez(f, ids=ids.astype(np.int32), probs=probs.astype(np.float32))
    return ids.astype(np.int64), probs.astype(np.float32)


def _targets_key(cfg: Config, names: list[str], train: Split, folder: Path) -> str:
    """What the teacher's probabilities depend on: its files (the manifest lists them with
    their digests), the training rows of the file and the distillation settings."""
    digest = hashlib.sha256()
    manifest = folder / MANIFEST
    if manifest.is_file():
        digest.update(manifest.read_bytes())
    else:  # a folder assembled by hand: its files' sizes and times
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)} {stat.st_size} {stat.st_mtime_ns}".encode())
    _add_rows(digest, train)
    t = cfg.training
    settings = [t.distill_temperature, t.teacher_top_k, list(names)]
    digest.update(json.dumps(settings).encode())
    return digest.hexdigest()[:24]


def _add_rows(digest, split: Split) -> None:
    """Which rows of which cached file `split` holds, into a running hash."""
    digest.update(json.dumps(split.file.meta, sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(split.rows).tobytes())


def _cache(cfg: Config) -> Path:
    return Path(cfg.data.cache_dir or default_cache_root()) / "teachers"


def transfer_file(cfg: Config, train: Split, source: Path) -> Path:
    """The titles the teacher labels for the student: each row of `train` as read from
    `source`, then `training.distill_copies` perturbed copies of it (`perturb`), each with the
    row's category, quality and language, as JSON lines in the cache, written once for the
    same rows, copies and seed. The rows are read again from `source`, a block at a time; a
    copy's other words come from the titles of its block."""
    copies, seed = cfg.training.distill_copies, cfg.data.seed
    digest = hashlib.sha256()
    _add_rows(digest, train)
    digest.update(json.dumps([PERTURB_VERSION, copies, seed]).encode())
    path = _cache(cfg) / f"{digest.hexdigest()[:24]}.transfer.jsonl.gz"
    if path.is_file():
        return path
    reader = TableReader(source, cfg.data.columns, cfg.data.format)
    lines = np.sort(np.asarray(train.file.lines)[train.rows])
    columns = {f: getattr(cfg.data.columns, f) for f in ("text", "label", "quality", "language")}
    rng = random.Random(f"prodcat transfer {seed}")
    log.info("teacher: writing %s copies of each training title to %s", copies, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial, gzip.open(partial, "wt", encoding="utf-8") as out:
        for batch in reader.batches():
            keep = np.flatnonzero(np.isin(batch.lines, lines))
            if not len(keep):
                continue
            fields = {
                f: column.take(keep).to_pylist()
                for f in columns
                if (column := batch.column(f)) is not None
            }
            titles = [str(title).split() for title in fields["text"]]
            words = [word for title in titles for word in title]
            for i, title in enumerate(titles):
                row = {columns[f]: values[i] for f, values in fields.items()}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                for _ in range(copies if title else 0):
                    other = titles[rng.randrange(len(titles))]
                    row[columns["text"]] = " ".join(perturb(title, other, words, rng))
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


PERTURB_VERSION = 1  # a change to `perturb` writes the transfer files anew


def perturb(title: list[str], other: list[str], words: list[str], rng: random.Random) -> list[str]:
    """A copy of a title's words to ask a teacher about (Tang et al., 2019, "Distilling
    task-specific knowledge from BERT into simple neural networks", augment their transfer
    set alike): a span of it (30 % of copies), each word dropped (20 %) or swapped for one of
    `words` (10 %), and the first half of that joined to the second half of `other` (15 %).
    Never empty."""
    if len(title) > 2 and rng.random() < 0.3:
        n = rng.randint(2, len(title) - 1)
        start = rng.randint(0, len(title) - n)
        title = title[start : start + n]
    copy = []
    for word in title:
        draw = rng.random()
        if draw < 0.2:
            continue
        copy.append(rng.choice(words) if draw < 0.3 else word)
    copy = copy or title[:1]
    if other and rng.random() < 0.15:
        copy = copy[: max(1, len(copy) // 2)] + other[len(other) // 2 :]
    return copy

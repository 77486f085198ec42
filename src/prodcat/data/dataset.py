"""From cached files to training-ready splits: filters, samples, stratified splits, vocabulary."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from prodcat.config import DataConfig
from prodcat.data.batches import Batch, batch_order, bucket_by_length, iterate_batches
from prodcat.data.cache import EncodedFile, encode_file, token_blocks
from prodcat.data.featurizers import Featurizer, TokenFeaturizer, VocabularyFeaturizer
from prodcat.data.vocab import LabelMap, Vocabulary
from prodcat.errors import DataError
from prodcat.fault_points import pause_point


@dataclass
class Split:
    """Rows of one cached file that form a split, with model-space labels and weights."""

    name: str
    file: EncodedFile
    rows: np.ndarray  # row indices into the cache, ascending
    labels: np.ndarray | None  # (len(rows),) int64 class ids
    weights: np.ndarray  # (len(rows),) float32 row weights
    # What the model reads of each cached row: token ids through `remap` (cache piece id ->
    # model id: a token featurizer's `ids` of the cache's pieces), or `features`, one vector
    # per cached row (a vector featurizer's).
    remap: np.ndarray | None
    features: np.ndarray | None = None
    # A teacher's top classes of each row and their probabilities, (len(rows), k) each
    # (distillation: prodcat.workflow.distill).
    teacher: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, rows: int | None, seed: int) -> Split:
        """A fixed sample of `rows` of this split's rows (the same for the same seed), in
        file order, or the split itself when it has no more."""
        if rows is None or rows >= len(self):
            return self
        return self.subset(np.random.default_rng([seed, 2]).choice(len(self), rows, replace=False))

    def subset(self, positions: np.ndarray) -> Split:
        """The split's rows at `positions` (of its own rows), in file order."""
        pick = np.sort(positions)
        # `rows`, `labels`, `weights` and `teacher` are per row of the split; the rest per row
        # of the cache.
        return replace(
            self,
            rows=self.rows[pick],
            labels=None if self.labels is None else self.labels[pick],
            weights=self.weights[pick],
            teacher=None if self.teacher is None else tuple(a[pick] for a in self.teacher),
        )

    def num_batches(self, batch_size: int, world: int = 1) -> int:
        rows = len(self) // world if world > 1 else len(self)
        return -(-rows // batch_size)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        buffer: int | None = None,
        start: int = 0,
        shard: tuple[int, int] = (0, 1),
        bucket: bool = False,
    ) -> Iterator[Batch]:
        """Padded batches; shuffled reproducibly from (seed, epoch) when asked.

        `shard` = (rank, world size): this process takes every world-th row of the epoch's
        order, the same number on every rank (the last few rows of an uneven split are left
        for the next epoch's order), so ranks step together, and batch k of all ranks
        together holds the rows of batch k of one process with `batch_size * world`.
        `bucket` makes batches of titles of similar length (`bucket_by_length`).
        """
        if not shuffle:
            pause_point("evaluate")  # a test stops the run as it scores a split
        order = batch_order(len(self), shuffle=shuffle, seed=seed, epoch=epoch, buffer=buffer)
        rank, world = shard
        if bucket:
            lengths = np.asarray(self.file.lengths)[self.rows[order]]
            order = bucket_by_length(order, lengths, batch_size * world, seed=seed, epoch=epoch)
        if world > 1:
            order = order[: len(order) // world * world][rank::world]
        return iterate_batches(
            # plain views: indexing is faster than through np.memmap's subclass
            np.asarray(self.file.tokens),
            np.asarray(self.file.lengths),
            self.rows,
            remap=self.remap,
            labels=self.labels,
            weights=self.weights,
            features=self.features,
            teacher=self.teacher,
            batch_size=batch_size,
            order=order,
            start=start,
        )


@dataclass
class DataSummary:
    """What was read, kept and dropped, for the CLI and the tracker."""

    files: dict[str, str] = field(default_factory=dict)  # split -> file
    rows_read: dict[str, int] = field(default_factory=dict)  # file -> rows read
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    empty_title_lines: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # split -> rows
    languages: dict[str, int] = field(default_factory=dict)  # training rows per language
    categories: int = 0
    unsplit_categories: int = 0
    vocabulary: int = 0
    truncated_titles: int = 0

    def drop(self, reason: str, n: int) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def lines(self) -> list[str]:
        out = [f"read {n:,} rows from {f}" for f, n in self.rows_read.items()]
        out.append("splits: " + ", ".join(f"{k} {v:,}" for k, v in self.sizes.items()))
        if self.languages:
            out.append(
                "languages (train): " + ", ".join(f"{k} {v:,}" for k, v in self.languages.items())
            )
        out.append(f"categories: {self.categories:,}; vocabulary: {self.vocabulary:,} tokens")
        for reason, n in self.dropped.items():
            out.append(f"dropped {n:,} rows: {reason}")
        if self.empty_title_lines:
            out.append("  empty titles at " + ", ".join(self.empty_title_lines) + " ...")
        if self.unsplit_categories:
            out.append(
                f"{self.unsplit_categories:,} categories too small to give held-out rows "
                "stay in train only"
            )
        if self.truncated_titles:
            out.append(f"{self.truncated_titles:,} titles cut to max_tokens")
        return out


@dataclass
class Splits:
    """Train, validation and (optionally) test splits sharing one vocabulary and label map."""

    train: Split
    validation: Split
    test: Split | None
    featurizer: Featurizer  # fitted on the training rows
    labels: LabelMap
    summary: DataSummary

    @property
    def vocabulary(self) -> Vocabulary:
        return self.featurizer.vocabulary

    def class_weights(self) -> np.ndarray:
        """Inverse-frequency weights (`balanced`, as scikit-learn), mean 1 over training rows."""
        counts = np.bincount(self.train.labels, minlength=len(self.labels)).astype(np.float64)
        weights = np.where(
            counts > 0, len(self.train) / (len(self.labels) * np.maximum(counts, 1)), 0
        )
        return weights.astype(np.float32)


def as_size(size: float | int, total: int) -> int:
    """A fraction (< 1) of `total` or a row count."""
    return int(round(size * total)) if size < 1 else min(int(size), total)


def stratified_split(
    labels: np.ndarray, sizes: list[int], seed: int
) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Split positions `0..len(labels)` into held-out parts of exactly `sizes` rows and a rest.

    Every category keeps one row in the rest; its held-out rows are apportioned to each part
    by largest remainders. Returns (parts, rest, categories with no held-out row).
    """
    n = len(labels)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n)
    keys = labels[shuffled]
    if n and keys.max(initial=0) < np.iinfo(np.uint16).max:
        keys = keys.astype(np.uint16)  # a stable sort of 16-bit keys is a radix sort
    order = shuffled[np.argsort(keys, kind="stable")]
    counts = np.bincount(labels, minlength=1) if n else np.zeros(0, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    room = np.maximum(counts - 1, 0)  # rows each category can give away
    quotas = []
    for size in sizes:
        exact = counts * (size / max(n, 1))
        quota = np.minimum(np.floor(exact).astype(np.int64), room)
        short = size - quota.sum()
        if short > 0:
            remainder = np.where(quota < room, exact - quota, -1.0) + rng.random(len(counts)) * 1e-9
            extra = np.argsort(-remainder, kind="stable")[:short]
            quota[extra[remainder[extra] >= 0]] += 1
        room = room - quota
        quotas.append(quota)

    def take(low: np.ndarray, high: np.ndarray) -> np.ndarray:
        pieces = [
            order[starts[c] + low[c] : starts[c] + high[c]] for c in np.flatnonzero(high > low)
        ]
        return np.sort(np.concatenate(pieces)) if pieces else np.zeros(0, dtype=np.int64)

    parts, low = [], np.zeros_like(counts)
    for quota in quotas:
        parts.append(take(low, low + quota))
        low = low + quota
    rest = take(low, counts)
    unsplit = int(((low == 0) & (counts > 0)).sum()) if sum(sizes) else 0
    return parts, rest, unsplit


def _sample(rows: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    if max_rows is None or len(rows) <= max_rows:
        return rows
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=max_rows, replace=False))


def filter_rows(file: EncodedFile, cfg: DataConfig, summary: DataSummary) -> np.ndarray:
    """Rows of `file` that pass the language and label-quality filters."""
    keep = np.ones(file.n_rows, dtype=bool)
    fields = file.meta["fields"]
    if cfg.language is not None:
        if fields.get("language") is not None:
            names = [n.lower() for n in file.meta["languages"]]
            code = names.index(cfg.language.lower()) if cfg.language.lower() in names else -2
            keep &= file.languages == code
        elif cfg.file_language is None:
            raise DataError(
                f"cannot filter by language: missing column '{cfg.columns.language}' "
                "(set data.file_language to the language of this file's rows)",
                file.source,
            )
        elif cfg.file_language.lower() != cfg.language.lower():
            keep[:] = False
        summary.drop(f"language is not {cfg.language}", int((~keep).sum()))
    if cfg.label_quality is not None:
        if fields.get("quality") is None:
            raise DataError(
                f"cannot filter by label quality: missing column '{cfg.columns.quality}'",
                file.source,
            )
        names = [n.lower() for n in file.meta["qualities"]]
        wanted = cfg.label_quality.lower()
        code = names.index(wanted) if wanted in names else -2
        before = int(keep.sum())
        keep &= file.qualities == code
        summary.drop(f"label quality is not {cfg.label_quality}", before - int(keep.sum()))
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise DataError("no rows left after the language and label-quality filters", file.source)
    return rows


def _row_weights(file: EncodedFile, rows: np.ndarray, cfg: DataConfig) -> np.ndarray:
    weights = np.ones(len(rows), dtype=np.float32)
    names = [n.lower() for n in file.meta["qualities"]]
    if "unreliable" in names and cfg.unreliable_weight != 1.0:
        weights[file.qualities[rows] == names.index("unreliable")] = cfg.unreliable_weight
    return weights


def _model_labels(file: EncodedFile, rows: np.ndarray, labels: LabelMap, name: str) -> np.ndarray:
    """Class ids of `rows`; a category the model does not know is an error naming its line."""
    to_model = np.array([labels.index.get(n, -1) for n in file.label_names], dtype=np.int64)
    codes = file.labels[rows]
    ids = to_model[codes] if len(to_model) else np.full(len(rows), -1)
    unknown = np.flatnonzero(ids < 0)
    if len(unknown):
        first = unknown[0]
        raise DataError(
            f"unknown category '{file.label_names[codes[first]]}' in the {name} data "
            f"({len(unknown):,} rows; the model knows {len(labels):,} categories)",
            file.source,
            line=int(file.lines[rows[first]]),
            field=file.meta["fields"]["label"],
        )
    return ids


def piece_counts(file: EncodedFile, rows: np.ndarray) -> np.ndarray:
    """Occurrences of each cached piece in `rows` (ascending), reading the file block by block."""
    counts = np.zeros(len(file.vocabulary), dtype=np.int64)
    blocks = token_blocks(file.folder / "tokens.bin", file.n_rows, file.max_tokens)
    for start, block in blocks if file.n_rows else ():
        lo, hi = np.searchsorted(rows, [start, start + len(block)])
        counts += np.bincount(block[rows[lo:hi] - start].ravel(), minlength=len(counts))
    return counts


def model_ids(file: EncodedFile, featurizer: TokenFeaturizer) -> np.ndarray:
    """Cache piece id -> model id for every piece of `file` ([PAD] -> the model's pad id)."""
    remap = featurizer.ids(file.vocabulary)
    remap[0] = featurizer.pad_id
    return remap


def file_split(
    path: str | Path,
    cfg: DataConfig,
    featurizer: Featurizer,
    labels: LabelMap,
    name: str = "evaluation",
) -> Split:
    """Every row of a labelled file, as a model of `featurizer` and `labels` reads it."""
    file = encode_file(path, cfg, featurizer)
    return labelled_split(name, file, np.arange(file.n_rows), featurizer, labels, cfg)


def labelled_split(
    name: str,
    file: EncodedFile,
    rows: np.ndarray,
    featurizer: Featurizer,
    labels: LabelMap,
    cfg: DataConfig,
    remap: np.ndarray | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Split:
    """A split of `file` in a model's input and label space (`remap`: `model_ids(file,
    featurizer)` when the caller has it already; `progress` hears vectors being computed)."""
    labelled = {
        "name": name,
        "file": file,
        "rows": rows,
        "labels": _model_labels(file, rows, labels, name),
        "weights": _row_weights(file, rows, cfg),
    }
    if isinstance(featurizer, TokenFeaturizer):
        remap = model_ids(file, featurizer) if remap is None else remap
        return Split(**labelled, remap=remap)
    return Split(**labelled, remap=None, features=featurizer.file_vectors(file, progress))


def load_splits(
    cfg: DataConfig,
    train: str | Path | None = None,
    validation: str | Path | None = None,
    test: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    featurizer: Featurizer | None = None,
) -> Splits:
    """Encode (or reuse the caches of) the files and build train/validation/test splits.

    Files default to `cfg.train`, `cfg.validation` and `cfg.test`. Without a validation or
    test file, those splits are carved from the training file, stratified by category.
    `featurizer` (default: words, from `cfg`) is fitted on the training rows.
    `progress(file, done, total)` reports encoding progress (and a vector featurizer's).
    """
    train = train or cfg.train
    validation = validation or cfg.validation
    test = test or cfg.test
    if train is None:
        raise DataError("no training file: give one (data.train or --train)")
    featurizer = featurizer or VocabularyFeaturizer.from_config(cfg)
    summary = DataSummary()

    def encoded(path: str | Path, role: str) -> tuple[EncodedFile, np.ndarray]:
        report = (lambda done, total: progress(str(path), done, total)) if progress else None
        file = encode_file(path, cfg, featurizer, progress=report)
        summary.files[role] = str(path)
        stats = file.meta["stats"]
        summary.rows_read[str(path)] = stats["rows_read"]
        summary.drop(f"empty title ({path})", stats["empty_titles"])
        summary.empty_title_lines += [f"{Path(path).name}:{n}" for n in stats["skipped_lines"]]
        summary.truncated_titles += stats["truncated_titles"]
        return file, filter_rows(file, cfg, summary)

    train_file, pool = encoded(train, "train")
    if cfg.split_sampled and cfg.max_rows is not None and len(pool) > cfg.max_rows:
        before = len(pool)
        _, kept, _ = stratified_split(train_file.labels[pool], [before - cfg.max_rows], cfg.seed)
        pool = pool[kept]
        summary.drop("over max_rows (before splitting)", before - len(pool))
    held_out = {"validation": validation, "test": test}
    sizes = {
        role: as_size(getattr(cfg, f"{role}_size"), len(pool))
        for role, path in held_out.items()
        if path is None
    }
    parts, train_rows, unsplit = stratified_split(
        train_file.labels[pool], list(sizes.values()), cfg.seed
    )
    carved = {role: pool[part] for role, part in zip(sizes, parts)}
    train_rows = pool[train_rows]
    summary.unsplit_categories = unsplit
    before = len(train_rows)
    if not cfg.split_sampled and cfg.max_rows is not None and len(train_rows) > cfg.max_rows:
        # A stratified sample: every category keeps at least one training row.
        _, kept, _ = stratified_split(
            train_file.labels[train_rows], [len(train_rows) - cfg.max_rows], cfg.seed
        )
        train_rows = train_rows[kept]
    summary.drop("over max_rows (train)", before - len(train_rows))

    label_names = train_file.label_names
    present = np.unique(train_file.labels[train_rows])
    labels = LabelMap(sorted(label_names[i] for i in present))
    featurizer.fit(train_file.vocabulary, piece_counts(train_file, train_rows))
    featurizer.fitted_rows = len(train_rows)
    # Shared by the splits carved from the training file.
    tokens = isinstance(featurizer, TokenFeaturizer)
    train_remap = model_ids(train_file, featurizer) if tokens else None
    splits: dict[str, Split | None] = {
        "train": labelled_split(
            "train", train_file, train_rows, featurizer, labels, cfg, train_remap, progress
        )
    }
    for role, path in held_out.items():
        if path is None:
            file, rows, remap = train_file, carved[role], train_remap
            if len(rows) == 0:
                splits[role] = None
                continue
        else:
            (file, rows), remap = encoded(path, role), None
        limit = getattr(cfg, f"{role}_max_rows")
        before = len(rows)
        rows = _sample(rows, limit, cfg.seed + 1)
        summary.drop(f"over {role}_max_rows", before - len(rows))
        splits[role] = labelled_split(role, file, rows, featurizer, labels, cfg, remap, progress)
    if splits["validation"] is None:
        raise DataError(
            "no validation rows: give a validation file or a validation_size above 0", train
        )
    summary.sizes = {k: len(v) for k, v in splits.items() if v is not None}
    summary.categories = len(labels)
    summary.vocabulary = featurizer.vocab_size if isinstance(featurizer, TokenFeaturizer) else 0
    if train_file.meta["fields"].get("language") is not None:
        names = train_file.meta["languages"]
        counts = np.bincount(train_file.languages[train_rows], minlength=len(names))
        summary.languages = {names[i]: int(c) for i, c in enumerate(counts) if c}
    elif cfg.file_language:
        summary.languages = {cfg.file_language: len(train_rows)}
    return Splits(
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        featurizer=featurizer,
        labels=labels,
        summary=summary,
    )

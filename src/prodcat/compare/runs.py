"""The runs a comparison reads: from a sweep's folders, or from one or more MLflow stores.

Either way a run is its `RunResult` (metrics.json: test scores, per-epoch history, time,
device, parameters), its tags (variant, repeat, the user's) and, when kept, its
`predictions.parquet`, which the row-level significance test and the per-category view need.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from prodcat.errors import ConfigError
from prodcat.evaluation.evaluate import PREDICTIONS_FILE
from prodcat.training.result import METRICS_FILE, RunResult

# Tags the sweep itself sets; the others are the user's (language, dim, ...).
SWEEP_TAGS = ("sweep", "variant", "repeat", "prodcat.tags")
# Plain-named tags the tracker sets on every run (runs of sweeps older than the
# `prodcat.tags` list are told apart from the user's tags by these).
TRACKER_TAGS = {"categories", "vocabulary", "device", "device_type", "git_commit"}


@dataclass
class RunRecord:
    """One finished run of a comparison."""

    variant: str
    repeat: int
    result: RunResult
    tags: dict[str, str] = field(default_factory=dict)
    predictions: Path | None = None  # predictions.parquet of the test rows
    source: str = ""  # the model folder, or the store and run id

    @property
    def user_tags(self) -> dict[str, str]:
        return {k: v for k, v in self.tags.items() if k not in SWEEP_TAGS}

    @property
    def scores(self):
        """Test scores, or validation ones for a run without a test split."""
        return self.result.test or self.result.validation


def records_from_sweep(done) -> list[RunRecord]:
    """Records of `run_sweep`'s (PlannedRun, RunResult) pairs."""
    out = []
    for planned, result in done:
        path = Path(planned.folder) / PREDICTIONS_FILE
        out.append(
            RunRecord(
                planned.variant,
                planned.repeat,
                result,
                dict(planned.tags),
                path if path.is_file() else None,
                str(planned.folder),
            )
        )
    return out


def records_from_mlflow(
    experiment: str,
    stores: list[str],
    download_to: Path | None = None,
    run_ids: set[str] | None = None,
) -> list[RunRecord]:
    """Every finished run of `experiment` with a `variant` tag in the given stores (URIs of
    MLflow tracking stores: sqlite:///..., a folder, http://...), merged; the same run found
    twice is counted once. `run_ids`: only these runs."""
    from prodcat.tracking.mlflow_store import finished_runs

    download_to = Path(download_to or tempfile.mkdtemp(prefix="prodcat-report-"))
    runs = finished_runs(experiment, stores, (METRICS_FILE, PREDICTIONS_FILE), download_to)
    records = [
        RunRecord(
            run.tags["variant"],
            int(run.tags.get("repeat", 0)),
            RunResult.load(run.metrics.parent),
            _sweep_tags(run.tags),
            run.predictions,
            f"{run.store}#{run.run_id}",
        )
        for run in runs
        if run_ids is None or run.run_id in run_ids
    ]
    if not records:
        raise ConfigError(f"experiment '{experiment}' has no finished run with a variant tag")
    return records


def _sweep_tags(tags: dict[str, str]) -> dict[str, str]:
    """The tags a sweep set on a run (its own and the user's), not the tracker's."""
    if "prodcat.tags" in tags:
        keep = set(filter(None, tags["prodcat.tags"].split(","))) | set(SWEEP_TAGS)
        return {k: v for k, v in tags.items() if k in keep}
    return {k: v for k, v in tags.items() if "." not in k and k not in TRACKER_TAGS}


@dataclass
class TestRows:
    """The test rows every compared run predicted, in one order: true and top-1 class ids."""

    categories: list[str]  # class id -> name
    y: np.ndarray  # (rows,) true class ids
    predicted: dict[tuple[str, int], np.ndarray]  # (variant, repeat) -> (rows,) top-1 ids


def shared_test_rows(records: list[RunRecord]) -> TestRows | None:
    """Align the runs' predictions on the test rows they all scored (by source line), or
    None when some run kept no predictions or the runs share no rows."""
    if not records or any(r.predictions is None for r in records):
        return None
    tables = {}
    for r in records:
        table = pq.read_table(r.predictions, columns=["line", "category", "predicted"])
        lines = table.column("line").to_numpy()
        first = [p[0] if p else "" for p in table.column("predicted").to_pylist()]
        tables[(r.variant, r.repeat)] = (lines, table.column("category").to_pylist(), first)
    common = None
    for lines, _, _ in tables.values():
        common = lines if common is None else np.intersect1d(common, lines)
    if common is None or len(common) == 0:
        return None
    names: dict[str, int] = {}
    y = None
    predicted = {}
    for key, (lines, truth, first) in tables.items():
        order = np.argsort(lines, kind="stable")
        where = order[np.searchsorted(lines[order], common)]
        if y is None:
            y = np.array([names.setdefault(truth[i], len(names)) for i in where], dtype=np.int64)
        predicted[key] = np.array(
            [names.setdefault(first[i], len(names)) for i in where], dtype=np.int64
        )
    return TestRows(list(names), y, predicted)

"""Several workers, one study: `prodcat tune` and `prodcat compare` processes sharing a study
in a real PostgreSQL database (and a real MLflow tracking server for the sweep's table),
as the README's "Several machines" runs them; skipped where PostgreSQL is not installed."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.test_compare import tiny_space, write_sweep
from tests.test_training import write_titles

pytest.importorskip("psycopg", reason="the study database's driver: pip install 'prodcat[team]'")

HEARTBEAT = 1  # seconds; a killed worker's trial is given away after 3 of them


def prodcat(args: list[str], cwd: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        [sys.executable, "-m", "prodcat", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    """The process's stdout and stderr together, once it exited with 0."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out + err


def study_trials(url: str, name: str):
    import optuna

    from prodcat.compare.study import counted, storage_url

    study = optuna.load_study(study_name=name, storage=storage_url(url))
    return study.get_trials(deepcopy=False), counted(study.get_trials(deepcopy=False))


def test_two_tune_workers_share_one_postgres_study_and_finish_a_killed_ones_trial(
    tmp_path, postgres, tracking_server
):
    from optuna.trial import TrialState

    url = postgres.database()
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=30)
    space = tiny_space(
        "team-tune", data, 4, f"tracking.uri={tracking_server.uri}", startup_trials=2
    )
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space), encoding="utf-8")

    def worker(name: str) -> subprocess.Popen:
        args = ["tune", "space.yaml", "-o", name, "-q", "--storage", url]
        args += ["--heartbeat", str(HEARTBEAT), "--set", f"data.cache_dir=cache-{name}"]
        return prodcat(args, tmp_path, start_new_session=True)

    doomed = worker("a")
    trials_a = tmp_path / "a" / "trials"
    deadline = time.monotonic() + 120
    while not (trials_a.is_dir() and any(trials_a.iterdir())):  # its first trial has begun
        assert doomed.poll() is None and time.monotonic() < deadline, doomed.stderr.read()
        time.sleep(0.02)
    survivor = worker("b")
    os.killpg(doomed.pid, signal.SIGKILL)  # mid-trial: it never says so to the study
    doomed.wait(10)
    out = finish(survivor)

    every, counting = study_trials(url, "team-tune")
    settled = [t for t in counting if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(settled) == 4  # the trials add up to the number asked, not one more
    values = [json.dumps(t.params, sort_keys=True) for t in settled]
    assert len(set(values)) == 4  # no value set trained twice
    killed = [t for t in every if t.state == TrialState.FAIL and t.params]
    assert len(killed) == 1  # the killed worker's trial ...
    retried = [t for t in settled if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retried) == 1 and retried[0].params == killed[0].params  # ... finished by b
    folder = Path(killed[0].user_attrs["folder"]).name
    assert (tmp_path / "b" / "trials" / folder / "metrics.json").is_file()
    # b settled the last trial, so b wrote the best config and scored it on the test rows.
    assert "test (scored once): BAC" in out and (tmp_path / "b" / "best.yaml").is_file()
    assert not (tmp_path / "a" / "best.yaml").exists()

    # On a machine that has none of the trials' folders, the study run again is finished
    # there: the best trial's model comes from its MLflow run on the server.
    shutil.rmtree(tmp_path / "a")
    shutil.rmtree(tmp_path / "b")
    out = finish(worker("c"))
    assert "test (scored once): BAC" in out and (tmp_path / "c" / "best.yaml").is_file()
    assert not (tmp_path / "c" / "trials").exists()  # it trained nothing


def test_two_compare_workers_train_every_run_once_and_the_table_matches_one_process(
    tmp_path, postgres, tracking_server
):
    from mlflow.tracking import MlflowClient

    data = write_titles(tmp_path / "train.jsonl", rows_per_category=30)
    write_sweep(tmp_path / "sweep.yaml", data, tracking_server.uri, experiment="team")
    url = postgres.database()

    def worker(name: str, *extra: str) -> subprocess.Popen:
        args = ["compare", "sweep.yaml", "-o", name, "-q", *extra]
        return prodcat([*args, "--set", f"data.cache_dir=cache-{name}"], tmp_path)

    shared = [worker(n, "--storage", url, "--heartbeat", str(HEARTBEAT)) for n in ("a", "b")]
    outs = [finish(p) for p in shared]
    alone = finish(worker("one", "--no-track"))  # its table from its folders

    # Each run trained by exactly one worker, logged once.
    trained = {
        name: sorted(
            str(p.relative_to(tmp_path / name)) for p in (tmp_path / name).glob("runs/*/r*")
        )
        for name in ("a", "b")
    }
    assert sorted(trained["a"] + trained["b"]) == [
        "runs/good/r0",
        "runs/good/r1",
        "runs/weak/r0",
        "runs/weak/r1",
    ]
    client = MlflowClient(tracking_server.uri)
    experiment = client.get_experiment_by_name("team")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "variant" in r.data.tags]
    assert len(runs) == 4
    # One worker wrote the table, from MLflow; it is the single process's table.
    writers = [n for n, out in zip("ab", outs) if "| good |" in out]
    assert (
        len(writers) == 1
        and "the worker that trained the last one" in outs[1 - "ab".index(writers[0])]
    )

    def table(folder: Path) -> dict[str, dict[str, str]]:
        with open(folder / "results.csv", encoding="utf-8") as f:
            return {row["variant"]: row for row in csv.DictReader(f)}

    together, single = table(tmp_path / writers[0]), table(tmp_path / "one")
    for variant in ("good", "weak"):
        for key in ("runs", "bac_mean", "bac_std", "p_rows_holm", "significant"):
            assert together[variant][key] == single[variant][key], (variant, key)
    assert "| good |" in alone

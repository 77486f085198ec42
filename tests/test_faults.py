"""Faults, as real `prodcat train` processes on tiny data: kill -9 at several moments and
resume, SIGTERM while a split is scored, two runs tracked in one SQLite store at once, and a
full disk (a file size limit: writes fail with EFBIG).

A test-only pause point (`PRODCAT_TEST_PAUSE_AT`, prodcat/fault_points.py) holds the process
at the chosen moment, so each kill lands where it is meant to, not by luck of timing.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from prodcat.errors import ProdcatError
from prodcat.models.folder import load_model_folder
from prodcat.training.checkpoint import CHECKPOINT, load_checkpoint
from prodcat.training.result import METRICS_FILE
from tests.test_training import write_titles

# 100 titles: 80 train (20 batches of 4), 10 validation, 10 test; one thread, so that runs
# of one seed are equal to the last bit.
SETTINGS = {
    "training.epochs": 3,
    "training.batch_size": 4,
    "training.threads": 1,
    "training.patience": "null",
    "model.embedding_dim": 4,
    "model.hidden_layers": "[8]",
}
TIMING = ("seconds", "titles_per_second", "data_wait_share")  # the metrics that may differ


def train_command(root: Path, output: str, uri: str | None, **extra) -> list[str]:
    settings = {**SETTINGS, "data.cache_dir": str(root / "cache"), **extra}
    if "model.members" in extra:  # an ensemble: the word settings are its members'
        settings = {k: v for k, v in settings.items() if not k.startswith("model.") or k in extra}
    if uri:
        settings["tracking.uri"] = uri
    command = [sys.executable, "-m", "prodcat", "train", "--train", str(root / "train.jsonl")]
    command += ["--output", str(root / output), "-q"] + ([] if uri else ["--no-track"])
    return command + [x for k, v in settings.items() for x in ("--set", f"{k}={v}")]


def start(command: list[str], root: Path, pause_at: str | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "PRODCAT_CACHE": str(root / "cache")}
    env.pop("PRODCAT_TEST_PAUSE_AT", None)
    if pause_at:
        env["PRODCAT_TEST_PAUSE_AT"] = pause_at
    return subprocess.Popen(command, cwd=root, env=env, text=True, **popen)


def run_to_pause(command: list[str], root: Path, pause_at: str) -> subprocess.Popen:
    """Start `command` and return once it holds at `pause_at` (its stderr says so)."""
    process = start(command, root, pause_at, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("prodcat-test-pause: "):
            return process
    process.wait()
    raise AssertionError(f"never reached {pause_at}:\n" + "".join(seen))


def kill_9(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(timeout=30)
    process.stderr.close()


def finish(command: list[str], root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRODCAT_CACHE": str(root / "cache")}
    env.pop("PRODCAT_TEST_PAUSE_AT", None)
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=180)


def stop_with_sigterm(process: subprocess.Popen) -> None:
    """SIGTERM `process`: it must end as a signal-stopped process with one line, no traceback."""
    process.send_signal(signal.SIGTERM)
    err = process.stderr.read()
    process.wait(timeout=60)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "terminated: the last checkpoint is kept; continue with `prodcat train ... --resume`"
    )


def runs_of(uri: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("prodcat")
    return {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}


def final_metrics(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if not any(t in k for t in TIMING)}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults")
    write_titles(folder / "train.jsonl", rows_per_category=25)
    return folder


@pytest.fixture(scope="module")
def two_at_once(root):
    """Two uninterrupted runs of one seed, started together, tracked in one new SQLite store."""
    uri = f"sqlite:///{root / 'together.db'}"
    processes = [
        start(
            train_command(root, name, uri), root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for name in ("first", "second")
    ]
    errors = [p.communicate(timeout=180)[1] for p in processes]
    return uri, [p.returncode for p in processes], errors


def test_two_trainings_at_once_in_one_sqlite_store_both_land(two_at_once, root):
    uri, codes, errors = two_at_once
    assert codes == [0, 0], errors
    runs = runs_of(uri)
    assert len(runs) == 2
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    first, second = (final_metrics(r) for r in runs.values())
    assert "test_balanced_accuracy" in first and first == second  # one seed, one result
    for name in ("first", "second"):
        load_model_folder(root / name)


def test_kill_9_at_any_moment_then_resume_ends_as_an_uninterrupted_run(two_at_once, root):
    uri = f"sqlite:///{root / 'killed.db'}"
    command = train_command(root, "killed", uri)
    output = root / "killed"

    # 1. In epoch 2 (epoch 1 is 20 training batches and 1 of validation).
    kill_9(run_to_pause(command, root, "batch:30"))
    [run_id] = runs_of(uri)
    assert runs_of(uri)[run_id].info.status == "RUNNING"
    assert load_checkpoint(output)["state"]["epoch"] == 1

    # 2. While the checkpoint of epoch 2 is written: the one of epoch 1 stays whole.
    kill_9(run_to_pause(command + ["--resume"], root, "checkpoint"))
    assert list(output.glob(f".{CHECKPOINT}.*.tmp"))  # the half-made one, never loaded
    assert load_checkpoint(output)["state"]["epoch"] == 1

    # 3. While the model folder is moved into place: it does not load as a whole model.
    kill_9(run_to_pause(command + ["--resume"], root, "model_folder"))
    assert load_checkpoint(output)["state"]["epoch"] == 3
    assert not (output / METRICS_FILE).exists()
    with pytest.raises(ProdcatError):
        load_model_folder(output)

    # 4. While MLflow logs the run's end.
    kill_9(run_to_pause(command + ["--resume"], root, "mlflow"))
    assert runs_of(uri)[run_id].info.status == "RUNNING"

    done = finish(command + ["--resume"], root)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    runs = runs_of(uri)
    assert list(runs) == [run_id] and runs[run_id].info.status == "FINISHED"  # one run, continued
    reference = next(iter(runs_of(two_at_once[0]).values()))
    assert final_metrics(runs[run_id]) == final_metrics(reference)
    assert (
        json.loads((output / METRICS_FILE).read_text())["test"]
        == json.loads((root / "first" / METRICS_FILE).read_text())["test"]
    )
    load_model_folder(output)
    assert not [p.name for p in output.iterdir() if p.name.startswith(".")]  # no leftovers


@pytest.mark.parametrize("moment", ["evaluate:1", "evaluate:2"], ids=["validation", "test"])
def test_sigterm_while_a_split_is_scored_marks_the_run_killed(moment, root, two_at_once):
    uri = f"sqlite:///{root / f'term-{moment[-1]}.db'}"
    command = train_command(root, f"term-{moment[-1]}", uri, **{"training.epochs": 1})
    process = run_to_pause(command, root, moment)  # 1: epoch 1's validation; 2: the test rows
    stop_with_sigterm(process)
    [run] = runs_of(uri).values()
    assert run.info.status == "KILLED"


def file_size_limit(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize(
    "limit, where",
    [(1_000, "config"), (18_000, "model folder")],
    ids=["before-training", "model-folder"],
)
def test_a_full_disk_is_one_line_and_leaves_nothing_that_loads_as_whole(
    limit, where, root, two_at_once
):
    # The cache of train.jsonl is made by the runs before: only the run's own files are written.
    output = root / f"full-{limit}"
    command = train_command(root, output.name, None)
    process = start(
        command,
        root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=file_size_limit(limit),
    )
    _, err = process.communicate(timeout=180)
    assert process.returncode == 1, err
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("error: ") and "File too large" in line, line
    assert not (output / METRICS_FILE).exists()
    assert not list(output.glob(".*"))  # no temporary files or staging folder left
    with pytest.raises(ProdcatError):
        load_model_folder(output)
    if where == "model folder":
        # Training got to the end and kept its checkpoint, whole: --resume finishes the run.
        assert load_checkpoint(output)["state"]["epoch"] == 3
        done = finish(command + ["--resume"], root)
        assert done.returncode == 0, done.stderr
        load_model_folder(output)


def member_processes(parent: int) -> list[int]:
    """The pids of `parent`'s ensemble member processes (its children but the resource
    tracker), from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == parent and b"resource_tracker" not in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def test_an_ensemble_training_members_at_once_stops_whole_and_resumes(root):
    """`model.workers: 2`, each member in its own process. kill -9 of one member: one
    error line, not a hang, and the other member is stopped too. SIGTERM to `prodcat train`
    while a member scores its validation rows: exit 143, one line. `--resume` finishes."""
    members = [{"family": "mlp", "embedding_dim": d, "hidden_layers": [8]} for d in (4, 6)]
    settings = {"model.family": "ensemble", "model.workers": 2, "model.members": members}
    command = train_command(root, "ensemble", None, **{"training.epochs": 2, **settings})
    process = run_to_pause(command, root, "evaluate:1")  # a member's first validation
    victims = member_processes(process.pid)
    assert len(victims) == 2
    os.kill(victims[0], signal.SIGKILL)
    err = process.stderr.read()
    process.wait(timeout=60)
    assert process.returncode == 1, err  # the environment's code, as for a full disk
    assert "Traceback" not in err
    assert "process died (exit code -9" in err.strip().splitlines()[-1]
    assert not Path(f"/proc/{victims[1]}").exists()  # the other member was stopped too

    stop_with_sigterm(run_to_pause([*command, "--resume"], root, "evaluate:1"))
    done = finish([*command, "--resume"], root)
    assert done.returncode == 0, done.stderr
    spec = json.loads((root / "ensemble" / "ensemble.json").read_text())
    assert spec["members"] == ["members/0", "members/1"]
    for member in spec["members"]:
        load_model_folder(root / "ensemble" / member)

"""Shared fixtures: small title files written to a temporary folder, an isolated cache,
the real data under ../shared when it is there, and an in-process CLI runner."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point $PRODCAT_CACHE at a temporary folder, so nothing is written to ~/.cache."""
    root = tmp_path / "prodcat-cache"
    monkeypatch.setenv("PRODCAT_CACHE", str(root))
    return root


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty folder for the test's input files."""
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


@pytest.fixture
def write_text(data_dir: Path) -> Callable[..., Path]:
    """Write text (gzip-compressed when `gz`, whatever the name) and return the path."""

    def write(name: str, text: str, *, gz: bool = False) -> Path:
        path = data_dir / name
        data = text.encode("utf-8")
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    return write


@pytest.fixture
def write_bytes(data_dir: Path) -> Callable[[str, bytes], Path]:
    """Write raw bytes and return the path."""

    def write(name: str, data: bytes) -> Path:
        path = data_dir / name
        path.write_bytes(data)
        return path

    return write


@pytest.fixture
def write_csv(write_text) -> Callable[..., Path]:
    """Write a CSV (quoted as needed) from a header and rows; gzip it when `gz`."""

    def write(
        name: str, header: Sequence[str], rows: Iterable[Sequence[Any]], *, gz: bool = False
    ) -> Path:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return write_text(name, buffer.getvalue(), gz=gz)

    return write


@pytest.fixture
def write_jsonl(write_text) -> Callable[..., Path]:
    """Write one JSON object per line; gzip it when `gz`."""

    def write(name: str, records: Iterable[dict[str, Any]], *, gz: bool = False) -> Path:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        return write_text(name, text, gz=gz)

    return write


@pytest.fixture
def data_config(tmp_path: Path) -> Callable[..., Any]:
    """Build a DataConfig whose cache lives in the test's temporary folder."""
    from prodcat.config import DataConfig

    def make(**settings: Any):
        settings.setdefault("cache_dir", tmp_path / "cache")
        return DataConfig(**settings)

    return make


@pytest.fixture
def shared_data() -> Path:
    """The real MeLi files under ../shared/data; the test is skipped when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no shared data at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def shared_file(shared_data: Path) -> Callable[[str], Path]:
    """A file of ../shared/data by name; the test is skipped when it is absent."""

    def get(name: str) -> Path:
        path = shared_data / name
        if not path.is_file():
            pytest.skip(f"no shared data file {path}")
        return path

    return get


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], tuple[int, str, str]]:
    """Run `prodcat ARGS` in-process; return (exit code, stdout, stderr).

    The CLI reconfigures the root logger; its handlers are restored afterwards.
    """
    from prodcat.cli.main import main

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)

    def run(args: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    """A model folder trained once per session by `prodcat train` on the tiny test titles."""
    from prodcat.cli.main import main
    from tests.test_training import write_titles

    root = tmp_path_factory.mktemp("small-model")
    data = write_titles(root / "train.jsonl", rows_per_category=40)
    args = ["train", "--train", str(data), "--output", str(root / "model"), "--no-track", "-q"]
    settings = ["training.epochs=8", "training.lr=0.05", "model.embedding_dim=16"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRODCAT_CACHE", str(root / "cache"))
        with pytest.raises(SystemExit) as done:
            main(args + [x for s in settings for x in ("--set", s)])
    assert done.value.code == 0
    return root / "model"


# -- real servers: PostgreSQL and an MLflow tracking server (tests/servers.py) -------------------


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster for the session (about 1 s to start);
    `postgres.database()` gives a fresh database's URL per call. Skipped where PostgreSQL is
    not installed or will not start."""
    from tests.servers import PostgresCluster, Unavailable

    try:
        cluster = PostgresCluster.start()
    except Unavailable as e:
        pytest.skip(f"no PostgreSQL server: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def tracking_server(postgres, tmp_path_factory):
    """One real `mlflow server` on PostgreSQL for the tests that only use it (each in its own
    experiment); a test that stops its server takes `mlflow_server` instead."""
    pytest.importorskip("psycopg", reason="the MLflow server's store needs psycopg")
    from tests.servers import MlflowServer

    server = MlflowServer(postgres.database(), tmp_path_factory.mktemp("mlflow-server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_server(postgres, tmp_path: Path):
    """A real `mlflow server` on a fresh PostgreSQL database, its artifacts proxied into the
    test's folder (about 6 s to start): `.uri`, and `.stop()` / `.start()` on the same port
    and database. Stopped at teardown, whatever the test did."""
    pytest.importorskip("mlflow")
    pytest.importorskip("psycopg", reason="the MLflow server's store needs psycopg")
    from tests.servers import MlflowServer

    server = MlflowServer(postgres.database(), tmp_path / "mlflow-server")
    try:
        server.start()
        yield server
    finally:
        server.stop()

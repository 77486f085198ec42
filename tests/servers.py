"""Throwaway real servers for tests: a PostgreSQL cluster and an MLflow tracking server on it.

`PostgresCluster.start()` runs a cluster in a temporary folder (trust authentication, a free
loopback port, its socket in that folder, no fsync: about 1 s) and gives each caller a fresh
database; `MlflowServer` runs `mlflow server` on one of them, with its artifacts proxied into
a folder (about 6 s on 2 cores), and can be stopped and started again on the same port and
database. What cannot run here (no PostgreSQL binaries, no `postgres` user to run them as
root) raises `Unavailable`, which the fixtures turn into a skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"  # Debian's packages (postgresql-15, ...)
PG_PROGRAMS = ("initdb", "postgres", "pg_ctl", "pg_isready", "createdb")
PG_USER = "postgres"  # PostgreSQL refuses to run as root: as root, it runs as this user
SUPERUSER = "postgres"  # the cluster's superuser, whichever user runs it
START_SECONDS = 60.0  # longest wait for a server to answer


class Unavailable(Exception):
    """A server cannot run on this machine (not a failure of the code under test)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs: $PRODCAT_PG_BIN, Debian's (the newest
    version), or PATH's."""
    debian = sorted(glob.glob(PG_BIN_GLOB), key=_version, reverse=True)
    candidates = [os.environ.get("PRODCAT_PG_BIN"), *debian]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in filter(None, candidates):
        if all((Path(folder) / name).is_file() for name in PG_PROGRAMS):
            return Path(folder)
    raise Unavailable(f"PostgreSQL is not installed (no initdb in {PG_BIN_GLOB} nor on PATH)")


def _version(bin_dir: str) -> list[int]:
    return [int(part) for part in Path(bin_dir).parent.name.split(".") if part.isdigit()]


class PostgresCluster:
    """A running PostgreSQL cluster of its own, on 127.0.0.1, with trust authentication."""

    def __init__(self, root: Path, port: int, bin_dir: Path, run_as: list[str]):
        self.root, self.port, self.bin_dir, self.run_as = root, port, bin_dir, run_as
        self.process: subprocess.Popen | None = None
        self._databases = 0

    @classmethod
    def start(cls) -> PostgresCluster:
        """Create a cluster in a new temporary folder and start it; `Unavailable` when
        PostgreSQL is missing or will not start here."""
        bin_dir = postgres_bin()
        run_as: list[str] = []
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(PG_USER)
            except KeyError:
                raise Unavailable(f"running as root and there is no '{PG_USER}' user") from None
            run_as = ["runuser", "-u", PG_USER, "--"]
        # Under /tmp: the postgres user must reach it (a root-only $TMPDIR would not do).
        root = Path(tempfile.mkdtemp(prefix="prodcat-pg-", dir="/tmp" if owner else None))
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        cluster = cls(root, free_port(), bin_dir, run_as)
        try:
            cluster._run(
                "initdb", "-D", str(root / "data"), "-U", SUPERUSER, "--auth=trust",
                "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions",
            )  # fmt: skip
            cluster._serve()
        except Unavailable as e:
            log = cluster.log_tail()
            cluster.stop()
            raise Unavailable(f"{e}{log}") from None
        return cluster

    def _serve(self) -> None:
        # The postmaster is this process's child (through runuser), not a daemon: stop()
        # reaps it, and it never outlives a test session as a zombie.
        options = [
            "-D", str(self.root / "data"), "-p", str(self.port), "-k", str(self.root),
            "-c", "listen_addresses=127.0.0.1",
            # Throwaway data: no fsync, no waiting for the disk.
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ]  # fmt: skip
        with open(self.root / "postgres.log", "ab") as log:
            self.process = subprocess.Popen(
                [*self.run_as, str(self.bin_dir / "postgres"), *options],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise Unavailable("PostgreSQL did not start")

    def database(self) -> str:
        """A new, empty database; its URL (postgresql://postgres@127.0.0.1:PORT/dbN)."""
        self._databases += 1
        name = f"db{self._databases}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the cluster at once (no checkpoint: its data is thrown away) and delete it."""
        process, self.process = self.process, None
        if process is not None:
            try:
                self._run("pg_ctl", "stop", "-m", "immediate", "-D", str(self.root / "data"))
                process.wait(10)
            except (Unavailable, subprocess.TimeoutExpired):
                _kill_group(process)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's log, to explain a failure ("" when there is none)."""
        path = self.root / "postgres.log"
        if not path.is_file():
            return ""
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        return "; log: " + " | ".join(tail)

    def _run(self, program: str, *args: str) -> None:
        command = [*self.run_as, str(self.bin_dir / program), *args]
        try:
            subprocess.run(
                command, cwd=self.root, capture_output=True, text=True, check=True,
                timeout=START_SECONDS,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", None) or str(e)
            raise Unavailable(f"PostgreSQL's {program} failed: {detail.strip()}") from None


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a database as its store and its artifacts proxied
    into `root/artifacts`; `stop()` and `start()` again keep its port and database."""

    def __init__(self, backend_store_uri: str, root: Path):
        self.backend_store_uri = backend_store_uri
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until `GET /health` answers (RuntimeError if it does not;
        the message holds the end of its log)."""
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1",  # one process is plenty for a test, and quicker to start
            "--backend-store-uri", self.backend_store_uri,
            "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"),
        ]  # fmt: skip
        # The job runner (7 more processes: LLM evaluation jobs) is of no use here.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(self.root / "server.log", "ab") as log:
            # A session of its own: stop() ends the server and its uvicorn worker together.
            self.process = subprocess.Popen(
                command, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"mlflow server did not start at {self.uri}; log: {self.log_tail()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s); nothing if it is not running."""
        process, self.process = self.process, None
        if process is None:
            return
        _kill_group(process, first=signal.SIGTERM)

    def log_tail(self, lines: int = 10) -> str:
        path = self.root / "server.log"
        if not path.is_file():
            return ""
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])


def _kill_group(process: subprocess.Popen, first: int = signal.SIGKILL) -> None:
    """End `process` and the rest of its session: `first`, SIGKILL after 10 s."""
    for sig in dict.fromkeys((first, signal.SIGKILL)):
        try:
            os.killpg(process.pid, sig)
            process.wait(10)
            break
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(process.pid, signal.SIGKILL)  # a child the leader left behind
    except ProcessLookupError:
        pass

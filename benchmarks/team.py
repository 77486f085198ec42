"""Several workers, one study (issue 24): the wall time of one `prodcat tune` study and one
`prodcat compare` sweep with N = 1 and 2 worker processes, and what PostgreSQL + an MLflow
tracking server cost per trial against SQLite + a local MLflow store.

    python benchmarks/team.py [--rows N] [--trials 6] [--workers 1 2]

Each setting starts from nothing: a fresh study database and MLflow store, the data cache
already warm (written once before the first timing). PostgreSQL and the server are real
(tests/servers.py starts them on loopback, as the test suite does); the server's start is
not timed. The trials are the MLP on ../shared/data/meli-es-51k (every row, or `--rows` of
them; 80/10/10), one thread each (2 workers on 2 cores), 5 epochs, none pruned; the sweep is
2 variants x 2 repeats of it.

Printed: a table of wall seconds per setting, the speed-up of 2 workers over 1 on each
store, and the overhead per trial of PostgreSQL + server over SQLite + local store (N = 1).
One run per setting; the load average is printed beside each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import MlflowServer, PostgresCluster  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "meli-es-51k.jsonl.gz"


def common(rows: int | None, cache: Path) -> list[str]:
    return [
        f"data.train={DATA}",
        *([f"data.max_rows={rows}", "data.split_sampled=true"] if rows else []),
        "training.epochs=5",
        "training.threads=1",
        "training.progress=false",
        f"data.cache_dir={cache}",
    ]


def write_specs(folder: Path, rows: int, trials: int, cache: Path, store: str) -> None:
    settings = [*common(rows, cache), f"tracking.uri={store}"]
    space = {
        "experiment": "team-tune",
        "trials": trials,
        "startup_trials": trials,  # random sampling: every trial trains its 2 epochs
        "warmup_epochs": 5,
        "set": settings,
        "space": {
            "training.lr": {"low": 0.001, "high": 0.01, "log": True},
            "model.embedding_dim": {"choices": [32, 64]},
        },
    }
    sweep = {
        "experiment": "team-sweep",
        "repeats": 2,
        "set": settings,
        "variants": {"small": {"set": ["model.embedding_dim=32"]}, "big": {}},
    }
    (folder / "space.yaml").write_text(yaml.safe_dump(space), encoding="utf-8")
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep), encoding="utf-8")


def timed(commands: list[list[str]], cwd: Path) -> float:
    """Wall seconds until every command (started together) exits; each must exit with 0."""
    env = {**os.environ}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "prodcat", *c],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in commands
    ]
    for p in processes:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(p.args)} failed:\n{err[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="default: every row")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="prodcat-team-"))
    cache = root / "cache"
    warm = root / "warm"
    warm.mkdir()
    subprocess.run(
        [sys.executable, "-m", "prodcat", "train", "-o", str(warm / "m"), "--no-track"]
        + [x for s in [*common(args.rows, cache), "training.max_steps=1"] for x in ("--set", s)],
        check=True,
        capture_output=True,
    )
    cluster = PostgresCluster.start()
    results = []
    try:
        for store in ("sqlite", "postgres"):
            for n in args.workers:
                folder = root / f"{store}-{n}"
                folder.mkdir()
                server = None
                if store == "sqlite":
                    tracking, storage = f"sqlite:///{folder / 'mlflow.db'}", None
                else:
                    server = MlflowServer(cluster.database(), folder / "server")
                    server.start()
                    tracking, storage = server.uri, cluster.database()
                write_specs(folder, args.rows, args.trials, cache, tracking)
                try:
                    for kind, spec in (("tune", "space.yaml"), ("compare", "sweep.yaml")):
                        study = storage or f"sqlite:///{folder / kind}.db"
                        commands = [
                            [kind, spec, "-o", f"{kind}-w{i}", "-q", "--storage", study]
                            for i in range(n)
                        ]
                        load = "/".join(f"{x:.2f}" for x in os.getloadavg())
                        seconds = timed(commands, folder)
                        results.append(
                            {"kind": kind, "store": store, "workers": n, "seconds": seconds}
                        )
                        print(f"{kind:8} {store:9} N={n}: {seconds:6.1f} s (load {load})")
                finally:
                    if server is not None:
                        server.stop()
    finally:
        cluster.stop()
    by = {(r["kind"], r["store"], r["workers"]): r["seconds"] for r in results}
    print("\n| run | store | N = " + " | N = ".join(map(str, args.workers)) + " |")
    print("|---|---|" + "---|" * len(args.workers))
    for kind in ("tune", "compare"):
        for store in ("sqlite", "postgres"):
            cells = " | ".join(f"{by[(kind, store, n)]:.1f} s" for n in args.workers)
            print(f"| {kind} | {store} | {cells} |")
    units = {"tune": args.trials, "compare": 4}
    for kind in ("tune", "compare"):
        for store in ("sqlite", "postgres"):
            if 1 in args.workers and 2 in args.workers:
                speed = by[(kind, store, 1)] / by[(kind, store, 2)]
                print(f"{kind}, {store}: 2 workers are {speed:.2f}x as fast as 1")
        if 1 in args.workers:
            extra = (by[(kind, "postgres", 1)] - by[(kind, "sqlite", 1)]) / units[kind]
            print(f"{kind}: PostgreSQL + server cost {extra:+.2f} s per trial/run (N = 1)")
    (root / "team.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"figures: {root / 'team.json'}")


if __name__ == "__main__":
    main()

"""Memory of a run at scale (issue 25): peak heap and peak file-backed memory, apart.

Run (from the repository root)::

    .venv/bin/python benchmarks/memory.py --rows 5000000                  # the issue's table
    .venv/bin/python benchmarks/memory.py --rows 5000000 --memray         # + where the heap goes
    .venv/bin/python benchmarks/memory.py --rows 20000000 --full-epoch    # the whole challenge

1. writes a synthetic MercadoLibre-style CSV of `--rows` titles (`benchmarks/synth.py`, seed 0,
   1,588 categories) under `--workdir`, reusing one written earlier;
2. for each split setting (`--splits`, validation/test rows or shares; default the issue's
   three: 2,000/2,000, 500,000/2,000 with 20,000 validation rows scored per epoch, and the
   default 10 %/10 %), trains the default config (`configs/mlp.yaml`) in a child process
   (`prodcat train`, tracking off, `training.max_steps` steps, or one whole epoch with
   `--full-epoch`), the data cache shared (warm after the first run);
3. samples the child's `/proc/PID/status` every `--every` seconds: peak RssAnon (the heap:
   what the process allocated) and peak RssFile (file pages mapped: the cache's token
   arrays, which the kernel drops under pressure), and the phase each peak fell in (the
   child's last log line before it);
4. `--memray`: runs the child under `memray run` and prints what was live at the heap's
   high-water mark, by the innermost prodcat line that allocated it (memray's
   `get_high_watermark_allocation_records`), the profile kept under `--workdir`.

Figures go to stdout as a table and to `--workdir/memory.json`. The load average is printed:
a shared machine's wall times are slower than an idle one's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_scale import synth_file  # noqa: E402  (benchmarks/train_scale.py)

SPLITS = {  # name: (validation, test, validation rows scored per epoch)
    "2k/2k": ("2000", "2000", None),
    "500k/2k": ("500000", "2000", 20000),
    "10%/10%": ("0.1", "0.1", None),
}


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def status_kb(pid: int) -> dict[str, int]:
    """RssAnon, RssFile and VmRSS of `pid`, in kB (empty once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmRSS"):
            fields[key] = int(value.split()[0])
    return fields


def run_child(cmd: list[str], every: float) -> dict:
    """Run `cmd`, sampling its memory; its peaks, the phase of each and the wall time."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    phase = ["start"]
    lines: list[str] = []

    def read_log() -> None:
        for line in proc.stderr:
            lines.append(line.rstrip())
            if line.strip():
                phase[0] = line.strip()[-100:]

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    peak = {"RssAnon": (0, ""), "RssFile": (0, ""), "VmRSS": (0, "")}
    while proc.poll() is None:
        # memray's child is the python process under it: sample the deepest one.
        for key, value in status_kb(deepest(proc.pid)).items():
            if value > peak[key][0]:
                peak[key] = (value, phase[0])
        time.sleep(every)
    reader.join(timeout=5)
    if proc.returncode:
        print("\n".join(lines[-30:]), file=sys.stderr)
        raise SystemExit(f"{' '.join(cmd[:6])}... failed with exit code {proc.returncode}")
    return {
        "wall_seconds": time.perf_counter() - started,
        **{f"peak_{k}_gb": v / 1e6 for k, (v, _) in peak.items()},
        **{f"peak_{k}_phase": p for k, (_, p) in peak.items()},
    }


def top_at_peak(profile: Path, n: int = 12) -> list[tuple[int, str]]:
    """The bytes live at the heap's high-water mark, by the innermost prodcat line (or the
    innermost line) that allocated them, largest first: memray's own accounting."""
    import memray

    totals: dict[str, int] = {}
    with memray.FileReader(profile) as reader:
        for record in reader.get_high_watermark_allocation_records(merge_threads=True):
            frames = record.stack_trace()
            ours = [f for f in frames if "/prodcat/" in f[1]] or frames or [("?", "?", 0)]
            function, file, line = ours[0]
            where = f"{Path(file).name}:{line} {function}"
            totals[where] = totals.get(where, 0) + record.size
    return sorted(((v, k) for k, v in totals.items()), reverse=True)[:n]


def deepest(pid: int) -> int:
    """`pid`, or its only child's (memray's launcher runs the program in a child)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pid
    return deepest(int(children[0])) if len(children) == 1 else pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--splits", nargs="*", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--full-epoch", action="store_true", help="one epoch, not max-steps")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--memray", action="store_true", help="profile the heap (memray)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out" / "memory")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = synth_file(args.workdir, args.rows)
    results = []
    for name in args.splits:
        validation, test, during = SPLITS[name]
        output = args.workdir / f"run-{name.replace('/', '-').replace('%', 'pc')}"
        shutil.rmtree(output, ignore_errors=True)
        sets = {
            "data.cache_dir": str(args.workdir / "cache"),
            "data.validation_size": validation,
            "data.test_size": test,
            "training.validation_rows_during": during,
            "training.max_steps": None if args.full_epoch else args.max_steps,
            "training.epochs": 1 if args.full_epoch else 10,
            "training.progress": False,
        }
        cmd = [sys.executable]
        if args.memray:
            profile = args.workdir / f"memray-{output.name}.bin"
            profile.unlink(missing_ok=True)
            cmd += ["-m", "memray", "run", "--aggregate", "--quiet", "-o", str(profile)]
        cmd += ["-m", "prodcat", "train", "--config", str(ROOT / "configs" / "mlp.yaml")]
        cmd += ["--train", str(data), "--output", str(output), "--no-track"]
        for key, value in sets.items():
            cmd += ["--set", f"{key}={'null' if value is None else value}"]
        for override in args.overrides:
            cmd += ["--set", override]
        print(f"[{time.strftime('%H:%M:%S')} load {load()}] {name} ...", flush=True)
        row = {"rows": args.rows, "splits": name, **run_child(cmd, args.every), "load": load()}
        metrics = json.loads((output / "metrics.json").read_text())
        row["test_balanced_accuracy"] = (metrics.get("test") or {}).get("balanced_accuracy")
        results.append(row)
        print(json.dumps(row), flush=True)
        if args.memray:
            row["top_at_peak"] = top_at_peak(profile)
            for size, where in row["top_at_peak"]:
                print(f"  {size / 1e6:9,.1f} MB  {where}")
    (args.workdir / "memory.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print("\n| rows | validation / test | peak heap | (phase) | peak file-backed | wall |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['rows']:,} | {r['splits']} | {r['peak_RssAnon_gb']:.2f} GB | "
            f"{r['peak_RssAnon_phase'][:60]} | {r['peak_RssFile_gb']:.2f} GB | "
            f"{r['wall_seconds']:.0f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

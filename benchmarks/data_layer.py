"""Data-layer benchmark: `prodcat data prepare` speed and memory, cache reuse, batch throughput.

Run (from the repository root)::

    .venv/bin/python benchmarks/data_layer.py                       # 1 M and 5 M rows
    .venv/bin/python benchmarks/data_layer.py --rows 1000000 5000000 20000000
    .venv/bin/python benchmarks/data_layer.py --rows 1000000 --profile   # + cProfile of prepare
    .venv/bin/python benchmarks/data_layer.py --rows 5000000 --set data.cache_vocab=100000

For every row count it

1. writes a synthetic MercadoLibre-style CSV with `benchmarks/synth.py`
   into `--workdir` (default /tmp/prodcat-bench), reusing a file written earlier for the same
   row count and seed;
2. runs `prodcat data prepare --input FILE --output DIR` in a fresh subprocess on an empty
   DIR and records its wall time, rows/s and peak RSS (the child's own `ru_maxrss`, read with
   `os.wait4`, so every measurement is per run); the targets are peak RSS < 2 GB for 20 M rows;
3. reads the cache it wrote: distinct tokens kept in the cache's token table
   (`len(EncodedFile.vocabulary)`, [PAD] and [UNK] included) and `meta["stats"]["tokens_pruned"]`
   (tokens the bounded table forgot), beside the generator's estimate of distinct tokens in
   the file, to show the table stays bounded as rows grow;
4. runs the same `prepare` again on the same file and folder (must reuse the cache);
5. in a subprocess pinned to one core (`os.sched_setaffinity(0, {0})`,
   `torch.set_num_threads(1)`), loads the splits from the cache and times a full shuffled pass
   of `Split.batches` over the training split (80 % of the rows) with batch sizes 256 and 1024
   (target: >= 1 M titles/s on one core).

The machine's load average is printed with every measurement: other work on the machine
(training, say) slows everything here. Files are deleted at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SEED = 0


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load()}] {msg}", flush=True)


def run_child(cmd: list[str], *, capture: bool = True) -> tuple[float, float, str]:
    """Run `cmd`; return (wall seconds, peak RSS MB of that child alone, stdout)."""
    env = dict(os.environ, COLUMNS="200", PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        text=True,
        env=env,
    )
    output = proc.stdout.read() if capture else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output}")
    return wall, usage.ru_maxrss / 1024, output  # Linux: ru_maxrss in KiB


def ensure_file(workdir: Path, rows: int) -> tuple[Path, dict]:
    """The synthetic CSV for `rows`, written now or reused (checked against its sidecar)."""
    path = workdir / f"titles-{rows}-s{SEED}.csv"
    sidecar = path.with_suffix(".json")
    if path.is_file() and sidecar.is_file():
        summary = json.loads(sidecar.read_text())
        if summary.get("rows") == rows and summary.get("bytes") == path.stat().st_size:
            log(f"reusing {path} ({summary['bytes'] / 1e6:,.0f} MB)")
            return path, summary
    log(f"writing {rows:,} synthetic rows to {path}")
    synth = Path(__file__).with_name("synth.py")
    command = [sys.executable, str(synth), "--rows", str(rows), "--output", str(path)]
    wall, rss, out = run_child([*command, "--seed", str(SEED)])
    summary = json.loads(out.strip().splitlines()[-1])
    sidecar.write_text(json.dumps(summary))
    log(
        f"  wrote {summary['bytes'] / 1e6:,.0f} MB in {wall:.1f} s "
        f"({rows / wall:,.0f} rows/s, peak RSS {rss:,.0f} MB)"
    )
    return path, summary


SETTINGS: list[str] = []  # `--set key=value` for every prepare (from --set)


def prepare_cmd(csv: Path, out: Path) -> list[str]:
    sets = [a for kv in SETTINGS for a in ("--set", kv)]
    return [
        sys.executable,
        "-m",
        "prodcat.cli.main",
        "data",
        "prepare",
        "--input",
        str(csv),
        "--output",
        str(out),
        "--quiet",
        *sets,
    ]


def cache_folder(out: Path, csv: Path) -> Path:
    folders = [p.parent for p in out.glob(f"{csv.name}-*/meta.json")]
    if len(folders) != 1:
        raise RuntimeError(f"expected one cache folder in {out}, found {folders}")
    return folders[0]


def measure_prepare(csv: Path, out: Path, rows: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    log(f"prepare {csv.name} (fresh cache)")
    load_before = os.getloadavg()[0]
    wall, rss, text = run_child(prepare_cmd(csv, out))
    for line in text.strip().splitlines():
        print("    " + line)
    log(f"  {wall:.1f} s, {rows / wall:,.0f} rows/s, peak RSS {rss:,.0f} MB")
    from prodcat.data.cache import EncodedFile

    cache = EncodedFile(cache_folder(out, csv))
    stats = cache.meta["stats"]
    disk = sum(p.stat().st_size for p in cache.folder.iterdir())
    result = {
        "prepare_s": wall,
        "rows_per_s": rows / wall,
        "peak_rss_mb": rss,
        "cache_rows": cache.n_rows,
        "tokens_kept": len(cache.vocabulary),
        "tokens_pruned": stats["tokens_pruned"],
        "truncated": stats["truncated_titles"],
        "cache_mb": disk / 1e6,
        "model_vocab": len((out / "vocab.txt").read_text(encoding="utf-8").splitlines()),
        "load": max(load_before, os.getloadavg()[0]),
    }
    log(
        f"  cache: {cache.n_rows:,} rows, {disk / 1e6:,.0f} MB on disk, "
        f"{result['tokens_kept']:,} tokens kept, {result['tokens_pruned']:,} pruned"
    )
    log("prepare again (cache reuse)")
    wall2, rss2, _ = run_child(prepare_cmd(csv, out))
    if len(list(out.glob(f"{csv.name}-*/meta.json"))) != 1:
        raise RuntimeError("the second prepare wrote a new cache folder")
    log(f"  {wall2:.1f} s, peak RSS {rss2:,.0f} MB")
    result.update(reuse_s=wall2, reuse_rss_mb=rss2)
    return result


def baseline_rss() -> tuple[float, float]:
    """Seconds and peak RSS of a process that only imports what `prepare` imports."""
    wall, rss, _ = run_child(
        [sys.executable, "-c", "import prodcat.cli.main, prodcat.data.dataset"]
    )
    return wall, rss


def measure_batches(csv: Path, out: Path, batch_sizes: list[int], max_titles: int | None) -> dict:
    log(f"batches over the cache of {csv.name}, one core, batch sizes {batch_sizes}")
    cmd = [
        sys.executable,
        __file__,
        "_batches",
        "--input",
        str(csv),
        "--output",
        str(out),
        "--batch-sizes",
        *map(str, batch_sizes),
    ]
    if max_titles:
        cmd += ["--max-titles", str(max_titles)]
    if SETTINGS:
        cmd += ["--set", *SETTINGS]
    _, rss, text = run_child(cmd)
    result = json.loads(text.strip().splitlines()[-1])
    for bs, r in result["passes"].items():
        log(
            f"  batch {bs}: {r['titles']:,} titles in {r['seconds']:.2f} s = "
            f"{r['titles_per_s'] / 1e6:.2f} M titles/s ({r['batches']:,} batches, load {r['load']})"
        )
    log(
        f"  load_splits from the cache {result['load_splits_s']:.1f} s; "
        f"child peak RSS {rss:,.0f} MB"
    )
    result["rss_mb"] = rss
    return result


def batches_child(args: argparse.Namespace) -> None:
    """Child process: one core, one thread; time full shuffled passes of Split.batches."""
    os.sched_setaffinity(0, {0})
    import torch

    torch.set_num_threads(1)
    from prodcat.config import build_config
    from prodcat.data.dataset import load_splits

    overrides = dict(kv.split("=", 1) for kv in args.set or [])
    cfg = build_config(overrides={**overrides, "data.cache_dir": str(args.output)})
    started = time.perf_counter()
    splits = load_splits(cfg.data, args.input)
    load_s = time.perf_counter() - started
    split = splits.train
    passes = {}
    for bs in args.batch_sizes:
        titles = batches = 0
        checksum = 0
        started = time.perf_counter()
        for batch in split.batches(bs, shuffle=True, seed=0, epoch=bs):
            titles += len(batch)
            batches += 1
            checksum += int(batch.lengths[0])  # touch the batch
            if args.max_titles and titles >= args.max_titles:
                break
        seconds = time.perf_counter() - started
        passes[bs] = {
            "titles": titles,
            "batches": batches,
            "seconds": seconds,
            "titles_per_s": titles / seconds,
            "load": load(),
        }
    print(
        json.dumps(
            {
                "load_splits_s": load_s,
                "train_rows": len(split),
                "passes": passes,
                "affinity": sorted(os.sched_getaffinity(0)),
                "threads": torch.get_num_threads(),
            }
        )
    )


def profile_prepare(csv: Path, workdir: Path, top: int = 30) -> None:
    """cProfile one `prepare` (fresh cache) and print where the time goes."""
    import pstats

    out = workdir / f"profile-{csv.stem}"
    shutil.rmtree(out, ignore_errors=True)
    prof = workdir / f"prepare-{csv.stem}.prof"
    log(f"profiling prepare of {csv.name}")
    cmd = [
        sys.executable,
        "-m",
        "cProfile",
        "-o",
        str(prof),
        "-m",
        "prodcat.cli.main",
        *prepare_cmd(csv, out)[3:],
    ]
    wall, rss, _ = run_child(cmd)
    log(f"  {wall:.1f} s under cProfile")
    stats = pstats.Stats(str(prof))
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    shutil.rmtree(out, ignore_errors=True)


def table(results: list[dict]) -> str:
    head = (
        "| rows | file MB | prepare s | rows/s | peak RSS MB | tokens kept | tokens pruned "
        "| model vocab | cache reuse s | batches 256 titles/s | batches 1024 titles/s | load |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        p = r["batches"]["passes"]
        lines.append(
            f"| {r['rows']:,} | {r['file_mb']:,.0f} | {r['prepare_s']:.1f} "
            f"| {r['rows_per_s']:,.0f} "
            f"| {r['peak_rss_mb']:,.0f} | {r['tokens_kept']:,} | {r['tokens_pruned']:,} "
            f"| {r['model_vocab']:,} | {r['reuse_s']:.1f} "
            f"| {p.get('256', {}).get('titles_per_s', float('nan')) / 1e6:.2f} M "
            f"| {p.get('1024', {}).get('titles_per_s', float('nan')) / 1e6:.2f} M "
            f"| {r['load']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_batches"]:
        p = argparse.ArgumentParser()
        p.add_argument("--input", type=Path, required=True)
        p.add_argument("--output", type=Path, required=True)
        p.add_argument("--batch-sizes", type=int, nargs="+", required=True)
        p.add_argument("--max-titles", type=int)
        p.add_argument("--set", nargs="+")
        return batches_child(p.parse_args(argv[1:]))

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/prodcat-bench"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument(
        "--max-titles",
        type=int,
        default=None,
        help="stop each batch pass after this many titles (default: full pass)",
    )
    parser.add_argument("--skip-batches", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for prepare and the batch pass, e.g. "
        "--set data.cache_vocab=100000 (repeatable)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile `prepare` on the smallest row count"
    )
    parser.add_argument("--keep", action="store_true", help="keep the files in --workdir")
    args = parser.parse_args(argv)
    SETTINGS.extend(args.set)

    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, workdir {args.workdir}")
    base_s, base_rss = baseline_rss()
    log(
        f"baseline: importing prodcat's CLI and data layer takes {base_s:.1f} s, "
        f"peak RSS {base_rss:,.0f} MB"
    )
    results = []
    try:
        for rows in sorted(args.rows):
            csv, summary = ensure_file(args.workdir, rows)
            out = args.workdir / f"prepared-{rows}"
            r = {
                "rows": rows,
                "file_mb": csv.stat().st_size / 1e6,
                "distinct_tokens_in_file": summary.get("distinct_tokens"),
            }
            r.update(measure_prepare(csv, out, rows))
            log(
                f"  the generator estimates {summary.get('distinct_tokens', 0):,} distinct tokens "
                f"in the file"
            )
            if args.skip_batches:
                r["batches"] = {"passes": {}}
            else:
                r["batches"] = measure_batches(csv, out, args.batch_sizes, args.max_titles)
            results.append(r)
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
        if args.profile:
            csv, _ = ensure_file(args.workdir, min(args.rows))
            profile_prepare(csv, args.workdir)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    log(f"done in {time.perf_counter() - started:,.0f} s")
    print()
    print(table(results))
    print()
    print(
        "distinct tokens in the files (generator's estimate): "
        + ", ".join(f"{r['rows']:,} rows: {r['distinct_tokens_in_file']:,}" for r in results)
    )
    print(f"baseline RSS of the imports alone: {base_rss:,.0f} MB; load average now {load()}")
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()

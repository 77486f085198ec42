"""Training at scale: titles/s per family, data wait, peak memory, a full epoch, fastText.

Run (from the repository root)::

    .venv/bin/python benchmarks/train_scale.py                          # CPU or the GPU at hand
    .venv/bin/python benchmarks/train_scale.py --rows 20000000 --sample 0   # all rows, on a GPU
    .venv/bin/python benchmarks/train_scale.py --families mlp --ddp     # + torchrun 2 vs 1

1. writes a synthetic MercadoLibre-style CSV of `--rows` titles (`prodcat.synth`, seed 0,
   1,588 categories) under `--workdir`, reusing one written earlier;
2. per family, in a fresh subprocess (its own peak memory), trains one epoch of the
   family's config (`configs/FAMILY.yaml`) at a realistic batch size (larger on CUDA) on a
   seeded sample of the file's training rows (`--sample`, 0: all), through `prodcat.training.run`
   with tracking off, and reads from the run's history the training titles/s (the epoch's
   rows over its wall time, evaluation excluded) and `data_wait_share` (the loop's time
   waiting for the next batch over the epoch's time); peak memory is the child's peak RSS
   (`os.wait4`) and, on CUDA, `torch.cuda.max_memory_allocated`. RNNs train on
   length-bucketed batches (`data.bucket_by_length`);
3. extrapolates one MLP epoch over `--epoch-rows` (16 M, the challenge's training part) from
   the MLP's titles/s: measured on the sample, extrapolated, and said so in the table;
4. trains fastText (`fasttext-numpy2`, the `bench` extra) for one epoch on the same sample of
   titles with as many threads, dim 200 as the MLP config, and reports its titles/s (rows
   over wall time of `train_supervised`, its dictionary pass included);
5. with `--ddp`, trains the MLP sample under `torchrun --nproc-per-node 2` (one thread
   each) beside one process of two threads: the cost of DDP and of the sparse rows'
   all-gather on this machine.

The same script runs unchanged on CUDA (the device is `training.device: auto`). The load
average is printed: the figures of a shared machine are slower than an idle one's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("mlp", "cnn", "lstm", "gru")
# Batch sizes that keep the device busy; the configs' 256 is tuned for accuracy on 50 k rows.
BATCH = {
    "cpu": {"mlp": 1024, "cnn": 512, "lstm": 256, "gru": 256},
    "cuda": {"mlp": 8192, "cnn": 4096, "lstm": 2048, "gru": 2048},
}
# Rows trained per family on CPU (a few minutes in all on 2 cores); on CUDA, all of them.
SAMPLE = {"mlp": 300_000, "cnn": 40_000, "lstm": 20_000, "gru": 20_000}


def load() -> float:
    return os.getloadavg()[0]


def run_child(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run `cmd`; return (wall seconds, peak RSS MB of the child, its stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:6])}... failed with exit code {proc.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, out


def synth_file(workdir: Path, rows: int) -> Path:
    path = workdir / f"synth-{rows}.csv"
    if not path.is_file():
        from prodcat.synth import write_synthetic_titles

        started = time.perf_counter()
        write_synthetic_titles(path, rows, seed=0)
        print(f"wrote {path} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


def family_overrides(args, family: str, device: str) -> dict:
    sample = args.sample if args.sample is not None else (0 if device == "cuda" else SAMPLE[family])
    return {
        "data.train": str(args.file),
        "data.cache_dir": str(args.workdir / "cache"),
        "data.max_rows": sample or None,
        "data.validation_size": 2000,
        "data.test_size": 2000,
        "data.bucket_by_length": family in ("lstm", "gru"),
        "training.epochs": 1,
        "training.batch_size": args.batch_size or BATCH[device][family],
        "training.score_test": False,
        "training.checkpoint_minutes": None,
        "training.progress": False,
        "training.threads": args.threads,
        "tracking.enabled": False,
    }


def child_family(args) -> None:
    """Train one epoch of `args.child`; print one JSON line of its figures."""
    import torch

    from prodcat.config import build_config
    from prodcat.training.run import run

    family = args.child
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = build_config(
        ROOT / "configs" / f"{family}.yaml", overrides=family_overrides(args, family, device)
    )
    output = args.workdir / "runs" / family
    shutil.rmtree(output, ignore_errors=True)  # a run of other settings would be refused
    result = run(cfg, output)
    epoch = result.history[0]
    print(
        json.dumps(
            {
                "family": family,
                "device": result.device,
                "rows": result.train_rows,
                "batch_size": result.batch_size,  # what `auto` found, if asked
                "titles_per_second": epoch["train_titles_per_second"],
                "data_wait_share": epoch["data_wait_share"],
                "gpu_peak_mb": (
                    torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
                ),
                "validation_bac": result.validation.balanced_accuracy,
            }
        )
    )


def child_fasttext(args) -> None:
    """fastText, one epoch over the first `sample` training rows of the file, same threads."""
    import csv

    import fasttext

    rows = args.sample if args.sample else SAMPLE["mlp"]
    path = args.workdir / f"fasttext-{rows}.txt"
    with open(args.file, encoding="utf-8", newline="") as f, open(path, "w") as out:
        for i, row in enumerate(csv.DictReader(f)):
            if i == rows:
                break
            out.write(f"__label__{row['category']} {row['title'].lower()}\n")
    started = time.perf_counter()
    fasttext.train_supervised(
        str(path), epoch=1, dim=200, lr=0.5, thread=args.threads, minCount=1, verbose=0
    )
    seconds = time.perf_counter() - started
    print(json.dumps({"family": "fastText", "rows": rows, "titles_per_second": rows / seconds}))


def ddp_cost(args) -> list[dict]:
    """MLP sample: 1 process of 2 threads vs torchrun 2 processes of 1 thread each."""
    overrides = family_overrides(args, "mlp", "cpu")
    overrides.pop("training.threads")
    sets = [f"--set={k}={json.dumps(v)}" for k, v in overrides.items() if k != "data.train"]
    train = ["-m", "prodcat", "train", "--config", "configs/mlp.yaml", "--train", str(args.file)]
    rows = []
    for name, launcher, threads in (
        ("1 process x 2 threads", [], 2),
        (
            "torchrun 2 processes x 1 thread",
            ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"],
            1,
        ),
    ):
        cmd = [sys.executable, *launcher, *train, "--json", "--quiet", *sets,
               f"--set=training.threads={threads}",
               "--output", str(args.workdir / "runs" / f"ddp-{threads}")]  # fmt: skip
        shutil.rmtree(args.workdir / "runs" / f"ddp-{threads}", ignore_errors=True)
        seconds, rss, out = run_child(cmd)
        result = json.loads(out)
        rows.append(
            {
                "setup": name,
                "titles_per_second": result["history"][0]["train_titles_per_second"],
                "data_wait_share": result["history"][0]["data_wait_share"],
                "load": load(),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic file")
    parser.add_argument("--sample", type=int, default=None, help="rows trained (0: all)")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument(
        "--batch-size",
        type=lambda v: v if v == "auto" else int(v),
        default=None,
        help="rows per step for every family (default: per family and device); auto: the "
        "largest that fits on the GPU",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--epoch-rows", type=int, default=16_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/prodcat-train-scale"))
    parser.add_argument("--no-fasttext", action="store_true")
    parser.add_argument("--ddp", action="store_true", help="also torchrun 2 processes vs 1")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        (child_fasttext if args.child == "fasttext" else child_family)(args)
        return

    args.file = synth_file(args.workdir, args.rows)
    passed = [
        "--file", str(args.file), "--workdir", str(args.workdir), "--threads", str(args.threads),
        *(["--sample", str(args.sample)] if args.sample is not None else []),
        *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
    ]  # fmt: skip
    results = []
    for family in args.families.split(","):
        cmd = [sys.executable, __file__, "--child", family, *passed]
        _, rss, out = run_child(cmd)
        figures = json.loads(out.strip().splitlines()[-1])
        figures.update(peak_rss_mb=rss, load=load())
        results.append(figures)
        print(json.dumps(figures), file=sys.stderr)
    fasttext = None
    if args.no_fasttext:
        pass
    elif importlib.util.find_spec("fasttext") is None:
        print("fastText not installed: pip install -e '.[bench]'", file=sys.stderr)
    else:
        _, rss, out = run_child([sys.executable, __file__, "--child", "fasttext", *passed])
        fasttext = {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mb": rss, "load": load()}
    ddp = ddp_cost(args) if args.ddp else []

    print(f"\n{args.file.name}, {args.threads} threads, {results[0]['device']}\n")
    print("| family | batch | rows trained | titles/s | data wait | peak RSS MB | peak GPU MB "
          "| validation BAC | load |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        gpu = f"{r['gpu_peak_mb']:,.0f}" if r["gpu_peak_mb"] is not None else "-"
        print(
            f"| {r['family']} | {r['batch_size']} | {r['rows']:,} | {r['titles_per_second']:,.0f} "
            f"| {100 * r['data_wait_share']:.1f} % | {r['peak_rss_mb']:,.0f} | {gpu} "
            f"| {r['validation_bac']:.3f} | {r['load']:.1f} |"
        )
    if fasttext:
        print(
            f"| fastText (1 epoch, dim 200) | - | {fasttext['rows']:,} "
            f"| {fasttext['titles_per_second']:,.0f} | - | {fasttext['peak_rss_mb']:,.0f} | - "
            f"| - | {fasttext['load']:.1f} |"
        )
    mlp = next((r for r in results if r["family"] == "mlp"), None)
    if mlp:
        minutes = args.epoch_rows / mlp["titles_per_second"] / 60
        line = (
            f"\nOne MLP epoch over {args.epoch_rows:,} rows: {minutes:.1f} min, extrapolated "
            f"from {mlp['rows']:,} rows at {mlp['titles_per_second']:,.0f} titles/s"
        )
        if fasttext:
            ft = args.epoch_rows / fasttext["titles_per_second"] / 60
            line += f" (fastText: {ft:.1f} min, extrapolated likewise)"
        print(line)
    if ddp:
        print("\n| MLP, same sample | titles/s | data wait | load |\n|---|---|---|---|")
        for r in ddp:
            print(
                f"| {r['setup']} | {r['titles_per_second']:,.0f} "
                f"| {100 * r['data_wait_share']:.1f} % | {r['load']:.1f} |"
            )
    out = ROOT / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / "train_scale.json").write_text(
        json.dumps({"families": results, "fasttext": fasttext, "ddp": ddp}, indent=1)
    )


if __name__ == "__main__":
    main()

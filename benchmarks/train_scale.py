"""Training at scale: titles/s per family, data wait, peak memory, a full epoch, fastText.

Run (from the repository root)::

    .venv/bin/python benchmarks/train_scale.py                          # CPU or the GPU at hand
    .venv/bin/python benchmarks/train_scale.py --rows 20000000 --sample 0   # all rows, on a GPU
    .venv/bin/python benchmarks/train_scale.py --families mlp --ddp     # + torchrun 2 vs 1
    .venv/bin/python benchmarks/train_scale.py --rows 20000000 --threads 1 --full-epoch

1. writes a synthetic MercadoLibre-style CSV of `--rows` titles (`benchmarks/synth.py`, seed 0,
   1,588 categories) under `--workdir`, reusing one written earlier;
2. per family, in a fresh subprocess (its own peak memory), trains one epoch of the
   family's config (`configs/FAMILY.yaml`) at a realistic batch size (larger on CUDA) on a
   seeded sample of the file's training rows (`--sample`, 0: all), through `prodcat.workflow.run`
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

`--full-epoch` instead measures one whole MLP epoch over every training row of the file
(`--rows 20000000`: 16 M training rows, 10 % validation and 10 % test split off), with
validation on a fixed 100 k-row sample (`training.validation_rows_during`; the end scores
all validation and test rows, or `--eval-rows` of each) and in-epoch
checkpoints every `--checkpoint-minutes`. `--kill-after` seconds after the first in-epoch
checkpoint the run is killed with SIGKILL, then resumed with `resume=True` in a new process,
which must go on from that checkpoint's step and finish the epoch (and the evaluation
at the end). Reported: each part's wall time and peak RSS, the work lost to the kill, the
time to resume (process start to first step), checkpoint sizes and write times, the epoch's
titles/s and data wait, the steps/s of every 1,000 steps, and each step of the end (seconds,
peak RSS so far); then fastText's titles/s on the file's first `--fasttext-rows` rows,
extrapolated to the epoch (said so). Raw figures go to
`benchmarks/out/train_scale_full_epoch.json`.

The same script runs unchanged on CUDA (the device is `training.device: auto`). The load
average is printed: the figures of a shared machine are slower than an idle one's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import threading
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
# --full-epoch: a progress event every so many steps (the rate through the epoch).
PROGRESS_STEPS = 1000


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
        from synth import write_synthetic_titles  # benchmarks/synth.py

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
    from prodcat.workflow import run

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


def child_full_epoch(args) -> None:
    """One MLP epoch over all the file's training rows; JSON lines of events on stdout."""
    import torch

    from prodcat.config import build_config
    from prodcat.data.dataset import Split
    from prodcat.training import loop
    from prodcat.training.callbacks import Callback
    from prodcat.workflow import prepare_data, run

    def emit(event: str, **figures) -> None:
        print(json.dumps({"event": event, "time": time.time(), **figures}), flush=True)

    emit("start")
    # Once the head fits, most softmax probabilities are subnormal floats; on x86 CPUs the
    # backward pass through them ran 7.5x slower (395 vs 53 ms a step, 2026-11-29). The
    # training loop now sets flushing on CPU itself, whatever this flag says.
    torch.set_flush_denormal(args.flush_denormal)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    overrides = {
        **family_overrides(args, "mlp", device),
        "data.max_rows": None,
        "data.validation_size": 0.1,
        "data.test_size": 0.1,
        # All rows by default: the end once ran a 24 GB machine out of memory at 2 M
        # validation rows (fixed: sampled calibration, predictions filled in place).
        "data.validation_max_rows": args.eval_rows or None,
        "data.test_max_rows": args.eval_rows or None,
        "training.validation_rows_during": args.validation_rows,
        "training.checkpoint_minutes": args.checkpoint_minutes,
        "training.score_test": True,
    }
    cfg = build_config(ROOT / "configs" / "mlp.yaml", overrides=overrides)
    started = time.perf_counter()
    splits = prepare_data(cfg)
    emit("prepared", seconds=time.perf_counter() - started, train_rows=len(splits.train))

    save = loop.save_checkpoint
    writes = []

    def timed_save(folder, state):
        started = time.perf_counter()
        path = save(folder, state)
        writes.append(time.perf_counter() - started)
        return path

    loop.save_checkpoint = timed_save

    def timed(name, function):  # the end's steps: seconds, rows and peak RSS so far
        def call(*args, **kwargs):
            started = time.perf_counter()
            out = function(*args, **kwargs)
            split = next((a for a in args if isinstance(a, Split)), None)
            emit("call", name=name, seconds=time.perf_counter() - started,
                 rows=len(split) if split is not None else None,
                 peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # fmt: skip
            return out

        return call

    for name in ("evaluate_split", "calibrate_split", "write_model_files", "save_predictions"):
        setattr(loop, name, timed(name, getattr(loop, name)))

    class Events(Callback):
        first = True

        def on_run_start(self, run_info) -> None:
            partial = run_info.state.partial or {}
            emit("run_start", resumed=run_info.resumed, from_step=partial.get("step", 0),
                 batches=run_info.batches_per_epoch)  # fmt: skip

        def on_batch_end(self, run_info, step, rows) -> None:
            if self.first:
                self.first = False
                emit("first_step", step=step)
            elif step % PROGRESS_STEPS == 0:
                emit("progress", step=step)

        def on_checkpoint(self, run_info, path) -> None:
            partial = run_info.state.partial
            emit("checkpoint", step=partial["step"] if partial else None,
                 trained_seconds=partial["seconds"] if partial else None,
                 write_seconds=writes[-1], mb=path.stat().st_size / 2**20)  # fmt: skip

        def on_epoch_end(self, run_info, record) -> None:
            emit("epoch_end", **record)

    result = run(cfg, args.workdir / "runs" / "full-epoch", resume=args.resume,
                 callbacks=[Events()], splits=splits)  # fmt: skip
    emit("result", validation_bac=result.validation.balanced_accuracy,
         test_bac=result.test.balanced_accuracy if result.test else None)  # fmt: skip


def rate_summary(spans: list[dict]) -> tuple[float, float, float]:
    rates = sorted(s["steps_per_second"] for s in spans) or [float("nan")]
    return rates[0], rates[len(rates) // 2], rates[-1]


def run_events(cmd: list[str], kill_after_checkpoint: float | None = None) -> dict:
    """Run a `child_full_epoch`; collect its events; SIGKILL it `kill_after_checkpoint`
    seconds after its first in-epoch checkpoint, if given."""
    launched = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True)
    reader.start()  # no proc.poll(): it would reap the child before os.wait4 reads its usage
    events, kill_at, killed = [], None, None
    while reader.is_alive() or not lines.empty():
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            line = ""
        if line.startswith("{"):
            events.append(json.loads(line))
            print(line.strip(), file=sys.stderr)
            e = events[-1]
            if (kill_after_checkpoint is not None and kill_at is None
                    and e["event"] == "checkpoint" and e["step"]):  # fmt: skip
                kill_at = time.time() + kill_after_checkpoint
        if kill_at is not None and time.time() >= kill_at:
            proc.send_signal(signal.SIGKILL)
            killed = time.time()
            break
    _, status, usage = os.wait4(proc.pid, 0)
    ended = killed or time.time()
    code = os.waitstatus_to_exitcode(status)
    if killed is None and code:
        raise SystemExit(f"the full-epoch run failed with exit code {code}")
    return {"launched": launched, "ended": ended, "killed": killed is not None,
            "wall_seconds": ended - launched, "peak_rss_mb": usage.ru_maxrss / 1024,
            "events": events}  # fmt: skip


def full_epoch(args) -> None:
    """Step by step: train, kill mid-epoch, resume, finish; then fastText on a subset."""
    args.file = synth_file(args.workdir, args.rows)
    shutil.rmtree(args.workdir / "runs" / "full-epoch", ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", "full-epoch", "--file", str(args.file),
           "--workdir", str(args.workdir), "--threads", str(args.threads),
           "--validation-rows", str(args.validation_rows),
           "--checkpoint-minutes", str(args.checkpoint_minutes),
           "--eval-rows", str(args.eval_rows),
           *(["--flush-denormal"] if args.flush_denormal else []),
           *(["--batch-size", str(args.batch_size)] if args.batch_size else [])]  # fmt: skip
    load_before = os.getloadavg()
    first = run_events(cmd, kill_after_checkpoint=args.kill_after)
    load_killed = os.getloadavg()
    if not first["killed"]:
        raise SystemExit("the run ended before it was killed: lower --kill-after")
    second = run_events([*cmd, "--resume"])
    load_after = os.getloadavg()

    def one(part, name):
        return next(e for e in part["events"] if e["event"] == name)

    def all_of(part, name):
        return [e for e in part["events"] if e["event"] == name]

    saved = [e for e in all_of(first, "checkpoint") if e["step"]][-1]  # what the resume reads
    trained1 = first["ended"] - one(first, "first_step")["time"]
    epoch = one(second, "epoch_end")
    trained2 = epoch["time"] - one(second, "first_step")["time"]
    rows = one(first, "prepared")["train_rows"]
    resumed_at = one(second, "run_start")["from_step"]
    checkpoints = all_of(first, "checkpoint") + all_of(second, "checkpoint")
    spans = []  # steps/s between progress events of one process (no checkpoint write inside)
    for part in (first, second):
        marks = all_of(part, "progress")
        writes = [e["time"] for e in all_of(part, "checkpoint")]
        for a, b in zip(marks, marks[1:]):
            if not any(a["time"] < w <= b["time"] for w in writes):
                rate = (b["step"] - a["step"]) / (b["time"] - a["time"])
                spans.append({"to_step": b["step"], "steps_per_second": rate})
    end = [e for e in all_of(second, "call") if e["time"] > epoch["time"]]
    figures = {
        "file": args.file.name, "threads": args.threads, "train_rows": rows,
        "flush_denormal": args.flush_denormal, "eval_rows": args.eval_rows or None,
        "batch_size": args.batch_size or BATCH["cpu"]["mlp"],
        "batches": one(first, "run_start")["batches"],
        "load_before_after_kill_end": [load_before, load_killed, load_after],
        "prepare_seconds": [one(first, "prepared")["seconds"], one(second, "prepared")["seconds"]],
        "part1_wall_seconds": first["wall_seconds"], "part2_wall_seconds": second["wall_seconds"],
        "part1_peak_rss_mb": first["peak_rss_mb"], "part2_peak_rss_mb": second["peak_rss_mb"],
        "part1_training_seconds": trained1, "part2_training_seconds": trained2,
        "training_seconds": trained1 + trained2,
        "lost_seconds": trained1 - saved["trained_seconds"],
        "checkpoint_step": saved["step"], "resumed_from_step": resumed_at,
        "resume_seconds": one(second, "first_step")["time"] - second["launched"],
        "first_step_after_resume": one(second, "first_step")["step"],
        "titles_per_second_wall": rows / (trained1 + trained2),
        "titles_per_second_loop": epoch["train_titles_per_second"],
        "epoch_seconds_loop": epoch["epoch_seconds"],
        "data_wait_share": epoch["data_wait_share"],
        "validation_sample_bac": epoch["validation_balanced_accuracy"],
        "end_seconds": one(second, "result")["time"] - epoch["time"],
        "validation_bac": one(second, "result")["validation_bac"],
        "test_bac": one(second, "result")["test_bac"],
        "checkpoints": [{k: e[k] for k in ("step", "write_seconds", "mb")} for e in checkpoints],
        "rate_spans": spans,
        "end_steps": [{k: e[k] for k in ("name", "seconds", "rows", "peak_rss_mb")} for e in end],
    }  # fmt: skip
    if resumed_at != saved["step"] or figures["first_step_after_resume"] != saved["step"] + 1:
        raise SystemExit(f"resumed at step {resumed_at}, not the checkpoint's {saved['step']}")
    fasttext = None
    if args.fasttext_rows and importlib.util.find_spec("fasttext") is not None:
        ft_cmd = [sys.executable, __file__, "--child", "fasttext", "--file", str(args.file),
                  "--workdir", str(args.workdir), "--threads", str(args.threads),
                  "--sample", str(args.fasttext_rows)]  # fmt: skip
        _, rss, out = run_child(ft_cmd)
        fasttext = {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mb": rss,
                    "load": load(), "extrapolated_epoch_seconds": None}  # fmt: skip
        fasttext["extrapolated_epoch_seconds"] = rows / fasttext["titles_per_second"]
    figures["fasttext"] = fasttext

    f = figures
    print(f"\n{f['file']}: one MLP epoch over {rows:,} training rows, batch {f['batch_size']}, "
          f"{args.threads} thread(s), flush denormal {args.flush_denormal}, killed and resumed "
          "once (load "
          + " / ".join(f"{x[0]:.1f}" for x in f["load_before_after_kill_end"]) + ")\n")  # fmt: skip
    print("| figure | value |\n|---|---|")
    table = [
        ("training wall (both parts, lost work included)",
         f"{f['training_seconds'] / 60:.1f} min"),
        ("titles/s over that wall", f"{f['titles_per_second_wall']:,.0f}"),
        ("titles/s, the loop's own (lost work excluded)", f"{f['titles_per_second_loop']:,.0f}"),
        ("data wait", f"{100 * f['data_wait_share']:.2f} %"),
        ("resumed from step (the checkpoint's)",
         f"{f['resumed_from_step']:,} of {f['batches']:,}"),
        ("work lost to the kill", f"{f['lost_seconds']:.0f} s"),
        ("resume: process start to first step", f"{f['resume_seconds']:.1f} s"),
        ("cache prepare / reuse",
         f"{f['prepare_seconds'][0]:.0f} s / {f['prepare_seconds'][1]:.0f} s"),
        ("checkpoint size (in-epoch ..., after the epoch)",
         ", ".join(f"{c['mb']:,.0f} MB" for c in f["checkpoints"])),
        ("checkpoint write", ", ".join(f"{c['write_seconds']:.1f} s" for c in f["checkpoints"])),
        ("peak RSS part 1 / part 2",
         f"{f['part1_peak_rss_mb']:,.0f} / {f['part2_peak_rss_mb']:,.0f} MB"),
        ("wall of each process",
         f"{f['part1_wall_seconds']:.0f} s / {f['part2_wall_seconds']:.0f} s"),
        (f"steps/s per {PROGRESS_STEPS:,} steps (min / median / max of {len(spans)})",
         " / ".join(f"{x:.1f}" for x in rate_summary(spans))),
        ("end: checkpoint + validation + calibration + test + save", f"{f['end_seconds']:.0f} s"),
        *((f"- {e['name']} ({e['rows']:,} rows)" if e["rows"] else f"- {e['name']}",
           f"{e['seconds']:.1f} s, peak RSS so far {e['peak_rss_mb']:,.0f} MB") for e in end),
        ("validation BAC: sample / all; test BAC",
         f"{f['validation_sample_bac']:.3f} / {f['validation_bac']:.3f}; {f['test_bac']:.3f}"),
    ]  # fmt: skip
    if fasttext:
        minutes = fasttext["extrapolated_epoch_seconds"] / 60
        table.append((f"fastText, {fasttext['rows']:,} rows measured",
                      f"{fasttext['titles_per_second']:,.0f} titles/s; epoch over {rows:,} "
                      f"rows {minutes:.0f} min (extrapolated)"))  # fmt: skip
    for name, value in table:
        print(f"| {name} | {value} |")
    out = ROOT / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    path = out / "train_scale_full_epoch.json"
    previous = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps([*previous, figures], indent=1))


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
    parser.add_argument(
        "--full-epoch",
        action="store_true",
        help="one MLP epoch over all training rows of --rows, killed once and resumed",
    )
    parser.add_argument("--checkpoint-minutes", type=float, default=3.0)
    parser.add_argument(
        "--kill-after", type=float, default=90.0, help="seconds after the first checkpoint"
    )
    parser.add_argument("--validation-rows", type=int, default=100_000)
    parser.add_argument("--fasttext-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--eval-rows", type=int, default=0, help="validation and test rows kept (0: all)"
    )
    parser.add_argument(
        "--flush-denormal",
        action="store_true",
        help="torch.set_flush_denormal(True) in the full-epoch run (no longer needed: the "
        "training loop sets it on CPU)",
    )
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        children = {"fasttext": child_fasttext, "full-epoch": child_full_epoch}
        children.get(args.child, child_family)(args)
        return
    if args.full_epoch:
        full_epoch(args)
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

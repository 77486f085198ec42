"""Deployment benchmark (issue 23): accuracy, what serving a model reads, and one title's
latency, for prodcat's configs beside fastText (plain and quantised) and the TF-IDF SVM, all
in one run on the same split and machine.

    .venv/bin/python benchmarks/deploy.py --seeds 3                       # the issue's table
    .venv/bin/python benchmarks/deploy.py --configs fast --seeds 1 --skip-svm  # one quick row

The split is benchmarks/quality.py's (meli-es-51k, 80/20 stratified, seed 0); prodcat carves
its validation rows from the training part. For every tool and seed: test balanced accuracy
(BAC) over all test titles; the bytes a runtime reads to serve the model (fastText's .bin or
.ftz; the SVM's pickle; prodcat's torch runtime: the model folder's config, labels,
calibration, featurizer and weights, members included; its ONNX runtime: the same small files
and the exported graph); and one title's latency, the p50 (and p99) of `predict([title])` over
2,000 test titles, after 1,000 training titles warmed caches up, on one thread (torch,
ONNX Runtime and fastText alike). Each prodcat model is exported to ONNX unquantised and with
`--quantize int8` (and float16 where asked); each export's top-1 agreement with the torch model
on the 2,000 titles and its own test BAC are reported.

BAC is mean ± std over the seeds; sizes and latencies are seed 0's (the same network shapes
every seed), and each latency is also given as a ratio to fastText's p50 in this same run.
The table goes to stdout and to --out/deploy.md, the raw numbers to --out/deploy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DATA, FASTTEXT, ROOT, fit_svm, load, log, make_split, words  # noqa: E402

LATENCY_TITLES, WARMUP_TITLES = 2000, 1000
# What a runtime reads of a model folder (members' folders alike); the rest of a finished
# run's folder (predictions, plots, reports, metrics) is for people.
SERVED = {"config.yaml", "labels.txt", "calibration.json", "featurizer.json", "vocab.txt"}
SERVED |= {"ensemble.json", "model.safetensors"}


def served_bytes(folder: Path, graph: Path | None = None) -> int:
    """Bytes the torch runtime reads of `folder` (graph None), or the ONNX runtime (the
    small files and `graph`): members' folders and a transformer's tokenizer included."""
    total = graph.stat().st_size if graph is not None else 0
    for path in folder.rglob("*"):
        if not path.is_file() or (graph is not None and path.name == "model.safetensors"):
            continue
        if path.name in SERVED or "transformer" in path.relative_to(folder).parts:
            total += path.stat().st_size
    return total


def timings(predict, titles: list[str], warmup: list[str]) -> list[float]:
    """Seconds of each predict([title]) over `titles`, after `warmup`."""
    for title in warmup:
        predict([title])
    times = []
    for title in titles:
        started = time.perf_counter()
        predict([title])
        times.append(time.perf_counter() - started)
    return times


def latency(predict, titles: list[str], warmup: list[str]) -> tuple[float, float]:
    """p50 and p99 seconds of predict([title]) over `titles`, after `warmup`."""
    times = timings(predict, titles, warmup)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def fasttext_predict(model):
    """fastText's predict over raw titles, as prodcat's: the titles' words as trained."""
    return lambda batch: model.predict([words(t) for t in batch])


def bac(test: list[dict], predicted: list[str]) -> float:
    return float(balanced_accuracy_score([r["category"] for r in test], predicted))


# -- the reference tools ------------------------------------------------------------------


def fasttext_rows(train, test, out: Path, seed: int, warmup: list[str]) -> list[dict]:
    import fasttext

    path = out / "fasttext-train.txt"
    path.write_text(
        "".join(f"__label__{r['category']} {words(r['title'])}\n" for r in train), encoding="utf-8"
    )
    titles = [r["title"] for r in test[:LATENCY_TITLES]]
    rows = []
    started = time.perf_counter()
    model = fasttext.train_supervised(str(path), verbose=0, seed=seed, **FASTTEXT)
    seconds = time.perf_counter() - started
    for name in ("fastText", "fastText quantised"):
        if name == "fastText quantised":
            started = time.perf_counter()
            model.quantize(input=str(path), retrain=True, cutoff=100_000, thread=2)
            seconds += time.perf_counter() - started
        file = out / ("fasttext.ftz" if "quantised" in name else "fasttext.bin")
        model.save_model(str(file))
        labels, _ = model.predict([words(r["title"]) for r in test])
        p50, p99 = latency(fasttext_predict(model), titles, warmup)
        rows.append(
            {
                "tool": name,
                "seed": seed,
                "bac": bac(test, [label[0].removeprefix("__label__") for label in labels]),
                "train_seconds": seconds,
                "torch_bytes": file.stat().st_size,
                "torch_p50": p50,
                "torch_p99": p99,
            }
        )
    return rows


def svm_row(train, test, out: Path, warmup: list[str]) -> dict:
    model, seconds = fit_svm(train)
    file = out / "svm.pkl"
    file.write_bytes(pickle.dumps(model))
    p50, p99 = latency(model.predict, [r["title"] for r in test[:LATENCY_TITLES]], warmup)
    return {
        "tool": "TF-IDF + LinearSVC",
        "seed": 0,
        "bac": bac(test, list(model.predict([r["title"] for r in test]))),
        "train_seconds": seconds,
        "torch_bytes": file.stat().st_size,
        "torch_p50": p50,
        "torch_p99": p99,
    }


# -- prodcat ------------------------------------------------------------------------------


def prodcat_row(
    name: str, split: Path, test: list[dict], out: Path, seed: int, warmup, quantize, overrides
) -> dict:
    import torch

    from prodcat import Classifier
    from prodcat.config import build_config
    from prodcat.serving.onnx_runtime import OnnxClassifier
    from prodcat.workflow import run

    folder = out / f"{name}-seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    fixed = ["data.test_size=0", "training.progress=false", "tracking.enabled=false"]
    fixed += [f"training.seed={seed}", *overrides]
    cfg = build_config(ROOT / "configs" / f"{name}.yaml", fixed)
    cfg.data.train, cfg.data.test = split / "train.jsonl.gz", split / "test.jsonl.gz"
    teacher = folder.with_name(f"{folder.name}-teacher")
    if cfg.training.teacher is not None and cfg.training.teacher.suffix in (".yaml", ".yml"):
        # A teacher this benchmark trained already (best-cpu for compact), of the same seed
        # and split, is taught from, not trained again; its time counts all the same.
        mine = out / f"{cfg.training.teacher.stem}-seed{seed}"
        if (mine / "metrics.json").is_file():
            cfg.training.teacher = teacher = mine
    started = time.perf_counter()
    result = run(cfg, folder)
    wall = time.perf_counter() - started
    teacher_seconds = 0.0
    if (teacher / "metrics.json").is_file():  # a distilled config: its teacher's time counts
        teacher_seconds = json.loads((teacher / "metrics.json").read_text())["train_seconds"]
    row = {
        "tool": name,
        "seed": seed,
        "bac": result.test.balanced_accuracy,
        "train_seconds": result.train_seconds + teacher_seconds,
        "wall_seconds": wall,
        "torch_bytes": served_bytes(folder),
    }
    if seed != 0:  # sizes, latencies and exports: seed 0's
        return row
    titles = [r["title"] for r in test[:LATENCY_TITLES]]
    all_titles = [r["title"] for r in test]
    torch.set_num_threads(1)
    clf = Classifier.load(folder)
    reference = clf.predict(titles)
    row["torch_p50"], row["torch_p99"] = latency(clf.predict, titles, warmup)
    del clf
    for mode in ("none", *quantize):
        started = time.perf_counter()
        # As a user exports: one process each (best-cpu's export peaks at 6.7 GB; three in
        # this process, beside the sessions, ran a 24 GB machine out of memory).
        graph = folder / f"model.{mode}.onnx"
        command = [sys.executable, "-m", "prodcat", "export", str(folder), "--output", str(graph)]
        subprocess.run([*command, "--quantize", mode], check=True)
        onnx_clf = OnnxClassifier.load(folder, graph, threads=1)
        key = "onnx" if mode == "none" else f"onnx_{mode}"
        row[f"{key}_export_seconds"] = time.perf_counter() - started
        row[f"{key}_bytes"] = served_bytes(folder, graph)
        row[f"{key}_agreement"] = float(np.mean(np.array(onnx_clf.predict(titles)) == reference))
        row[f"{key}_bac"] = bac(test, onnx_clf.predict(all_titles))
        row[f"{key}_p50"], row[f"{key}_p99"] = latency(onnx_clf.predict, titles, warmup)
        del onnx_clf
    return row


def side_by_side(out: Path, test: list[dict], warmup: list[str], configs: list[str]) -> str:
    """One title's p50 / p99 of every seed-0 model in `out` (fastText's two files, each
    config's torch folder and exported graphs), measured again in turns, so that a busy
    moment of the machine falls on all alike: the titles in blocks of 250, each predictor
    answering a block in turn after 50 warm-up titles (title by title in turn, every model
    evicts the others' tables from the caches: fastText took 116 µs, not ~50)."""
    import fasttext
    import torch

    from prodcat import Classifier
    from prodcat.serving.onnx_runtime import OnnxClassifier

    predictors = {}
    for name in ("fasttext.bin", "fasttext.ftz"):
        predictors[name] = fasttext_predict(fasttext.load_model(str(out / name)))
    for config in configs:
        folder = out / f"{config}-seed0"
        predictors[f"{config} torch"] = Classifier.load(folder).predict
        for graph in sorted(folder.glob("model.*.onnx")):
            mode = graph.name.split(".")[1]
            predictors[f"{config} {mode}"] = OnnxClassifier.load(folder, graph, threads=1).predict
    torch.set_num_threads(1)
    titles = [row["title"] for row in test[:LATENCY_TITLES]]
    times = {name: [] for name in predictors}
    for start in range(0, len(titles), 250):
        for name, predict in predictors.items():
            block, warm = titles[start : start + 250], warmup[start // 5 : start // 5 + 50]
            times[name] += timings(predict, block, warm)
    reference = float(np.percentile(times["fasttext.bin"], 50))
    lines = ["| model | one title p50 µs (÷ fastText) | p99 µs |", "|---|---|---|"]
    for name, seconds in times.items():
        p50, p99 = np.percentile(seconds, 50), np.percentile(seconds, 99)
        lines.append(f"| {name} | {p50 * 1e6:,.0f} ({p50 / reference:.1f}×) | {p99 * 1e6:,.0f} |")
    return "\n".join(lines)


# -- the table ----------------------------------------------------------------------------


def mb(n: float | None) -> str:
    return "–" if n is None else (f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB")


def us(seconds: float | None, reference: float | None) -> str:
    if seconds is None:
        return "–"
    ratio = f" ({seconds / reference:.1f}×)" if reference else ""
    return f"{seconds * 1e6:,.0f} µs{ratio}"


def table(rows: list[dict], quantize: list[str]) -> str:
    tools = list(dict.fromkeys(r["tool"] for r in rows))
    first = {t: next(r for r in rows if r["tool"] == t and r["seed"] == 0) for t in tools}
    reference = first.get("fastText", {}).get("torch_p50")
    lines = [
        "| model | n | test BAC mean ± std | train s | served by torch (or as is) | one title p50 "
        "(÷ fastText) | ONNX: served | ONNX p50 | top-1 = torch | "
        + " | ".join(f"{q}: served | {q} p50 | {q} top-1 = torch | {q} BAC" for q in quantize)
        + " |",
        "|" + "---|" * (9 + 4 * len(quantize)),
    ]
    for tool in tools:
        runs = [r for r in rows if r["tool"] == tool]
        scores = [r["bac"] for r in runs]
        r0 = first[tool]
        std = f" ± {np.std(scores, ddof=1):.4f}" if len(scores) > 1 else ""
        cells = [
            tool,
            str(len(runs)),
            f"{np.mean(scores):.4f}{std}",
            f"{np.mean([r['train_seconds'] for r in runs]):.1f}",
            mb(r0.get("torch_bytes")),
            us(r0.get("torch_p50"), reference),
            mb(r0.get("onnx_bytes")),
            us(r0.get("onnx_p50"), reference),
            f"{r0['onnx_agreement']:.2%}" if "onnx_agreement" in r0 else "–",
        ]
        for q in quantize:
            key = f"onnx_{q}"
            cells += [
                mb(r0.get(f"{key}_bytes")),
                us(r0.get(f"{key}_p50"), reference),
                f"{r0[f'{key}_agreement']:.2%}" if f"{key}_agreement" in r0 else "–",
                f"{r0[f'{key}_bac']:.4f}" if f"{key}_bac" in r0 else "–",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="*", default=["mlp", "fast", "best-cpu", "compact"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--quantize", nargs="*", default=["int8"], help="int8, float16")
    parser.add_argument("--skip-svm", action="store_true")
    parser.add_argument("--skip-fasttext", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "deploy")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--keep", action="store_true", help="keep the rows --out/deploy.json has; run the rest"
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="only measure one title's latency again, of every seed-0 model in --out, in turns",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train, test, _, _ = make_split(args.data, args.out / "split")
    warmup = [r["title"] for r in train[:WARMUP_TITLES]]
    if args.side_by_side:
        before = load()
        markdown = side_by_side(args.out, test, warmup, args.configs)
        markdown += f"\n\nLoad before / after: {before} / {load()}.\n"
        (args.out / "side-by-side.md").write_text(markdown, encoding="utf-8")
        print(markdown)
        return 0
    kept = args.keep and (args.out / "deploy.json").is_file()
    rows = json.loads((args.out / "deploy.json").read_text()) if kept else []
    done = {(r["tool"], r["seed"]) for r in rows}

    def record(name: str, fn) -> None:
        tool, _, seed = name.rpartition(" ")
        if (tool, int(seed or 0)) in done:
            return
        before = load()
        log(f"{name} ...")
        got = fn()
        for row in got if isinstance(got, list) else [got]:
            row["load_before"], row["load_after"] = before, load()
            rows.append(row)
            log(f"{row['tool']} seed {row['seed']}: BAC {row['bac']:.4f}")
        (args.out / "deploy.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")

    if not args.skip_svm:
        record("TF-IDF + LinearSVC 0", lambda: svm_row(train, test, args.out, warmup))
    for seed in range(args.seeds):
        if not args.skip_fasttext:
            record(
                f"fastText {seed}", lambda s=seed: fasttext_rows(train, test, args.out, s, warmup)
            )
        for name in args.configs:
            record(
                f"{name} {seed}",
                lambda n=name, s=seed: prodcat_row(
                    n, args.out / "split", test, args.out, s, warmup, args.quantize, args.overrides
                ),
            )
    header = (
        f"Test split: {len(test):,} titles ({args.data.name}, 80/20 stratified, seed 0), "
        f"training on {len(train):,}. n seeds per tool (the SVM: one, it is deterministic); "
        f"sizes, latencies and ONNX figures from seed 0; one title = predict([title]) on one "
        f"thread, p50 over {LATENCY_TITLES:,} test titles after {WARMUP_TITLES:,} training "
        f"titles. {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {time.perf_counter() - started:,.0f} s in all."
    )
    markdown = header + "\n\n" + table(rows, args.quantize) + "\n"
    (args.out / "deploy.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

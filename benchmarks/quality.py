"""Quality benchmark: prodcat's families against fastText and a TF-IDF linear SVM.

Run (from the repository root)::

    .venv/bin/python benchmarks/quality.py                         # fastText, SVM, mlp cnn lstm
    .venv/bin/python benchmarks/quality.py --families mlp gru --skip-svm
    .venv/bin/python benchmarks/quality.py --families mlp --set training.epochs=3   # smoke run

What it does, all on the same machine and the same split:

1. reads `../shared/data/meli-es-51k.jsonl.gz` (50,939 Spanish MercadoLibre titles,
   632 categories), splits it 80/20 stratified by category (`train_test_split(...,
   stratify=category, random_state=0)`) and writes `train.jsonl.gz` / `test.jsonl.gz`
   (`title`, `category`) under `--out`/split;
2. fastText (`fasttext-numpy2`): lr=0.5, epoch=25, wordNgrams=2, dim=100, thread=2, on
   lower-cased `\\w+` tokens, labels `__label__CATEGORY` (the usual reference setting);
3. scikit-learn: word 1-2-gram TF-IDF + char_wb 2-5-gram TF-IDF (min_df=2) into
   `LinearSVC(C=0.5)`; a few minutes, `--skip-svm` skips it;
4. each prodcat family through `prodcat.training.run.run` (what `prodcat train --config
   configs/FAMILY.yaml --train train.jsonl.gz --test test.jsonl.gz --set data.test_size=0`
   calls): prodcat carves its validation split (early stopping, best epoch) from the 80 %
   training part, so nothing is tuned on the test rows.

For every tool it reports test balanced accuracy (BAC) and accuracy, the training time
(prodcat: `train_seconds` of the run's result, the epochs alone, and the call's wall time,
which adds reading, vocabulary, evaluation and saving, but not the interpreter's start-up),
titles/s (training rows x epochs / training seconds), and the differences to fastText:
BAC - fastText BAC and training time / fastText's. The table is printed and written to
`--out`/quality.md, the raw numbers to `--out`/quality.json.

The machine's load average is recorded before and after each tool: other work on the
machine slows every tool, and torch's multi-threaded kernels suffer most from it (the
configs set `training.threads: 1`, see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parent.parent
# ../shared beside the repository, as in the tests
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "meli-es-51k.jsonl.gz"
SEED = 0
FASTTEXT = dict(lr=0.5, epoch=25, wordNgrams=2, dim=100, thread=2)
WORDS = re.compile(r"\w+")


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load()}] {msg}", flush=True)


# -- data ---------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [{"title": r["title"], "category": r["category"]} for r in map(json.loads, f)]


def write_rows(rows: list[dict[str, str]], path: Path) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def make_split(data: Path, folder: Path) -> tuple[list[dict], list[dict], Path, Path]:
    rows = read_rows(data)
    train, test = train_test_split(
        rows, test_size=0.2, stratify=[r["category"] for r in rows], random_state=SEED
    )
    folder.mkdir(parents=True, exist_ok=True)
    train_path, test_path = folder / "train.jsonl.gz", folder / "test.jsonl.gz"
    write_rows(train, train_path)
    write_rows(test, test_path)
    return train, test, train_path, test_path


# -- the reference tools ------------------------------------------------------------------


def words(title: str) -> str:
    return " ".join(WORDS.findall(title.lower()))


def run_fasttext(train: list[dict], test: list[dict], folder: Path) -> dict:
    import fasttext

    path = folder / "fasttext-train.txt"
    with path.open("w", encoding="utf-8") as f:
        for row in train:
            f.write(f"__label__{row['category']} {words(row['title'])}\n")
    started = time.perf_counter()
    model = fasttext.train_supervised(str(path), verbose=0, seed=SEED, **FASTTEXT)
    seconds = time.perf_counter() - started
    labels, _ = model.predict([words(r["title"]) for r in test])
    y_pred = [label[0].removeprefix("__label__") for label in labels]
    return _scores(
        "fastText",
        test,
        y_pred,
        seconds,
        seconds,
        len(train),
        FASTTEXT["epoch"],
        config=" ".join(f"{k}={v}" for k, v in FASTTEXT.items()),
    )


def run_svm(train: list[dict], test: list[dict]) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion, make_pipeline
    from sklearn.svm import LinearSVC

    model = make_pipeline(
        FeatureUnion(
            [
                ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)),
                ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2)),
            ]
        ),
        LinearSVC(C=0.5),
    )
    started = time.perf_counter()
    model.fit([r["title"] for r in train], [r["category"] for r in train])
    seconds = time.perf_counter() - started
    y_pred = model.predict([r["title"] for r in test])
    return _scores(
        "TF-IDF + LinearSVC",
        test,
        list(y_pred),
        seconds,
        seconds,
        len(train),
        1,
        config="word 1-2 + char_wb 2-5 TF-IDF, C=0.5",
    )


def _scores(tool, test, y_pred, train_seconds, wall_seconds, rows, epochs, config) -> dict:
    y_true = [r["category"] for r in test]
    return {
        "tool": tool,
        "config": config,
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,
        "train_rows": rows,
        "epochs": epochs,
        "titles_per_second": rows * epochs / max(train_seconds, 1e-9),
    }


# -- prodcat ------------------------------------------------------------------------------


def run_prodcat(family: str, train: Path, test: Path, folder: Path, overrides: list[str]) -> dict:
    """Train one family in this process through the library call the CLI makes."""
    from prodcat.config import build_config
    from prodcat.training.run import run

    output = folder / f"prodcat-{family}"
    shutil.rmtree(output, ignore_errors=True)
    fixed = ["data.test_size=0", "training.progress=false", "tracking.enabled=false"]
    cfg = build_config(ROOT / "configs" / f"{family}.yaml", fixed + overrides)
    cfg.data.train, cfg.data.test = train, test
    started = time.perf_counter()
    result = run(cfg, output)
    wall = time.perf_counter() - started
    return {
        "tool": f"prodcat {family}",
        "config": f"configs/{family}.yaml" + "".join(f" {o}" for o in overrides),
        "balanced_accuracy": result.test.balanced_accuracy,
        "accuracy": result.test.accuracy,
        "validation_balanced_accuracy": result.validation.balanced_accuracy,
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "train_rows": result.train_rows,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "titles_per_second": result.train_rows
        * result.epochs_run
        / max(result.train_seconds, 1e-9),
        "device": result.device,
    }


# -- report -------------------------------------------------------------------------------


def table(results: list[dict]) -> str:
    reference = next((r for r in results if r["tool"] == "fastText"), None)
    head = (
        "| tool | test BAC | accuracy | train s | wall s | epochs | titles/s "
        "| BAC − fastText | train time ÷ fastText | wall ÷ fastText |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in results:
        if reference:
            diff = f"{r['balanced_accuracy'] - reference['balanced_accuracy']:+.4f}"
            ratio = f"{r['train_seconds'] / reference['train_seconds']:.2f}×"
            wall = f"{r['wall_seconds'] / reference['wall_seconds']:.2f}×"
        else:
            diff = ratio = wall = "–"
        epochs = str(r["epochs"]) + (f" (best {r['best_epoch']})" if "best_epoch" in r else "")
        lines.append(
            f"| {r['tool']} | {r['balanced_accuracy']:.4f} | {r['accuracy']:.4f} "
            f"| {r['train_seconds']:.1f} | {r['wall_seconds']:.1f} | {epochs} "
            f"| {r['titles_per_second']:,.0f} | {diff} | {ratio} | {wall} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--families",
        nargs="*",
        default=["mlp", "cnn", "lstm"],
        help="prodcat families to run, each with configs/FAMILY.yaml",
    )
    parser.add_argument("--skip-svm", action="store_true", help="skip the TF-IDF LinearSVC")
    parser.add_argument("--skip-fasttext", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override for every prodcat run",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    log(f"splitting {args.data} 80/20 (stratified, random_state={SEED})")
    train, test, train_path, test_path = make_split(args.data, args.out / "split")
    log(
        f"{len(train):,} training and {len(test):,} test titles, "
        f"{len({r['category'] for r in train})} categories"
    )

    results: list[dict] = []

    def record(name: str, fn) -> None:
        before = load()
        log(f"{name}: training")
        result = fn()
        result["load_before"], result["load_after"] = before, load()
        results.append(result)
        log(
            f"{name}: test BAC {result['balanced_accuracy']:.4f}, "
            f"{result['train_seconds']:.1f} s training, {result['wall_seconds']:.1f} s wall"
        )

    if not args.skip_fasttext:
        record("fastText", lambda: run_fasttext(train, test, args.out))
    if not args.skip_svm:
        record("svm", lambda: run_svm(train, test))
    for family in args.families:
        record(
            family, lambda f=family: run_prodcat(f, train_path, test_path, args.out, args.overrides)
        )

    total = time.perf_counter() - started
    markdown = table(results)
    header = (
        f"Test split: {len(test):,} titles ({args.data.name}, 80/20 stratified, seed {SEED}); "
        f"training on {len(train):,}. Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores; load average (1/5/15 min) before and after each tool in "
        f"quality.json. Whole benchmark: {total:.0f} s."
    )
    print()
    print(markdown)
    print()
    print(header)
    (args.out / "quality.md").write_text(f"{header}\n\n{markdown}\n", encoding="utf-8")
    (args.out / "quality.json").write_text(
        json.dumps(
            {
                "data": str(args.data),
                "train_rows": len(train),
                "test_rows": len(test),
                "seed": SEED,
                "cpu_count": os.cpu_count(),
                "total_seconds": total,
                "numpy": np.__version__,
                "python": platform.python_version(),
                "results": results,
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    log(f"wrote {args.out / 'quality.md'} and quality.json ({total:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

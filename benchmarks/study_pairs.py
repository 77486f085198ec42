"""The language-model study's pairwise comparisons, from its checked-in results alone.

`prodcat compare` tests every variant against the best one (results.md: a paired bootstrap
over the test rows and Welch over seeds). The study's questions compare other pairs: a
multilingual against an English encoder, 128 against 50 dimensions, normalised against raw
text. Their test rows' predictions are not checked in, so this script gives Welch's t-test
over the 4 seeds from the means and standard deviations in `results.csv` (scipy's
`ttest_ind_from_stats`), for both batch sizes, and writes `docs/study-lm/pairs.md`.

    .venv/bin/python benchmarks/study_pairs.py
"""

from __future__ import annotations

import csv
from pathlib import Path

from scipy.stats import ttest_ind_from_stats

STUDY = Path(__file__).resolve().parents[1] / "docs" / "study-lm"
RUNS = {"batch 4096 (the study's)": STUDY, "batch 256": STUDY / "batch256"}
PAIRS = [
    ("use", "minilm", "multilingual (USE) vs English (MiniLM) sentence encoder"),
    ("e5", "minilm", "multilingual (E5) vs English (MiniLM) sentence encoder"),
    ("words-128", "words-50", "averaged vectors, normalised: 128 vs 50 dimensions"),
    ("words-128-raw", "words-50-raw", "averaged vectors, raw text: 128 vs 50 dimensions"),
    ("words-128", "words-128-raw", "averaged vectors, 128-d: normalised vs raw text"),
    ("words-50", "words-50-raw", "averaged vectors, 50-d: normalised vs raw text"),
]


def rows(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "results.csv", encoding="utf-8") as f:
        return {row["variant"]: row for row in csv.DictReader(f)}


def main() -> None:
    lines = [
        "Pairwise comparisons of the study (`benchmarks/study_pairs.py`, from `results.csv` "
        "of each sweep): difference of mean test BAC (first minus second, points), Welch's "
        "t-test over the 4 seeds of each side, two-sided.",
        "",
        "| comparison | " + " | ".join(f"{name}: Δ, p" for name in RUNS) + " |",
        "|---|" + "---|" * len(RUNS),
    ]
    tables = {name: rows(folder) for name, folder in RUNS.items()}
    for a, b, what in PAIRS:
        cells = []
        for table in tables.values():
            x, y = table[a], table[b]
            p = ttest_ind_from_stats(
                float(x["bac_mean"]), float(x["bac_std"]), int(x["runs"]),
                float(y["bac_mean"]), float(y["bac_std"]), int(y["runs"]),
                equal_var=False,
            ).pvalue  # fmt: skip
            delta = 100 * (float(x["bac_mean"]) - float(y["bac_mean"]))
            cells.append(f"{delta:+.1f}, p = {p:.2g}")
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    (STUDY / "pairs.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

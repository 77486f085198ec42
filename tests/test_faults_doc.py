"""docs/faults.md tells the truth: its tables list every case of the test corpora (a new case
must be documented), and its totals are the counts of those tables."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_bad_inputs import ACCEPTED, REJECTED
from tests.test_config_errors import BAD_FILES, BAD_OVERRIDES

DOC = Path(__file__).resolve().parents[1] / "docs" / "faults.md"


def tables(section: str) -> list[list[list[str]]]:
    """The rows (cells) of each table under the heading `section`, header rows left out."""
    text = DOC.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}", 1)[1].split("\n## ", 1)[0]
    found, rows = [], None
    for line in body.splitlines():
        if not line.startswith("|"):
            if rows is not None:
                found.append(rows)
            rows = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if rows is None:
            rows = []  # the header
        elif not set(line) <= set("|-: "):
            rows.append(cells)
    if rows is not None:
        found.append(rows)
    return found


def names(rows: list[list[str]]) -> list[str]:
    return [row[0].strip("`") for row in rows]


def totals() -> dict[str, int]:
    [rows] = tables("Totals")
    return {re.sub(r"\W+", " ", row[0]).strip(): int(row[1].strip("*")) for row in rows}


def test_the_fault_tables_list_every_case_of_the_corpora():
    rejected, accepted = tables("Malformed data files")
    assert set(REJECTED) <= set(names(rejected))
    assert len(rejected) == len(REJECTED) + 2  # and a folder, a missing file
    assert names(accepted) == list(ACCEPTED)
    overrides, files = tables("Config and `--set` mistakes")
    assert names(overrides) == list(BAD_OVERRIDES)
    assert set(BAD_FILES) <= set(names(files))
    assert len(files) == len(BAD_FILES) + 3  # and a missing file, a folder, a bad override


def test_the_totals_are_the_tables_counts():
    total = totals()
    rejected, accepted = tables("Malformed data files")
    overrides, files = tables("Config and `--set` mistakes")
    [damaged] = tables("Damaged model folders, checkpoints and output folders")
    by_test = {name: sum(row[1] == name for row in damaged) for name in {r[1] for r in damaged}}
    [faults] = tables("Faults")
    counts = {
        "malformed data files": len(rejected),
        "unusual but valid data files": len(accepted),
        "config and set mistakes": len(overrides) + len(files),
        "damaged model folders": by_test["test_model_folder"],
        "damaged or unsafe checkpoints": by_test["test_checkpoint"],
        "bad output folders": by_test["test_output_folder"],
        "faults signals kill 9 concurrency full disk": len(faults),
    }
    assert {k: v for k, v in total.items() if k != "total"} == counts
    assert total["total"] == sum(counts.values())
    errors = sum(counts.values()) - counts["unusual but valid data files"] - len(faults)
    summary = DOC.read_text(encoding="utf-8").split("| **total** |", 1)[1].splitlines()[0]
    assert f"{errors} clear errors, {len(accepted)} accepted, {len(faults)} faults" in summary

"""`prodcat data stats`: a summary of a title file, from its encoded cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from prodcat.data.cache import encode_file


def file_summary(path: str | Path, data_cfg) -> dict[str, Any]:
    """Rows, columns, languages, label quality, categories and title lengths, as plain values
    (what `data stats --json` prints)."""
    file = encode_file(path, data_cfg, require_labels=False)
    meta, stats = file.meta, file.meta["stats"]
    summary: dict[str, Any] = {
        "file": str(path),
        "format": meta["format"],
        "columns": {k: v for k, v in meta["fields"].items() if v},
        "rows_read": stats["rows_read"],
        "rows": file.n_rows,
        "empty_titles": stats["empty_titles"],
    }
    for key, names, codes in (
        ("languages", meta["languages"], file.languages),
        ("label_quality", meta["qualities"], file.qualities),
    ):
        if names:
            counts = np.bincount(codes[codes >= 0], minlength=len(names))
            summary[key] = {n: int(c) for n, c in zip(names, counts)}
    if file.has_labels and file.n_rows:
        per_label = np.bincount(file.labels, minlength=len(file.label_names))
        counts = per_label[per_label > 0]
        summary["categories"] = {
            "count": len(counts),
            "rows_min": int(counts.min()),
            "rows_median": int(np.median(counts)),
            "rows_max": int(counts.max()),
            "largest": {
                str(file.label_names[i]): int(per_label[i]) for i in np.argsort(-per_label)[:5]
            },
        }
    lengths = np.asarray(file.lengths)
    if len(lengths):
        summary["tokens_per_title"] = {
            "mean": round(float(lengths.mean()), 4),
            "max": int(lengths.max()),
            "max_tokens": int(file.max_tokens),
            "cut": stats["truncated_titles"],
        }
        summary["distinct_tokens"] = len(file.vocabulary) - 2
    return summary


def file_stats(path: str | Path, data_cfg) -> list[str]:
    """Lines describing rows, columns, languages, label quality, categories and title lengths."""
    s = file_summary(path, data_cfg)
    lines = [
        f"file: {s['file']} ({s['format']})",
        "columns: " + ", ".join(f"{k}={v}" for k, v in s["columns"].items()),
        f"rows: {s['rows_read']:,} read, {s['rows']:,} with a title, "
        f"{s['empty_titles']:,} empty titles skipped",
    ]
    for key, name in (("languages", "languages"), ("label_quality", "label quality")):
        if key in s:
            lines.append(f"{name}: " + ", ".join(f"{n} {c:,}" for n, c in s[key].items()))
    if "categories" in s:
        c = s["categories"]
        lines.append(
            f"categories: {c['count']:,} (rows per category: min {c['rows_min']:,}, "
            f"median {c['rows_median']:,}, max {c['rows_max']:,})"
        )
        lines.append("largest: " + ", ".join(c["largest"]))
    if "tokens_per_title" in s:
        t = s["tokens_per_title"]
        lines.append(
            f"tokens per title: mean {t['mean']:.1f}, max {t['max']} "
            f"({t['cut']:,} cut at {t['max_tokens']}); "
            f"distinct tokens: {s['distinct_tokens']:,}"
        )
    return lines

"""`prodcat data stats`: a summary of a title file, from its encoded cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prodcat.data.cache import encode_file


def file_stats(path: str | Path, data_cfg) -> list[str]:
    """Lines describing rows, columns, languages, label quality, categories and title lengths."""
    file = encode_file(path, data_cfg, require_labels=False)
    meta, stats = file.meta, file.meta["stats"]
    lines = [
        f"file: {path} ({meta['format']})",
        "columns: " + ", ".join(f"{k}={v}" for k, v in meta["fields"].items() if v),
        f"rows: {stats['rows_read']:,} read, {file.n_rows:,} with a title, "
        f"{stats['empty_titles']:,} empty titles skipped",
    ]
    for field, names, codes in (
        ("languages", meta["languages"], file.languages),
        ("label quality", meta["qualities"], file.qualities),
    ):
        if names:
            counts = np.bincount(codes[codes >= 0], minlength=len(names))
            lines.append(f"{field}: " + ", ".join(f"{n} {c:,}" for n, c in zip(names, counts)))
    if file.has_labels and file.n_rows:
        per_label = np.bincount(file.labels, minlength=len(file.label_names))
        counts = per_label[per_label > 0]
        lines.append(
            f"categories: {len(counts):,} (rows per category: min {counts.min():,}, "
            f"median {int(np.median(counts)):,}, max {counts.max():,})"
        )
        top = np.argsort(-per_label)[:5]
        lines.append("largest: " + ", ".join(file.label_names[i] for i in top))
    lengths = np.asarray(file.lengths)
    if len(lengths):
        lines.append(
            f"tokens per title: mean {lengths.mean():.1f}, max {lengths.max()} "
            f"({stats['truncated_titles']:,} cut at {file.max_tokens}); "
            f"distinct tokens: {len(file.vocabulary) - 2:,}"
        )
    return lines

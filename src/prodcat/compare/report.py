"""What a comparison shows: a table per variant, significance against the best, and a
self-contained HTML report (plots embedded as PNG, opens offline).

The plots are the language-model study's five: BAC by variant with its spread, BAC grouped
by a tag (e.g. the encoder's language), final loss vs BAC, training curves of every run,
BAC vs training time coloured by device type; plus a per-category view of where the best
two variants differ.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from prodcat.compare.runs import RunRecord, TestRows, shared_test_rows  # noqa: E402
from prodcat.compare.significance import (  # noqa: E402
    DEFAULT_ALPHA,
    DEFAULT_RESAMPLES,
    holm,
    paired_bootstrap,
    welch_p_value,
)

TABLE_CSV, TABLE_MD, REPORT_HTML = "results.csv", "results.md", "report.html"


@dataclass
class VariantSummary:
    """Mean and spread of one variant's runs, and how it compares with the best variant."""

    variant: str
    runs: int
    tags: dict[str, str]
    bac: list[float]
    accuracy: list[float]
    macro_f1: list[float]
    loss: list[float]
    train_seconds: list[float]
    epochs: list[int]
    parameters: int
    devices: list[str]
    # Against the best variant (None for the best itself).
    difference: float | None = None
    interval: tuple[float, float] | None = None
    p_rows: float | None = None  # paired bootstrap over test rows, Holm-adjusted
    p_seeds: float | None = None  # Welch's t-test over repeats
    significant: bool | None = None

    @property
    def mean_bac(self) -> float:
        return float(np.mean(self.bac))


@dataclass
class Comparison:
    """A comparison's summaries, best variant first, and the data its plots read."""

    title: str
    records: list[RunRecord]
    summaries: list[VariantSummary]
    alpha: float
    rows: TestRows | None
    test_rows: int
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> VariantSummary:
        return self.summaries[0]

    @cached_property
    def by_category(self) -> CategoryView | None:
        """Per-category recall of the best two variants (for the plot and its table)."""
        return category_view(self)


def compare(
    records: list[RunRecord],
    title: str,
    alpha: float = DEFAULT_ALPHA,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Summarise runs per variant and test the best variant against each other one."""
    by_variant: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        by_variant[r.variant].append(r)
    summaries = [_summary(name, runs) for name, runs in by_variant.items()]
    summaries.sort(key=lambda s: -s.mean_bac)
    rows = shared_test_rows(records)
    notes = []
    if rows is None and len(summaries) > 1:
        notes.append(
            "Some runs kept no test predictions (or share no test rows): only the test over "
            "seeds was made."
        )
    best = summaries[0]
    raw_p = []
    for s in summaries[1:]:
        s.difference = best.mean_bac - s.mean_bac
        s.p_seeds = welch_p_value(best.bac, s.bac)
        if rows is not None:
            test = paired_bootstrap(
                rows.y,
                [rows.predicted[(best.variant, r.repeat)] for r in by_variant[best.variant]],
                [rows.predicted[(s.variant, r.repeat)] for r in by_variant[s.variant]],
                resamples=resamples,
                seed=seed,
            )
            s.interval = (test.low, test.high)
            raw_p.append(test.p_value)
        else:
            raw_p.append(s.p_seeds)
    for s, p in zip(summaries[1:], holm(raw_p)):
        if rows is not None:
            s.p_rows = p
        else:
            s.p_seeds = p
        s.significant = None if math.isnan(p) else p < alpha
    test_rows = len(rows.y) if rows is not None else records[0].scores.rows
    return Comparison(title, records, summaries, alpha, rows, test_rows, notes)


def _summary(name: str, runs: list[RunRecord]) -> VariantSummary:
    runs = sorted(runs, key=lambda r: r.repeat)
    scores = [r.scores for r in runs]
    tags = runs[0].user_tags
    return VariantSummary(
        variant=name,
        runs=len(runs),
        tags=tags,
        bac=[s.balanced_accuracy for s in scores],
        accuracy=[s.accuracy for s in scores],
        macro_f1=[s.macro_f1 for s in scores],
        loss=[s.loss for s in scores],
        train_seconds=[r.result.train_seconds for r in runs],
        epochs=[r.result.epochs_run for r in runs],
        parameters=runs[0].result.parameters,
        devices=sorted({r.result.device_type for r in runs}),
    )


# -- tables ---------------------------------------------------------------------------------


def _mean_std(values: list[float], digits: int = 4) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def table_rows(comparison: Comparison) -> list[dict[str, str]]:
    """One row per variant, best first, as the CSV, Markdown and HTML tables show it."""
    tag_keys = varying_tags(comparison)
    out = []
    for s in comparison.summaries:
        row = {"variant": s.variant, **{k: s.tags.get(k, "") for k in tag_keys}}
        row.update(
            {
                "runs": str(s.runs),
                "test BAC": _mean_std(s.bac),
                "accuracy": _mean_std(s.accuracy),
                "macro-F1": _mean_std(s.macro_f1),
                "train s": _mean_std(s.train_seconds, 1),
                "epochs": f"{np.mean(s.epochs):.1f}",
                "parameters": f"{s.parameters:,}",
                "device": "/".join(s.devices),
                "Δ vs best": "best" if s.difference is None else f"{-s.difference:+.4f}",
                "p (rows)": _p(s.p_rows),
                "p (seeds)": _p(s.p_seeds),
                f"significant at {comparison.alpha:g}": (
                    "–" if s.significant is None else "yes" if s.significant else "no"
                ),
            }
        )
        out.append(row)
    return out


def varying_tags(c: Comparison) -> list[str]:
    """Tags that tell variants apart; one value on every variant is said in the caption."""
    keys = sorted({k for s in c.summaries for k in s.tags})
    return [k for k in keys if len({s.tags.get(k) for s in c.summaries}) > 1]


def common_tags(c: Comparison) -> dict[str, str]:
    keys = {k for s in c.summaries for k in s.tags} - set(varying_tags(c))
    return {k: c.summaries[0].tags[k] for k in sorted(keys)}


def _p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "–"
    return f"{p:.3g}" if p >= 0.001 else "<0.001"


def write_tables(comparison: Comparison, folder: Path) -> tuple[Path, Path]:
    """results.csv (numbers, one column per statistic) and results.md (the table above)."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / TABLE_CSV
    tag_keys = varying_tags(comparison)
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        stats = ["bac", "accuracy", "macro_f1", "loss", "train_seconds", "epochs"]
        writer.writerow(
            ["variant", *tag_keys, "runs"]
            + [f"{k}_{m}" for k in stats for m in ("mean", "std")]
            + ["parameters", "device", "difference_vs_best", "ci_low", "ci_high"]
            + ["p_rows_holm", "p_seeds", "significant"]
        )
        for s in comparison.summaries:
            values = [s.bac, s.accuracy, s.macro_f1, s.loss, s.train_seconds, s.epochs]
            numbers = []
            for v in values:
                numbers += [f"{np.mean(v):.6g}", f"{np.std(v, ddof=1):.6g}" if len(v) > 1 else ""]
            writer.writerow(
                [s.variant, *(s.tags.get(k, "") for k in tag_keys), s.runs, *numbers]
                + [s.parameters, "/".join(s.devices)]
                + [_num(None if s.difference is None else -s.difference)]
                + [_num(-s.interval[1] if s.interval else None)]
                + [_num(-s.interval[0] if s.interval else None)]
                + [_num(s.p_rows), _num(s.p_seeds)]
                + ["" if s.significant is None else str(s.significant).lower()]
            )
    md_path = folder / TABLE_MD
    md_path.write_text(markdown_table(comparison), encoding="utf-8")
    return csv_path, md_path


def _num(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.6g}"


def markdown_table(comparison: Comparison) -> str:
    rows = table_rows(comparison)
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r[k] for k in head) + " |" for r in rows]
    return "\n".join([_caption(comparison), "", *lines, ""])


def _caption(c: Comparison) -> str:
    repeats = sorted({s.runs for s in c.summaries})
    test = (
        f"paired bootstrap over the {c.test_rows:,} shared test rows ({DEFAULT_RESAMPLES} "
        "resamples, Holm-adjusted)"
        if c.rows is not None
        else "Welch's t-test over repeats (Holm-adjusted)"
    )
    common = ", ".join(f"{k}: {v}" for k, v in common_tags(c).items())
    return (
        f"{c.title}{f' ({common})' if common else ''}: test metrics as mean ± std over "
        f"{'/'.join(map(str, repeats))} repeats "
        f"(seeds) per variant; Δ vs best is the difference in mean test BAC, significance "
        f"by {test} at α = {c.alpha:g}; p (seeds): Welch's t-test over repeats."
    )


# -- plots ----------------------------------------------------------------------------------


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _colours(names: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def plot_bac_by_variant(c: Comparison) -> bytes:
    """Test BAC of every run per variant: a box for the spread, a dot per run, best on top."""
    summaries = list(reversed(c.summaries))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(summaries) + 1.5))
    ax.boxplot([s.bac for s in summaries], orientation="horizontal", widths=0.5, showfliers=False)
    for i, s in enumerate(summaries, start=1):
        ax.scatter(s.bac, [i] * len(s.bac), s=18, zorder=3, color="tab:blue")
        ax.annotate(
            f"{s.mean_bac:.4f}",
            (max(s.bac), i),
            xytext=(6, -3),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_yticks(range(1, len(summaries) + 1), [s.variant for s in summaries])
    ax.set(xlabel="test balanced accuracy", title="BAC by variant (each dot a run)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def group_tags(c: Comparison) -> list[str]:
    """Tags with at least two values among the variants: the ways BAC can be grouped."""
    keys = sorted({k for s in c.summaries for k in s.tags})
    return [k for k in keys if len({s.tags.get(k) for s in c.summaries if k in s.tags}) >= 2]


def plot_bac_by_tag(c: Comparison, tag: str) -> bytes:
    """Test BAC of every run grouped by the value of `tag` (runs without it left out)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for s in c.summaries:
        if tag in s.tags:
            groups[s.tags[tag]].extend(s.bac)
    names = sorted(groups, key=lambda g: -np.mean(groups[g]))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(names) + 1.5), 4))
    ax.boxplot([groups[g] for g in names], widths=0.5, showfliers=False)
    for i, g in enumerate(names, start=1):
        jitter = np.linspace(-0.12, 0.12, len(groups[g])) if len(groups[g]) > 1 else [0.0]
        ax.scatter(np.add(i, jitter), groups[g], s=14, zorder=3, color="tab:blue")
    labels = [f"{textwrap.fill(g, 14)}\n(n={len(groups[g])})" for g in names]
    ax.set_xticks(range(1, len(names) + 1), labels)
    ax.set(ylabel="test balanced accuracy", title=f"BAC by {tag}")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_loss_vs_bac(c: Comparison) -> bytes:
    """Final test loss against test BAC, one dot per run, coloured by variant."""
    colours = _colours([s.variant for s in c.summaries])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in c.summaries:
        ax.scatter(s.loss, s.bac, label=s.variant, color=colours[s.variant], s=22)
    ax.set(
        xlabel="test loss (cross-entropy)",
        ylabel="test balanced accuracy",
        title="Loss vs BAC (each dot a run)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def plot_training_curves(c: Comparison) -> bytes:
    """Training loss and validation BAC per epoch, every run, coloured by variant."""
    colours = _colours([s.variant for s in c.summaries])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    labelled = set()
    for r in sorted(c.records, key=lambda r: (r.variant, r.repeat)):
        history = r.result.history
        if not history:
            continue
        epochs = [h["epoch"] for h in history]
        label = None if r.variant in labelled else r.variant
        labelled.add(r.variant)
        left.plot(
            epochs,
            [h["train_loss"] for h in history],
            color=colours[r.variant],
            alpha=0.7,
            lw=1,
            label=label,
        )
        right.plot(
            epochs,
            [h["validation_balanced_accuracy"] for h in history],
            color=colours[r.variant],
            alpha=0.7,
            lw=1,
        )
    left.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    right.set(xlabel="epoch", ylabel="validation BAC", title="Validation balanced accuracy")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.legend(fontsize=7)
    return _png(fig)


def plot_bac_vs_time(c: Comparison) -> bytes:
    """Test BAC against training time (log scale), coloured by device type."""
    devices = sorted({r.result.device_type for r in c.records})
    colours = _colours(devices)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for device in devices:
        runs = [r for r in c.records if r.result.device_type == device]
        ax.scatter(
            [max(r.result.train_seconds, 1e-3) for r in runs],
            [r.scores.balanced_accuracy for r in runs],
            color=colours[device],
            label=device,
            s=22,
        )
    for s in c.summaries:
        ax.annotate(
            s.variant,
            (max(np.mean(s.train_seconds), 1e-3), s.mean_bac),
            xytext=(4, 3),
            textcoords="offset points",
            fontsize=7,
        )
    ax.set_xscale("log")
    ax.set(
        xlabel="training seconds (log)",
        ylabel="test balanced accuracy",
        title="BAC vs training time, by device type",
    )
    ax.grid(alpha=0.3)
    ax.legend(title="device")
    return _png(fig)


@dataclass
class CategoryView:
    """Per-category recall of the best two variants (pooled over their repeats)."""

    first: str
    second: str
    rows: list[tuple[str, int, float, float]]  # category, test rows, recall 1st, recall 2nd


def category_view(c: Comparison) -> CategoryView | None:
    if c.rows is None or len(c.summaries) < 2:
        return None
    y = c.rows.y
    support = np.bincount(y, minlength=len(c.rows.categories))
    recalls = []
    for s in c.summaries[:2]:
        keys = [k for k in c.rows.predicted if k[0] == s.variant]
        right = sum(
            np.bincount(y, weights=(c.rows.predicted[k] == y), minlength=len(support)) for k in keys
        )
        recalls.append(right / np.maximum(support * len(keys), 1))
    rows = [
        (name, int(support[i]), float(recalls[0][i]), float(recalls[1][i]))
        for i, name in enumerate(c.rows.categories)
        if support[i] > 0
    ]
    rows.sort(key=lambda r: -abs(r[2] - r[3]))
    return CategoryView(c.summaries[0].variant, c.summaries[1].variant, rows)


def plot_categories(view: CategoryView) -> bytes:
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    a = np.array([r[2] for r in view.rows])
    b = np.array([r[3] for r in view.rows])
    size = np.array([r[1] for r in view.rows], dtype=float)
    ax.scatter(b, a, s=8 + 40 * size / size.max(), alpha=0.5)
    ax.plot([0, 1], [0, 1], color="grey", lw=1)
    ax.set(
        xlabel=f"recall of {view.second}",
        ylabel=f"recall of {view.first}",
        title="Per-category recall of the best two variants",
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
    )
    ax.grid(alpha=0.3)
    return _png(fig)


# -- the HTML report ------------------------------------------------------------------------


def plots(c: Comparison) -> dict[str, bytes]:
    """Every plot of the report as PNG bytes, by file stem."""
    out = {"bac_by_variant": plot_bac_by_variant(c)}
    for tag in group_tags(c):
        out[f"bac_by_{_slug(tag)}"] = plot_bac_by_tag(c, tag)
    out["loss_vs_bac"] = plot_loss_vs_bac(c)
    out["training_curves"] = plot_training_curves(c)
    out["bac_vs_time"] = plot_bac_vs_time(c)
    view = c.by_category
    if view is not None:
        out["categories"] = plot_categories(view)
    return out


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower())


def write_report(c: Comparison, folder: str | Path, images: bool = True) -> Path:
    """results.csv, results.md, report.html (self-contained) and, with `images`, each plot
    as a PNG beside them. Returns the HTML's path."""
    folder = Path(folder)
    write_tables(c, folder)
    pngs = plots(c)
    if images:
        for name, data in pngs.items():
            (folder / f"{name}.png").write_bytes(data)
    path = folder / REPORT_HTML
    path.write_text(render_html(c, pngs), encoding="utf-8")
    return path


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1150px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
tr.best td{font-weight:600} .yes{color:#0a7d32} .no{color:#999}
figure{margin:1.5em 0} figcaption{font-size:13px;color:#555;max-width:900px}
img{max-width:100%} .note{font-size:13px;color:#555} .wide{overflow-x:auto}
"""

_CAPTIONS = {
    "bac_by_variant": "Test balanced accuracy of each run by variant; the box spans the "
    "quartiles of its repeats, the number is the mean.",
    "loss_vs_bac": "Final test loss against test BAC, one dot per run.",
    "training_curves": "Training loss and validation BAC per epoch, every run.",
    "bac_vs_time": "Test BAC against training time, coloured by the device the run used.",
    "categories": "Recall per category of the best two variants (pooled over repeats; dot "
    "size: test rows of the category). Dots off the diagonal are where they differ.",
}


def render_html(c: Comparison, pngs: dict[str, bytes]) -> str:
    rows = table_rows(c)
    head = list(rows[0])
    sig_key = head[-1]
    body = [f"<h1>{html.escape(c.title)}</h1>"]
    body.append(
        f"<p class=note>{len(c.records)} runs, {len(c.summaries)} variants; generated "
        f"{datetime.now():%Y-%m-%d %H:%M} by prodcat.</p>"
    )
    body.append("<h2>Results</h2>")
    body.append(f"<p class=note>{html.escape(_caption(c))}</p>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    table = [f"<div class=wide><table><tr>{header}</tr>"]
    for i, r in enumerate(rows):
        cells = []
        for k in head:
            cls = f" class={r[k]}" if k == sig_key and r[k] in ("yes", "no") else ""
            cells.append(f"<td{cls}>{html.escape(r[k])}</td>")
        table.append(f"<tr{' class=best' if i == 0 else ''}>" + "".join(cells) + "</tr>")
    table.append("</table></div>")
    body += table
    for note in c.notes:
        body.append(f"<p class=note>{html.escape(note)}</p>")
    body.append("<h2>Plots</h2>")
    for name, data in pngs.items():
        if name == "categories":
            continue
        caption = _CAPTIONS.get(name) or (
            f"Test BAC of every run grouped by the tag '{name.removeprefix('bac_by_')}'."
        )
        body.append(_figure(name, data, caption))
    view = c.by_category
    if view is not None and "categories" in pngs:
        body.append(
            f"<h2>Where {html.escape(view.first)} and {html.escape(view.second)} differ</h2>"
        )
        body.append(_figure("categories", pngs["categories"], _CAPTIONS["categories"]))
        body.append(
            "<table><tr><th>category</th><th>test rows</th>"
            f"<th>recall {html.escape(view.first)}</th>"
            f"<th>recall {html.escape(view.second)}</th><th>difference</th></tr>"
        )
        for name, support, a, b in view.rows[:20]:
            body.append(
                f"<tr><td>{html.escape(name)}</td><td>{support}</td><td>{a:.3f}</td>"
                f"<td>{b:.3f}</td><td>{a - b:+.3f}</td></tr>"
            )
        body.append("</table>")
    body.append(
        "<h2>Runs</h2><table><tr><th>variant</th><th>repeat</th><th>test BAC</th>"
        "<th>epochs</th><th>train s</th><th>device</th><th>source</th></tr>"
    )
    for r in sorted(c.records, key=lambda r: (r.variant, r.repeat)):
        body.append(
            f"<tr><td>{html.escape(r.variant)}</td><td>{r.repeat}</td>"
            f"<td>{r.scores.balanced_accuracy:.4f}</td><td>{r.result.epochs_run}</td>"
            f"<td>{r.result.train_seconds:.1f}</td><td>{html.escape(r.result.device)}</td>"
            f"<td>{html.escape(r.source)}</td></tr>"
        )
    body.append("</table>")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(c.title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def _figure(name: str, data: bytes, caption: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return (
        f"<figure id={name}><img alt='{html.escape(name)}' "
        f"src='data:image/png;base64,{encoded}'><figcaption>{html.escape(caption)}"
        "</figcaption></figure>"
    )

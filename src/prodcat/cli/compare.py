"""`prodcat compare`, `prodcat report` and `prodcat tune`: many runs, one answer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prodcat.cli.output import console, out, setup_logging

SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a config value of every run: --set training.epochs=2."
    ),
]
AlphaOpt = Annotated[
    float, typer.Option(help="Significance level of the tests (after Holm's adjustment).")
]


def compare(
    sweep_file: Annotated[
        Path, typer.Argument(help="Sweep file: a base config, named variants, repeats.")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Folder for the runs and the report. Default: runs/EXPERIMENT."
        ),
    ] = None,
    overrides: SetOpt = None,
    variant: Annotated[
        list[str] | None,
        typer.Option("--variant", "-v", help="Run only this variant (repeatable)."),
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(help="MLflow experiment and report title (default: the sweep file's)."),
    ] = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow.")] = False,
    alpha: AlphaOpt = 0.05,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and the table.")] = (
        False
    ),
) -> None:
    """Train every variant of a sweep file several times and compare them.

    A table (mean ± std of test BAC, accuracy, macro-F1, time, epochs, parameters,
    significance against the best) and a self-contained HTML report with plots.

    Each run is a model folder OUTPUT/runs/VARIANT/rN and an MLflow run tagged with its
    variant, repeat and the sweep's tags, nested under the sweep's run. Run it again after a
    stop: finished runs are kept, an interrupted one resumes from its checkpoint.
    """
    from prodcat.compare.report import compare as summarise
    from prodcat.compare.report import markdown_table, write_report
    from prodcat.compare.runs import records_from_sweep
    from prodcat.compare.sweep import Sweep, run_sweep

    setup_logging(quiet)
    sweep = Sweep.load(sweep_file)
    if experiment:
        sweep.experiment = experiment  # e.g. the same sweep under other settings (--set)
    output = output or Path("runs") / sweep.experiment
    settings = list(overrides or []) + (["tracking.enabled=false"] if no_track else [])
    done = run_sweep(sweep, output, overrides=settings, variants=variant, progress=not quiet)
    comparison = summarise(records_from_sweep(done), sweep.experiment, alpha=alpha)
    path = write_report(comparison, output)
    out.print(markdown_table(comparison), markup=False, highlight=False)
    console.print(f"report: {path}", highlight=False)


def report(
    experiment: Annotated[str, typer.Option(help="MLflow experiment of the sweep.")],
    store: Annotated[
        list[str] | None,
        typer.Option(
            help="MLflow tracking URI to read (repeatable: stores of several machines are "
            "merged). Default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db."
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the tables and report.html.")
    ] = Path("report"),
    alpha: AlphaOpt = 0.05,
) -> None:
    """Rebuild a comparison's table and report from MLflow alone.

    Reads the runs tagged with a variant (as `prodcat compare` tags them), merging several
    stores.
    """
    from prodcat.compare.report import compare as summarise
    from prodcat.compare.report import markdown_table, write_report
    from prodcat.compare.runs import records_from_mlflow
    from prodcat.tracking import tracking_uri

    stores = store or [tracking_uri()]
    records = records_from_mlflow(experiment, stores, output / "runs")
    comparison = summarise(records, experiment, alpha=alpha)
    path = write_report(comparison, output)
    out.print(markdown_table(comparison), markup=False, highlight=False)
    console.print(f"report: {path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the commands to the `prodcat` app."""
    app.command()(compare)
    app.command()(report)
    app.command()(tune)


def tune(
    space_file: Annotated[
        Path, typer.Argument(help="Search-space file: base config, ranges, trials.")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Folder for the study, its trials and best.yaml. Default: runs/EXPERIMENT.",
        ),
    ] = None,
    trials: Annotated[
        int | None, typer.Option(help="Trials in the study in all (default: the file's).")
    ] = None,
    overrides: SetOpt = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and the result.")] = (
        False
    ),
) -> None:
    """Search hyperparameters with Optuna.

    TPE, pruning weak trials on their per-epoch validation BAC. Each trial is an MLflow run
    nested under the study's run; the study is kept in OUTPUT/optuna.db, so running the
    command again continues it (and several processes can share it). Trials read validation
    rows only; the best trial's model is scored on the test rows once, at the end, and its
    config written to OUTPUT/best.yaml.
    """
    from prodcat.compare.tune import TuneSpec
    from prodcat.compare.tune import tune as run_tune

    setup_logging(quiet)
    spec = TuneSpec.load(space_file)
    output = output or Path("runs") / spec.experiment
    settings = list(overrides or []) + (["tracking.enabled=false"] if no_track else [])
    result = run_tune(spec, output, overrides=settings, trials=trials, progress=not quiet)
    finished = [t for t in result.trials if t["state"] == "COMPLETE"]
    pruned = sum(t["state"] == "PRUNED" for t in result.trials)
    out.print(
        f"{len(finished)} trials finished, {pruned} pruned; best validation BAC "
        f"{result.best_validation:.4f} with {result.best_values}",
        markup=False,
        highlight=False,
    )
    if result.test is not None:
        out.print(
            f"test (scored once): BAC {result.test.balanced_accuracy:.4f}, accuracy "
            f"{result.test.accuracy:.4f}, macro-F1 {result.test.macro_f1:.4f} "
            f"({result.test.rows:,} rows)",
            highlight=False,
        )
    out.print(f"best config: {result.best_config} (model: {result.best_folder})", highlight=False)

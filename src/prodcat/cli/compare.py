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
StorageOpt = Annotated[
    str | None,
    typer.Option(
        help="Database of the shared study (an SQLAlchemy URL: postgresql://USER@HOST/DB needs "
        "pip install 'prodcat[team]'). Start the same command with it on several machines or "
        "processes and they share the work.",
    ),
]
HeartbeatOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="Seconds between a worker's signs of life in the study database; the work of a "
        "worker silent for 3x as long (killed, machine gone) is given to another.",
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
    storage: StorageOpt = None,
    heartbeat: HeartbeatOpt = 60,
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

    With --storage, every process started on the same sweep and database claims runs from it,
    each run trained once (a dead worker's run is claimed again); the worker that trains the
    last run writes the table and report, read from MLflow (a shared tracking server).
    """
    from prodcat.compare.report import compare as summarise
    from prodcat.compare.report import markdown_table, write_report
    from prodcat.compare.runs import records_from_sweep
    from prodcat.compare.sweep import Sweep, run_sweep, share_sweep

    setup_logging(quiet)
    sweep = Sweep.load(sweep_file)
    if experiment:
        sweep.experiment = experiment  # e.g. the same sweep under other settings (--set)
    output = output or Path("runs") / sweep.experiment
    settings = list(overrides or []) + (["tracking.enabled=false"] if no_track else [])
    if storage is None:
        done = run_sweep(sweep, output, overrides=settings, variants=variant, progress=not quiet)
        records = records_from_sweep(done)
    else:
        records = share_sweep(
            sweep,
            output,
            storage,
            overrides=settings,
            variants=variant,
            progress=not quiet,
            heartbeat=heartbeat,
        )
        if records is None:
            console.print(
                "every run of the sweep is in; the worker that trained the last one writes "
                f"the table and report (or: prodcat report --experiment {sweep.experiment})",
                highlight=False,
            )
            return
    comparison = summarise(records, sweep.experiment, alpha=alpha)
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
    storage: Annotated[
        str | None,
        typer.Option(
            help="Database of the study (an SQLAlchemy URL; default: sqlite:///OUTPUT/optuna.db). "
            "postgresql://USER@HOST/DB (pip install 'prodcat[team]') shares one study between "
            "machines: start this command on each.",
        ),
    ] = None,
    heartbeat: HeartbeatOpt = 60,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and the result.")] = (
        False
    ),
) -> None:
    """Search hyperparameters with Optuna.

    TPE, pruning weak trials on their per-epoch validation BAC. Each trial is an MLflow run
    nested under the study's run; the study is kept in OUTPUT/optuna.db (or --storage), so
    running the command again continues it. Processes started on one study share its trials:
    the trials add up to the number asked, and a trial whose process died is run again by
    another. Trials read validation rows only; the worker that finishes the study scores the
    best trial's model on the test rows once and writes its config to OUTPUT/best.yaml.
    """
    from prodcat.compare.tune import TuneSpec
    from prodcat.compare.tune import tune as run_tune

    setup_logging(quiet)
    spec = TuneSpec.load(space_file)
    output = output or Path("runs") / spec.experiment
    settings = list(overrides or []) + (["tracking.enabled=false"] if no_track else [])
    result = run_tune(
        spec,
        output,
        overrides=settings,
        trials=trials,
        progress=not quiet,
        storage=storage,
        heartbeat=heartbeat,
    )
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
    if result.best_config is None:
        out.print(
            f"best trial: {result.best_trial}; the worker that ran the study's last trial "
            "scores it on the test rows and writes its best.yaml",
            highlight=False,
        )
    else:
        out.print(
            f"best config: {result.best_config} (model: {result.best_folder})", highlight=False
        )

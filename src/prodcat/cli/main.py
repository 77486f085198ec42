"""The `prodcat` command: a thin typer layer over plain functions."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from prodcat.cli.compare import register as register_compare
from prodcat.cli.course import course_help
from prodcat.cli.export import export
from prodcat.cli.log import log
from prodcat.cli.models import models_app
from prodcat.cli.output import console, out, print_json, setup_logging
from prodcat.errors import ConfigError, ProdcatError, Terminated, TrackingError

# Commands in the order a user meets them (typer lists them as they are defined otherwise).
COMMAND_ORDER = (
    "data", "train", "log", "evaluate", "predict", "serve", "export",
    "compare", "report", "tune", "ensemble", "vectors", "models",
)  # fmt: skip


class InOrder(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))


app = typer.Typer(
    cls=InOrder,
    help="Train, compare and serve neural classifiers of product titles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Help paragraphs reflow to the terminal's width (single line breaks are not kept).
    rich_markup_mode="markdown",
)
data_app = typer.Typer(
    help="Summarise title files and encode them into a cache.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(data_app, name="data")
vectors_app = typer.Typer(
    help="Train word vectors on title files.", no_args_is_help=True, rich_markup_mode="markdown"
)
app.add_typer(vectors_app, name="vectors")
app.add_typer(models_app, name="models")
app.command("export")(export)
app.command("log")(log)
register_compare(app)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"prodcat {version('prodcat')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            expose_value=False,
            help="Print prodcat's version and exit.",
        ),
    ] = False,
) -> None:
    """Train, compare and serve neural classifiers of product titles."""


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (see configs/).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a config value: --set training.epochs=2 (repeatable)."
    ),
]


@app.command(
    epilog="**The course's options** (accepted instead of the options above; defaults are "
    "prodcat's):\n\n" + course_help()
)
def train(
    config: ConfigOpt = None,
    train: Annotated[
        Path | None,
        typer.Option(
            help="Training file (CSV or JSON lines, plain or .gz). Default: the bundled sample."
        ),
    ] = None,
    validation: Annotated[
        Path | None,
        typer.Option(help="Validation file; without it, data.validation_size rows are split off."),
    ] = None,
    test: Annotated[
        Path | None,
        typer.Option(help="Test file; without it, data.test_size rows are split off."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Model folder. Default: runs/FAMILY-TIME."),
    ] = None,
    overrides: SetOpt = None,
    batch_size: Annotated[
        str | None,
        typer.Option(
            help="Rows per optimizer step (training.batch_size), or auto: the largest that "
            "fits on the GPU."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(help="Continue the run in --output from its last checkpoint (or extend it)."),
    ] = False,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow.")] = False,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment name.")] = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings and the result.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the result (metrics.json's content) as one JSON object."
        ),
    ] = False,
) -> None:
    """Train a classifier, log it to MLflow and save its model folder.

    Also accepts the DiploDatos course's options unchanged (`--train-data`, `--classifier`,
    ...), listed below.
    """
    run_training(
        config,
        train,
        validation,
        test,
        output,
        [*(overrides or []), *([f"training.batch_size={batch_size}"] if batch_size else [])],
        resume,
        no_track,
        quiet,
        experiment,
        run_name,
        as_json,
    )


def run_training(
    config: Path | None,
    train: Path | None,
    validation: Path | None,
    test: Path | None,
    output: Path | None,
    overrides: list[str],
    resume: bool,
    no_track: bool,
    quiet: bool,
    experiment: str | None = None,
    run_name: str | None = None,
    as_json: bool = False,
) -> None:
    """Options -> config -> `prodcat.workflow.run` -> printed result."""
    from prodcat.config import build_config
    from prodcat.training.ranks import Rank
    from prodcat.workflow import run  # registers the model families

    main = Rank.from_env().main  # under torchrun, rank 0 alone logs progress and prints
    setup_logging(quiet or not main)
    cfg = build_config(config, overrides)
    for key, value in (("train", train), ("validation", validation), ("test", test)):
        if value is not None:
            setattr(cfg.data, key, value)
    if no_track:
        cfg.tracking.enabled = False
    if experiment:
        cfg.tracking.experiment = experiment
    if run_name:
        cfg.tracking.run_name = run_name
    if quiet:
        cfg.training.progress = False
    result = run(cfg, output, resume=resume)
    if not main:
        return
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        _print_result(result, cfg)
    if result.not_logged:
        folder = shlex.quote(str(result.output_dir))
        raise TrackingError(
            f"the run is not logged to MLflow: {result.not_logged}; its model folder is whole: "
            f"once the server is back, log it with `prodcat log {folder}`"
        )


def _print_result(result, cfg) -> None:
    from prodcat.tracking import tracking_uri

    columns = ("balanced_accuracy", "accuracy", "macro_f1", "loss")
    if result.members:  # a model of models: its members have their own best epochs
        title = f"{result.family} — {result.members} members, {result.epochs_run} epochs in all"
    else:
        title = f"{result.family} — best epoch {result.best_epoch} of {result.epochs_run}"
    table = Table(title=title)
    table.add_column("split")
    for name in columns:
        table.add_column(name, justify="right")
    for split in ("validation", "test"):
        scores = getattr(result, split)
        if scores is not None:
            table.add_row(split, *(f"{getattr(scores, k):.4f}" for k in columns))
    out.print(table)
    out.print(
        f"{result.train_rows:,} training titles, {result.train_seconds:.1f} s of training "
        f"({result.titles_per_second:,.0f} titles/s on {result.device})"
    )
    out.print(f"model folder: {result.output_dir}")
    if result.run_id and not result.not_logged:
        uri = tracking_uri(cfg.tracking.uri)
        browse = (
            uri
            if uri.startswith(("http://", "https://"))
            else f"mlflow ui --backend-store-uri {uri}"
        )
        out.print(f"MLflow run {result.run_id}: {browse}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model folder written by `prodcat train`.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Labelled file to score.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a trained model on a labelled file.

    Balanced accuracy, accuracy, macro-F1, loss, expected calibration error (15 bins) and the
    share of titles that can be labelled automatically at 95 % and 99 % precision, with the
    confidence that selects them.
    """
    from prodcat.serving.predictor import Classifier

    setup_logging(quiet=True)
    metrics = Classifier.load(model).evaluate(data)
    if as_json:
        print(json.dumps(metrics))
        return
    for key in ("balanced_accuracy", "accuracy", "macro_f1", "loss", "ece"):
        out.print(f"{key:>18}: {metrics[key]:.4f}")
    for precision in ("95", "99"):
        share, threshold = (metrics[f"auto_label_{k}_{precision}"] for k in ("share", "threshold"))
        out.print(
            f"{'auto-label @' + precision + ' %':>18}: {share:.1%} of titles "
            f"(confidence >= {threshold:.4f})"
        )
    out.print(f"{'rows':>18}: {metrics['rows']:,}")


@app.command()
def ensemble(
    models: Annotated[
        list[Path],
        typer.Argument(
            metavar="DIR...", help="Model folders trained on the same categories (2 or more)."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Ensemble folder to write.")],
    validation: Annotated[
        Path | None,
        typer.Option(
            help="Labelled file the members did not train on: the weights (non-negative, "
            "summing to 1, of the best log-likelihood) and a temperature are fitted on it. "
            "Without it: equal weights, no temperature beyond each member's."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Combine trained model folders into one ensemble that averages their probabilities.

    Predict, serve and evaluate take the ensemble folder like any model folder. The members
    are copied into OUTPUT/members/. To train members and ensemble in one go:
    `prodcat train` with model.family: ensemble.
    """
    from prodcat.workflow.ensemble import combine_folders

    setup_logging(quiet=True)
    model, calibration, scores = combine_folders(models, output, validation)
    summary = {
        "output": str(output),
        "members": [str(m) for m in models],
        "weights": model.weights,
        "temperature": calibration.temperature,
        "validation": scores,
    }
    if as_json:
        print_json(summary)
        return
    for member, weight in zip(models, model.weights):
        out.print(f"{weight:.3f}  {member}")
    if scores is not None:
        out.print(
            f"validation ({scores['rows']:,} rows): BAC {scores['balanced_accuracy']:.4f}, "
            f"ECE {scores['ece']:.4f} (temperature {calibration.temperature:.3f})"
        )
    out.print(f"ensemble folder: {output}")


RuntimeOpt = Annotated[
    str,
    typer.Option(
        help="torch: the folder's weights; onnx: its exported model.onnx under ONNX Runtime, "
        "no torch imported (`prodcat export MODEL` writes it)."
    ),
]
OnnxOpt = Annotated[
    Path | None, typer.Option(help="The ONNX file of --runtime onnx. Default: MODEL/model.onnx.")
]


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Model folder written by `prodcat train`.")],
    titles: Annotated[
        list[str] | None, typer.Argument(help="Titles to classify (or use --input).")
    ] = None,
    input: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help="Title file: CSV or JSON lines, plain or .gz, with the model's title column "
            "(and an optional id column), e.g. the challenge's test.csv. '-' reads stdin: "
            "JSON lines if its first line starts with '{', CSV if its first line is a header "
            "naming the title column, else one title per line.",
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="File to write ('-' or none: stdout)."),
    ] = None,
    top_k: Annotated[int, typer.Option(help="The k most likely categories of each title.")] = 1,
    batch_size: Annotated[
        int, typer.Option(help="Titles per model call (up to 256 take the fast path).")
    ] = 256,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="csv: the id (or line), title, category_1, probability_1, ... columns; "
            "jsonl: one object per title; submission: the challenge's id,category file.",
        ),
    ] = "csv",
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per title (--format jsonl).")
    ] = False,
    runtime: RuntimeOpt = "torch",
    onnx: OnnxOpt = None,
    min_confidence: Annotated[
        float | None,
        typer.Option(
            "--min-confidence",
            help="Between 0 and 1: a title whose top (calibrated) probability is below it is "
            "undecided, to be labelled by a person: its categories are left empty (csv, "
            "submission) or null (jsonl), its probabilities kept.",
        ),
    ] = None,
) -> None:
    """Predict the categories of titles given as arguments, in a file or on stdin.

    Rows keep the input's id, or its line (an argument's position) when it has none.
    Probabilities are calibrated (the temperature saved with the model).

    Input is read and written batch by batch; on a terminal, stderr shows titles/s.
    """
    from prodcat.serving.predict_files import run_predict

    if as_json and fmt == "submission":
        raise ConfigError("--json writes JSON lines, --format submission a CSV: give one of them")
    setup_logging(quiet=True)
    fmt = "jsonl" if as_json else fmt
    run_predict(
        model, titles or [], input, output, top_k, batch_size, fmt, runtime, onnx, min_confidence
    )


@app.command()
def serve(
    model: Annotated[Path, typer.Argument(help="Model folder written by `prodcat train`.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Server processes, each with its own copy of the model.")
    ] = 1,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="PRODCAT_API_KEY",
            show_envvar=True,
            help="Require this key in the X-API-Key header of /predict and /model.",
        ),
    ] = None,
    max_batch: Annotated[
        int,
        typer.Option(help="Most titles of concurrent requests run in one model call (1: off)."),
    ] = 256,
    max_wait_ms: Annotated[
        float,
        typer.Option(help="Longest a request waits for others to share its model call."),
    ] = 5.0,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
    runtime: RuntimeOpt = "torch",
    onnx: OnnxOpt = None,
) -> None:
    """Serve a model over HTTP.

    `POST /predict`, `GET /health`, `GET /model`; the API's documentation at `/docs`.

    Requests that arrive together are grouped into one model call (micro-batching).
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {port}")
    for name, value, least in (("--workers", workers, 1), ("--max-batch", max_batch, 1)):
        if value < least:
            raise ConfigError(f"{name} must be at least {least}, got {value}")
    if max_wait_ms < 0:
        raise ConfigError(f"--max-wait-ms must be at least 0, got {max_wait_ms}")
    from prodcat.serving.app import serve as run_server  # fastapi: main() names the extra

    setup_logging(quiet=False)
    run_server(
        model,
        host=host,
        port=port,
        workers=workers,
        api_key=api_key or None,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        access_log=access_log,
        runtime=runtime,
        onnx_path=onnx,
    )


@data_app.command("prepare")
def data_prepare(
    input: Annotated[Path, typer.Option("--input", "-i", help="Title file (CSV or JSON lines).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the encoded cache.")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Encode a file into a reusable cache, with its vocabulary and label map.

    Prints a summary of what was read, kept and dropped.
    """
    from prodcat.config import build_config
    from prodcat.data.dataset import load_splits
    from prodcat.progress import file_progress
    from prodcat.workflow.train import make_featurizer  # registers the model families

    setup_logging(quiet)
    cfg = build_config(config, overrides)
    cfg.data.cache_dir = output
    started = time.perf_counter()
    featurizer = make_featurizer(cfg)
    splits = load_splits(cfg.data, input, progress=file_progress(not quiet), featurizer=featurizer)
    featurizer.save(output)
    splits.labels.save(output / "labels.txt")
    for line in splits.summary.lines():
        out.print(line)
    out.print(
        f"cache in {output} ({time.perf_counter() - started:.1f} s); "
        f"vocab.txt, featurizer.json and labels.txt written"
    )


@data_app.command("stats")
def data_stats(
    file: Annotated[Path, typer.Argument(help="Title file (CSV or JSON lines, plain or .gz).")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Summarise a title file.

    Rows, columns, languages, label quality, categories and title lengths.
    """
    from prodcat.config import build_config
    from prodcat.data.stats import file_stats, file_summary

    setup_logging(quiet=True)
    cfg = build_config(config, overrides, check_family=False)  # the data section is read
    if as_json:
        print_json(file_summary(file, cfg.data))
        return
    for line in file_stats(file, cfg.data):
        out.print(line, markup=False)


@vectors_app.command("train")
def vectors_train(
    input: Annotated[Path, typer.Option("--input", "-i", help="Title file (CSV or JSON lines).")],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Vectors file: .txt, .txt.gz or .vec (text), .bin"),
    ],
    dim: Annotated[int, typer.Option(help="Dimensions of each vector.")] = 300,
    algorithm: Annotated[
        str, typer.Option(help="fasttext (subword-aware) or word2vec (skip-gram).")
    ] = "fasttext",
    epochs: Annotated[int, typer.Option(help="Passes over the titles.")] = 5,
    min_count: Annotated[int, typer.Option(help="Fewest occurrences of a word kept.")] = 2,
    window: Annotated[int, typer.Option(help="Context words on each side.")] = 5,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Train word vectors on the titles of a file (gensim, word2vec text format).

    Titles are tokenised as `data.tokenizer` says (e.g. `--set
    data.tokenizer.strip_accents=false`).
    """
    from prodcat.config import build_config
    from prodcat.data.vectors import train_vectors
    from prodcat.progress import file_progress

    setup_logging(quiet)
    cfg = build_config(config, overrides, check_family=False)  # data and training are read
    report = file_progress(not quiet)
    summary = train_vectors(
        input,
        output,
        cfg.data,
        dim=dim,
        algorithm=algorithm,
        epochs=epochs,
        min_count=min_count,
        window=window,
        seed=cfg.training.seed,
        progress=lambda done, total: report(str(input), done, total),
    )
    out.print(
        f"{summary['words']:,} words x {dim} from {summary['titles']:,} titles "
        f"in {summary['seconds']:.1f} s -> {output}"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the command, turning user errors into one line and exit code 2 (a
    missing optional dependency or an unwritable folder: exit code 1)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["train"]:
            from prodcat.cli.course import is_course_command, translate

            if is_course_command(args[1:]):
                run_training(**translate(args[1:]))
                return
        app(args=args, prog_name="prodcat", standalone_mode=True)
    except ProdcatError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ModuleNotFoundError as e:
        # An optional dependency group not installed (`prodcat[train]`, ...): say which.
        from prodcat.extras import missing_extra_message

        message = missing_extra_message(e, args)
        if message is None:
            raise
        console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except OSError as e:
        # A folder that cannot be written, a full disk: the environment, not a bug.
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt as e:
        _stopped(e, args)
    except SystemExit as e:
        # Typer turns a KeyboardInterrupt into exit code 130 itself; the cause is in the chain.
        if e.code == 130:
            _stopped(e, args)
        raise


def _stopped(error: BaseException, args: list[str]) -> None:
    """Exit as shells report a process a signal stopped: 128 + the signal's number."""
    terminated = _caused_by_terminate(error)
    message = ("terminated" if terminated else "interrupted") + _resume_hint(args)
    console.print(message, soft_wrap=True)  # one line, even in a pipe (80 columns)
    sys.exit(143 if terminated else 130)


def _caused_by_terminate(error: BaseException | None) -> bool:
    # Click re-raises a KeyboardInterrupt of its own; the Terminated is in its chain.
    while error is not None:
        if isinstance(error, Terminated):
            return True
        error = error.__cause__ or error.__context__
    return False


def _resume_hint(args: list[str]) -> str:
    if args[:1] in (["compare"], ["tune"]):
        return ": finished runs and checkpoints are kept; run the same command to continue"
    if args[:1] != ["train"]:
        return ""
    return ": the last checkpoint is kept; continue with `prodcat train ... --resume`"


if __name__ == "__main__":
    main()

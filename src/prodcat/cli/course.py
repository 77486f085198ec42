"""The DiploDatos course's command line, accepted unchanged after `prodcat train`.

The course trained with `python -m experiment.mlp --train-data ... --classifier CNN ...`;
its users can type the same options after `prodcat train`. They are translated into
prodcat's config (dotted overrides), then training runs exactly as with prodcat's options.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prodcat.errors import ConfigError

# Options whose presence marks a course-style command line.
COURSE_FLAGS = {
    "--train-data",
    "--test-data",
    "--validation-data",
    "--token-to-index",
    "--pretrained-embeddings",
    "--embeddings-size",
    "--hidden-layers",
    "--train-max-size",
    "--validation-max-size",
    "--test-max-size",
    "--random-buffer-size",
    "--cnn-filters-length",
    "--cnn-filters-count",
    "--classifier",
    "--lstm_hidden_size",
    "--lstm-hidden-size",
    "--lstm_num_layers",
    "--lstm-num-layers",
    "--freeze-embeddings",
    "--batch-size",
}
CLASSIFIERS = {"MLP": "mlp", "CNN": "cnn", "LSTM": "lstm", "RNN": "lstm", "GRU": "gru"}
LANGUAGES = {"spanish": "spanish", "es": "spanish", "portuguese": "portuguese", "pt": "portuguese"}


def is_course_command(args: list[str]) -> bool:
    return any(a.split("=", 1)[0] in COURSE_FLAGS for a in args)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit; we report instead
        raise ConfigError(f"course-style options: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prodcat train", description="the course's options", allow_abbrev=False)
    p.add_argument("--train-data", required=True, type=Path)
    p.add_argument("--validation-data", type=Path)
    p.add_argument("--test-data", type=Path)
    p.add_argument("--token-to-index", type=Path)
    p.add_argument("--pretrained-embeddings", type=Path)
    p.add_argument("--language")
    p.add_argument("--classifier", type=str.upper, default="MLP")
    p.add_argument("--embeddings-size", type=int)
    p.add_argument("--hidden-layers", type=int, nargs="+")
    p.add_argument("--dropout", type=float)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", "--learning-rate", type=float)
    p.add_argument("--train-max-size", type=int)
    p.add_argument("--validation-max-size", type=int)
    p.add_argument("--test-max-size", type=int)
    p.add_argument("--random-buffer-size", type=int)
    p.add_argument("--freeze-embeddings", action="store_true", default=None)
    p.add_argument("--cnn-filters-length", type=int, nargs="+")
    p.add_argument("--cnn-filters-count", type=int)
    for name in ("hidden_size", "num_layers"):
        p.add_argument(
            f"--lstm_{name}", f"--lstm-{name.replace('_', '-')}", dest=f"lstm_{name}", type=int
        )
    p.add_argument("--bidirectional", action="store_true", default=None)
    # prodcat's own options still work beside the course's
    p.add_argument("--config", type=Path)
    p.add_argument("--output", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-track", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true")
    p.add_argument("--experiment")
    p.add_argument("--run-name")
    return p


def translate(args: list[str]) -> dict[str, Any]:
    """Course options -> keyword arguments of prodcat's `train` command."""
    ns = _parser().parse_args(args)
    if ns.classifier not in CLASSIFIERS:
        if ns.classifier in ("BERT", "TRANSFORMER"):
            raise ConfigError(
                "--classifier BERT is not yet supported (it comes with pretrained models)"
            )
        raise ConfigError(f"--classifier {ns.classifier}: choose one of {', '.join(CLASSIFIERS)}")
    if ns.pretrained_embeddings is not None:
        raise ConfigError(
            "--pretrained-embeddings is not yet supported (it comes with pretrained models)"
        )
    family = CLASSIFIERS[ns.classifier]
    sets: dict[str, Any] = {"model.family": family}

    def put(key: str, value: Any) -> None:
        if value is not None:
            sets[key] = value

    if ns.language is not None:
        language = LANGUAGES.get(ns.language.lower(), ns.language)
        put("data.language", language)
    put("data.token_to_index", str(ns.token_to_index) if ns.token_to_index else None)
    put("data.max_rows", ns.train_max_size)
    put("data.validation_max_rows", ns.validation_max_size)
    put("data.test_max_rows", ns.test_max_size)
    put("data.shuffle_buffer", ns.random_buffer_size)
    put("model.embedding_dim", ns.embeddings_size)
    put("model.hidden_layers", ns.hidden_layers)
    put("model.dropout", ns.dropout)
    put("model.freeze_embeddings", ns.freeze_embeddings)
    put("training.epochs", ns.epochs)
    put("training.batch_size", ns.batch_size)
    put("training.lr", ns.lr)
    if family == "cnn":
        put("model.filters_length", ns.cnn_filters_length)
        put("model.num_filters", ns.cnn_filters_count)
    if family in ("lstm", "gru"):
        put("model.hidden_size", ns.lstm_hidden_size)
        put("model.num_layers", ns.lstm_num_layers)
        put("model.bidirectional", ns.bidirectional)
    overrides = [f"{k}={_yaml(v)}" for k, v in sets.items()] + ns.overrides
    return {
        "config": ns.config,
        "train": ns.train_data,
        "validation": ns.validation_data,
        "test": ns.test_data,
        "output": ns.output,
        "overrides": overrides,
        "resume": ns.resume,
        "no_track": ns.no_track,
        "quiet": ns.quiet,
        "experiment": ns.experiment,
        "run_name": ns.run_name,
    }


def _yaml(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

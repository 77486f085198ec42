"""prodcat's optional dependency groups (`pip install 'prodcat[EXTRA]'`) and which modules
each brings, so that a command run without one says what to install, in one line, instead of
ending in an ImportError.

The base install is what `predict` and `serve` need with `--runtime onnx` (numpy, pyarrow,
pydantic, pyyaml, typer, rich); `train` brings torch and MLflow; tests/test_install.py checks
pyproject.toml against this.
"""

from __future__ import annotations

# What each extra is for, as the message names it.
EXTRAS = {
    "train": "the training dependencies",
    "serve": "the HTTP server's dependencies",
    "onnx": "ONNX Runtime",
    "encoders": "the sentence encoders",
    "team": "PostgreSQL's driver",
}
# Top-level module -> the extra that installs it.
MODULE_EXTRA = {
    "torch": "train",
    "mlflow": "train",
    "safetensors": "train",
    "sklearn": "train",
    "scipy": "train",
    "matplotlib": "train",
    "PIL": "train",
    "pandas": "train",
    "gensim": "train",
    "optuna": "train",
    "fastapi": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "httpx": "serve",
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "transformers": "encoders",
    "tokenizers": "encoders",
    "psycopg": "team",
}
COMMAND_GROUPS = ("data", "vectors", "models")  # commands with subcommands


def command_name(args: list[str]) -> str:
    """`prodcat train`, `prodcat vectors train`: the command `args` run, for messages."""
    words = args[:2] if args[:1] and args[0] in COMMAND_GROUPS else args[:1]
    return " ".join(["prodcat", *(w for w in words if not w.startswith("-"))])


def missing_extra_message(error: ModuleNotFoundError, args: list[str]) -> str | None:
    """What to install when `error` says an extra's module is missing; None when the
    missing module belongs to no extra (a bug or a broken install, not a choice)."""
    module = (error.name or "").split(".")[0]
    extra = MODULE_EXTRA.get(module)
    if extra is None:
        return None
    command = command_name(args)
    message = f"{command} needs {EXTRAS[extra]} ({module} is not installed): "
    message += f"pip install 'prodcat[{extra}]'"
    if extra == "train" and command in ("prodcat predict", "prodcat serve"):
        message += ", or export the model (`prodcat export`) and add --runtime onnx"
    return message

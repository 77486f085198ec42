"""Where the CLI writes: results to stdout (`out`, whole lines in a pipe), logs, progress and
errors to stderr (`console`), and how logging is set up for a command."""

from __future__ import annotations

import json
import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)  # logs, progress and errors
out = Console(soft_wrap=True)  # results: whole lines in a pipe, never cut at 80 columns
NOISY_LOGGERS = ("mlflow", "alembic", "urllib3", "matplotlib", "git", "gensim", "smart_open")


def print_json(value) -> None:
    """A machine-readable result: one line of JSON on stdout, nothing else there."""
    print(json.dumps(value, ensure_ascii=False), flush=True)


def setup_logging(quiet: bool) -> None:
    """Log to stderr: through Rich on a terminal, as whole lines in a pipe or a file (Rich
    would wrap them at 80 columns); warnings only when `quiet`."""
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, show_time=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        handlers=[handler],
        force=True,
    )
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow's retries of a tracking server that is gone, one warning each: prodcat says in
    # one line what came of them.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

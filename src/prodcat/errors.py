"""Errors meant for users: the CLI turns each into a one-line message and a non-zero exit."""

from __future__ import annotations

from pathlib import Path


class ProdcatError(Exception):
    """Base of every error caused by the user's input rather than by a bug."""


class ConfigError(ProdcatError):
    """A config file, a `--set` override or a command-line option is invalid."""


class DataError(ProdcatError):
    """An input file is unreadable or holds a bad row.

    The message names the file and, where known, the line and the field.
    """

    def __init__(
        self,
        problem: str,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ):
        self.problem = problem
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        where = self.path or ""
        if line is not None:
            where += f":{line}"
        prefix = f"{where}: " if where else ""
        if field is not None:
            prefix += f"field '{field}': "
        super().__init__(prefix + problem)


class TrackingError(ProdcatError):
    """The MLflow store cannot be reached, or stopped answering before a run was logged."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `timeout`, a container runtime) stops a run as Ctrl-C does."""

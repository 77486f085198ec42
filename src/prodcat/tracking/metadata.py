"""Where runs go, and what a run records about where it ran: the source's git commit,
library versions, a digest of each data file, the run's name. No mlflow here."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_URI = "sqlite:///mlflow.db"
DIGEST_BLOCK = 1 << 20
DIGEST_BLOCKS = 16


def tracking_uri(uri: str | None = None) -> str:
    """The store runs go to: `uri`, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def redacted(uri: str) -> str:
    """`uri` as a message shows it: without its password."""
    parts = urlparse(uri)
    if not parts.password:
        return uri
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def git_commit(folder: str | Path | None = None) -> str | None:
    """The commit checked out in `folder`'s repository (default: prodcat's source), if any."""
    return _git(folder, "rev-parse", "HEAD")


def _git(folder: str | Path | None, *args: str) -> str | None:
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def source_tags() -> dict[str, str]:
    """MLflow's standard source tags: the entry point's name, and the commit and branch of
    prodcat's source when it runs from a git checkout."""
    entry = Path(sys.argv[0])  # `prodcat`, a script, or a package's __main__.py (python -m)
    name = (entry.parent if entry.name == "__main__.py" else entry).name
    tags = {"mlflow.source.name": name or "python"}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        branch = _git(None, "rev-parse", "--abbrev-ref", "HEAD")
        if branch and branch != "HEAD":
            tags["mlflow.source.git.branch"] = branch
    return tags


def default_run_name(family: str, output: str | Path) -> str:
    """The model folder's name (`mlp-20250101-120000` by default), led by the family when the
    name does not already say it."""
    name = Path(output).resolve().name
    return name if family in name else f"{family}-{name}"


def file_digest(path: str | Path) -> str:
    """A fingerprint of a file's content, the same wherever the file lies: SHA-256 of its size
    and bytes (for files over 16 MiB, of 16 evenly spaced 1 MiB blocks); 12 hex digits."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= DIGEST_BLOCK * DIGEST_BLOCKS:
            digest.update(f.read())
        else:
            for i in range(DIGEST_BLOCKS):
                f.seek(
                    i * (size - DIGEST_BLOCK) // (DIGEST_BLOCKS - 1)
                )  # the last one ends the file
                digest.update(f.read(DIGEST_BLOCK))
    return digest.hexdigest()[:12]


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("prodcat", "torch", "numpy", "pyarrow", "mlflow", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out

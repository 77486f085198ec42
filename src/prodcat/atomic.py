"""Files written so that a kill or a crash at any moment leaves the old file or the new one,
never a half-written one: write under a temporary name in the same folder, fsync, rename."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prodcat.fault_points import pause_point

# The process's umask, read once (reading it means setting it), so that files written under a
# temporary name (safetensors writes those mode 0600) get the mode a plain write gives them:
# a service running as another user must be able to read a model folder.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def usual_permissions(path: str | Path) -> None:
    """Give a file the mode `open(path, "w")` would have given it (0644 under umask 022)."""
    os.chmod(path, 0o666 & ~_UMASK)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    """Flush a file's content to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an error, fsync it
    and rename it to `path`. On an error (or a kill) `path` keeps its old content."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        fsync_file(tmp)
        usual_permissions(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno and not e.filename:  # a full disk: say where
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """`Path.write_text` (UTF-8), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def publish_folder(staging: str | Path, folder: str | Path, last: tuple[str, ...] = ()) -> None:
    """Move every entry of `staging` into `folder` by rename (each file atomically), the
    names in `last` after all others, then remove `staging`.

    `staging` must lie on the same file system, e.g. inside `folder`. Files are fsynced
    before they move, so a file found under its final name is whole.
    """
    staging, folder = Path(staging), Path(folder)
    entries = {entry.name: entry for entry in staging.iterdir()}
    for name in last:  # an old marker must not vouch for a folder half replaced
        if name in entries:
            (folder / name).unlink(missing_ok=True)
    for name in sorted(set(entries) - set(last)):
        _move(entries[name], folder / name)
        pause_point("model_folder")  # a test kills the process with the folder half moved
    fsync_dir(folder)  # everything else is in place before the last names appear
    for name in last:
        if name in entries:
            _move(entries[name], folder / name)
    fsync_dir(folder)
    shutil.rmtree(staging, ignore_errors=True)


def _move(entry: Path, target: Path) -> None:
    if entry.is_dir():
        for file in entry.rglob("*"):
            if file.is_file():
                fsync_file(file)
                usual_permissions(file)
        if target.exists():
            # A folder cannot replace a folder in one rename: move the old one aside first.
            old = target.with_name(f".{target.name}.{os.getpid()}.old")
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(entry, target)
    else:
        fsync_file(entry)
        usual_permissions(entry)
        os.replace(entry, target)

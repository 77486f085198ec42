"""`manifest.json` in a model folder: the SHA-256 of every file that rebuilds the model, and
the folder format's version, checked before a model is loaded (no torch needed).

A folder whose weights, vocabulary or config were cut short or changed after training is
refused with a message naming the file, rather than loaded into a model that predicts
something else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from prodcat.atomic import sha256_file
from prodcat.errors import ProdcatError
from prodcat.version import __version__

MANIFEST = "manifest.json"
FORMAT = 1  # bump when a folder's layout changes in a way older prodcat cannot read


def write_manifest(folder: str | Path, extra: Mapping[str, Path] | None = None) -> Path:
    """Record the checksum of every file now in `folder` (subfolders too), and of the `extra`
    files under the relative names they have (or will have) in the folder: an ensemble's
    members, already in place beside the folder being staged."""
    folder = Path(folder)
    files = {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    files.update({name: sha256_file(path) for name, path in sorted((extra or {}).items())})
    manifest = {"format": FORMAT, "prodcat_version": __version__, "files": files}
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return path


def verify_model_folder(folder: str | Path) -> None:
    """Fail with a `ProdcatError` naming the file if the folder is from a newer prodcat, or a
    file it lists is missing or differs from its checksum. Folders saved before manifests
    existed have none and pass."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        version, files = manifest["format"], manifest["files"]
        if not isinstance(version, int) or not isinstance(files, dict):
            raise ValueError("wrong types")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ProdcatError(f"{path}: damaged model manifest ({e})") from None
    if version > FORMAT:
        raise ProdcatError(
            f"{folder}: saved by prodcat {manifest.get('prodcat_version', '?')} in model folder "
            f"format {version}; this prodcat {__version__} reads format {FORMAT} "
            "(upgrade prodcat)"
        )
    for name, digest in files.items():
        file = folder / name
        if not file.is_file():
            raise ProdcatError(f"{file}: missing from the model folder (listed in {MANIFEST})")
        if sha256_file(file) != digest:
            raise ProdcatError(
                f"{file}: damaged or modified since training (its checksum differs from {MANIFEST})"
            )


def listed_files(folder: str | Path) -> list[str] | None:
    """The files (relative paths) the folder's manifest lists with itself, or None without
    a manifest: what a copy of the model must hold."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    return [*json.loads(path.read_text(encoding="utf-8"))["files"], MANIFEST]

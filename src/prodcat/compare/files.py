"""The YAML files of `prodcat compare` and `prodcat tune`, read and checked the same way."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from prodcat.config import read_yaml_file
from prodcat.errors import ConfigError


class SpecFile(BaseModel):
    """A strict YAML file whose relative paths are tried from the current folder first, then
    from the file's own folder."""

    model_config = ConfigDict(extra="forbid")

    kind: ClassVar[str] = "spec"  # what the file is, in messages
    _folder: Path | None = None

    @classmethod
    def load(cls, path: str | Path):
        """Read and check the file; the first problem is a one-line error naming it."""
        path = Path(path)
        tree = read_yaml_file(path, cls.kind)
        try:
            spec = cls.model_validate(tree)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{path}: {where}: {first['msg']}") from None
        spec._folder = path.resolve().parent
        spec.check(path)
        return spec

    def check(self, path: Path) -> None:
        """Checks beyond the schema's; raise ConfigError naming `path`."""

    def resolve(self, path: Path) -> Path:
        """`path` as given when it exists (or is absolute), else beside the file if there."""
        if path.is_absolute() or path.exists() or self._folder is None:
            return path
        beside = self._folder / path
        return beside if beside.exists() else path

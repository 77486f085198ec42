"""Model families by name: `@register("lstm")` makes a `TextClassifier` buildable from config.

A family's config schema is registered beside it in `prodcat.config` (`@model_config("lstm")`);
the model class names it as `config_class`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prodcat.errors import ConfigError

if TYPE_CHECKING:
    from prodcat.models.base import TextClassifier

_FAMILIES: dict[str, type[TextClassifier]] = {}


def register(name: str):
    """Class decorator: register a `TextClassifier` subclass under `name`."""

    def wrap(cls: type[TextClassifier]) -> type[TextClassifier]:
        _FAMILIES[name] = cls
        return cls

    return wrap


def _load_builtin() -> None:
    import prodcat.models  # noqa: F401  (registers the built-in families)


def families() -> list[str]:
    """Names of every registered family."""
    _load_builtin()
    return sorted(_FAMILIES)


def get_family(name: str) -> type[TextClassifier]:
    _load_builtin()
    if name not in _FAMILIES:
        raise ConfigError(f"unknown model family '{name}' (known: {', '.join(families())})")
    return _FAMILIES[name]

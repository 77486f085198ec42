"""Model families by name. A family is registered once, in its own file, with everything that
makes it: `@register("lstm", config=RNNConfig, featurizer=word_featurizer)` on its model class.

- `config`: the schema of its `model:` section (a `ModelConfig` subclass): a config naming the
  family is validated by it, so a setting the family does not have is an error;
- `featurizer`: `(data config, model config) -> featurizer`, how its model reads titles (None
  for a family of families, whose members read titles their own way);
- the model class: built from the config and the fitted featurizer, trained by the loop,
  saved and loaded as a model folder.

The built-in families register when `prodcat.models` is imported; a family of your own
registers when its module is. This module imports nothing of prodcat but its errors, so the
config layer below every family can look a family's schema up here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prodcat.errors import ConfigError


@dataclass(frozen=True)
class Family:
    """What one registration says."""

    name: str
    config: type  # a prodcat.config.ModelConfig subclass
    model: type  # the model class (a prodcat.models.base.TextClassifier, or a model of models)
    featurizer: Callable[..., Any] | None  # (DataConfig, its config) -> an unfitted featurizer


_FAMILIES: dict[str, Family] = {}


def register(name: str, *, config: type, featurizer: Callable[..., Any] | None):
    """Class decorator: register the model class as family `name`."""

    def wrap(model: type) -> type:
        _FAMILIES[name] = Family(name, config, model, featurizer)
        return model

    return wrap


def families() -> list[str]:
    """Names of every registered family."""
    return sorted(_FAMILIES)


def family(name: str) -> Family:
    """The family registered as `name`; an unknown one is a `ConfigError` naming the known."""
    if not isinstance(name, str) or name not in _FAMILIES:
        known = ", ".join(families()) or "none: `import prodcat.models` registers the built-in ones"
        raise ConfigError(f"model.family: unknown model family '{name}' (known: {known})")
    return _FAMILIES[name]

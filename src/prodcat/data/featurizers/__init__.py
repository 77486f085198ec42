"""Featurizers: how titles become model input (`base.py` says what one is). A new kind of
model input is one featurizer class here, listed in `KINDS` so that model folders name it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prodcat.data.featurizers.base import (
    SPEC_FILE,
    Featurizer,
    TokenFeaturizer,
    VectorFeaturizer,
    read_spec,
)
from prodcat.data.featurizers.sentence import SentenceFeaturizer
from prodcat.data.featurizers.subword import SubwordFeaturizer
from prodcat.data.featurizers.words import NgramFeaturizer, VocabularyFeaturizer
from prodcat.errors import ProdcatError

if TYPE_CHECKING:
    from prodcat.config import DataConfig, ModelConfig

__all__ = [
    "SPEC_FILE",
    "Featurizer",
    "NgramFeaturizer",
    "SentenceFeaturizer",
    "SubwordFeaturizer",
    "TokenFeaturizer",
    "VectorFeaturizer",
    "VocabularyFeaturizer",
    "load_featurizer",
]

KINDS: dict[str, type[Featurizer]] = {
    kind.kind: kind
    for kind in (VocabularyFeaturizer, NgramFeaturizer, SentenceFeaturizer, SubwordFeaturizer)
}


def load_featurizer(
    folder: str | Path, data: DataConfig, model: ModelConfig | None = None
) -> Featurizer:
    """The fitted featurizer a model folder saved (its `featurizer.json` names the kind)."""
    kind = read_spec(folder).get("kind")
    if kind not in KINDS:
        path = Path(folder) / SPEC_FILE
        raise ProdcatError(f"{path}: unknown featurizer '{kind}' (known: {', '.join(KINDS)})")
    return KINDS[kind].load(folder, data, model)

"""The one config of a run: pydantic models, YAML files and dotted `--set` overrides.

Unknown keys are errors, so a typo in a config or an override fails loudly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator

from prodcat.data.readers import ColumnsConfig
from prodcat.data.text import TokenizerConfig
from prodcat.errors import ConfigError

Size = float | int  # a fraction of the rows (< 1) or a row count (>= 1)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(StrictModel):
    """Which rows to read and how to turn them into token ids."""

    format: Literal["auto", "csv", "jsonl"] = "auto"
    columns: ColumnsConfig = Field(default_factory=ColumnsConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    max_tokens: int = Field(32, ge=1, le=1024, description="tokens kept per title")
    language: str | None = Field(None, description="keep only rows of this language")
    file_language: str | None = Field(
        None, description="the language of every row of files without a language column"
    )
    label_quality: Literal["reliable", "unreliable"] | None = None
    max_rows: int | None = Field(None, ge=1, description="seeded random sample of training rows")
    validation_max_rows: int | None = Field(None, ge=1)
    test_max_rows: int | None = Field(None, ge=1)
    validation_size: Size = Field(0.1, ge=0, description="split off when no validation file")
    test_size: Size = Field(0.1, ge=0, description="split off when no test file")
    min_count: int = Field(1, ge=1, description="fewest training occurrences of a kept token")
    max_vocab: int | None = Field(None, ge=3)
    token_to_index: Path | None = Field(
        None, description="the course's token_to_index.json.gz: use its `data` token ids"
    )
    shuffle_buffer: int | None = Field(
        None, ge=1, description="shuffle within windows of this many rows; None: full shuffle"
    )
    class_weights: bool = False
    unreliable_weight: float = Field(1.0, ge=0)
    seed: int = 0
    cache_dir: Path | None = None
    cache_vocab: int = Field(2_000_000, ge=100, description="distinct tokens a cache keeps")


class ModelConfig(StrictModel):
    """Settings every family shares: embedder -> encoder -> head."""

    family: str = "mlp"
    embedding_dim: int = Field(200, ge=1)
    ngram_buckets: int = Field(
        0, ge=0, description="hashed word-bigram embeddings added to the tokens (0: none)"
    )
    freeze_embeddings: bool = False
    sparse_embeddings: bool = Field(
        True, description="update only the embedding rows a batch uses (much faster)"
    )
    pretrained_embeddings: Path | None = None
    embedding_dropout: float = Field(0.0, ge=0, lt=1)
    # A linear head over the encoding: deeper heads overfit tens of thousands of titles.
    hidden_layers: list[int] = Field(default_factory=list)
    dropout: float = Field(0.0, ge=0, lt=1)


class TrainingConfig(StrictModel):
    """The loop's settings."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    eval_batch_size: int = Field(2048, ge=1)
    optimizer: Literal["adam", "adamw"] = "adam"
    # High for Adam: sparse embedding rows are updated only when their token appears.
    lr: float = Field(0.02, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "warmup_cosine", "one_cycle"] = "warmup_cosine"
    warmup_fraction: float = Field(0.05, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    patience: int | None = Field(3, ge=1, description="epochs without a better validation BAC")
    seed: int = 0
    checkpoint_minutes: float | None = Field(
        10.0, gt=0, description="also checkpoint inside an epoch this often (None: per epoch only)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True
    threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    progress: bool = True


class TrackingConfig(StrictModel):
    """Where runs are recorded."""

    enabled: bool = True
    uri: str | None = Field(
        None, description="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    )
    experiment: str = "prodcat"
    run_name: str | None = None


class Config(StrictModel):
    """Everything a run needs, saved beside every model."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: SerializeAsAny[ModelConfig] = Field(
        default_factory=lambda: {"family": "mlp"}, validate_default=True
    )
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("model", mode="before")
    @classmethod
    def _family_config(cls, value: Any) -> Any:
        # Each family validates its own keys, so `hidden_size` on an MLP is an error.
        from prodcat.registry import family_config_class

        if isinstance(value, ModelConfig):
            value = value.model_dump()
        if isinstance(value, dict):
            return family_config_class(value.get("family", "mlp")).model_validate(value)
        return value

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def flat(self) -> dict[str, Any]:
        """Dotted keys and values, as logged to the tracker."""
        return dict(_flatten(self.model_dump(mode="json")))


def _flatten(tree: dict[str, Any], prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`training.epochs=2` -> ("training.epochs", 2); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def build_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    """Load a YAML config (or the defaults) and apply dotted overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: a config must be a mapping of sections")
    items = (
        overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides or [])
    )
    for key, value in items:
        _set_dotted(tree, key, value)
    # A new family starts from its own defaults rather than another family's keys.
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_describe(e, path)) from None


def _describe(error: ValidationError, path: str | Path | None) -> str:
    where = f"{path}: " if path else ""
    problems = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        problems.append(f"{loc}: {item['msg']}")
    return where + "invalid config: " + "; ".join(problems)


def load_config(path: str | Path) -> Config:
    """Load a config saved beside a model or a run."""
    return build_config(path)

"""prodcat's config: the sections of a run (pydantic models), YAML files and dotted `--set`
overrides.

Unknown keys are errors, so a typo in a config or an override fails loudly. The `model:`
section is checked by the schema its family registered (`prodcat.registry`; each family's
settings live in the family's file). This module imports nothing else from prodcat but its
errors and the registry, so any part of the package can take a typed config without
importing the data layer or torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from prodcat import registry
from prodcat.errors import ConfigError

Size = float | int  # a fraction of the rows (< 1) or a row count (>= 1)


class StrictModel(BaseModel):
    # No setting means infinity or NaN: `lr: .inf` is a typo, not a learning rate.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ColumnsConfig(StrictModel):
    """Names of the columns prodcat reads; None where a file has no such column."""

    text: str = "title"
    label: str = "category"
    language: str = "language"
    quality: str = "label_quality"
    id: str = "id"
    # The course's token ids; read by nothing: prodcat encodes `text` (see TokenizerConfig.course).
    tokens: str = "data"


class TokenizerConfig(StrictModel):
    """How titles become tokens; part of every cache key and model config."""

    lowercase: bool = True
    # Titles mix "camión" and "camion"; folding them gave +0.008 validation BAC (meli-es-51k).
    strip_accents: bool = True
    # "shape": every digit becomes 0 (1700w -> 0000w), keeping magnitude and unit while
    # folding model numbers together; "keep": as written; "drop": tokens that are only
    # digits go; "strip": digits are deleted from tokens (1700w -> w; the course's rule).
    numbers: Literal["shape", "keep", "drop", "strip"] = "shape"
    min_token_length: int = Field(1, ge=1, description="shorter tokens (after the above) go")
    # "letters": split on anything but letters, digits and marks; "punctuation": on
    # whitespace and ASCII punctuation only, so "marca®" stays whole (the course's rule).
    separator: Literal["letters", "punctuation"] = "letters"
    # Words dropped after normalisation: NLTK's list of a language, as the course dropped them
    # ("course" is "spanish", as configs written before the Portuguese list name it).
    stop_words: Literal["none", "spanish", "portuguese", "course"] = "none"

    @classmethod
    def course(cls, language: str = "spanish") -> TokenizerConfig:
        """The DiploDatos course's preprocessing of titles in `language` (spanish or
        portuguese), as its `token_to_index` tokens were made."""
        return cls(
            strip_accents=False,
            numbers="strip",
            min_token_length=3,
            separator="punctuation",
            stop_words="portuguese" if language == "portuguese" else "spanish",
        )


class DataConfig(StrictModel):
    """Which rows to read and how to turn them into token ids."""

    train: Path | None = Field(None, description="training file (default: the bundled sample)")
    validation: Path | None = Field(None, description="without it, validation_size is split off")
    test: Path | None = Field(None, description="without it, test_size is split off")
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
    split_sampled: bool = Field(
        False,
        description="with max_rows: sample max_rows rows first and split validation and test "
        "off the sample (the comparison study's protocol); else max_rows caps training rows",
    )
    validation_max_rows: int | None = Field(None, ge=1)
    test_max_rows: int | None = Field(None, ge=1)
    validation_size: Size = Field(0.1, ge=0, description="split off when no validation file")
    test_size: Size = Field(0.1, ge=0, description="split off when no test file")
    min_count: int = Field(1, ge=1, description="fewest training occurrences of a kept token")
    max_vocab: int | None = Field(
        300_000,
        ge=3,
        description="keep the most frequent tokens only, this many ids in all (None: every "
        "token); 300,000 holds every word of meli-es-51k (28 k) and bounds the embedding "
        "table of the whole challenge (927 k words at 20 M rows)",
    )
    unknown_buckets: int | None = Field(
        None,
        ge=0,
        description="words outside the vocabulary hash into this many rows of their own "
        "instead of sharing [UNK]; None: the words max_vocab drops, if it drops any, in up to "
        "100,000 rows (0 rows, so [UNK], when it keeps every word)",
    )
    token_to_index: Path | None = Field(
        None,
        description="the course's token_to_index.json.gz: its tokens and ids are the vocabulary",
    )
    shuffle_buffer: int | None = Field(
        None, ge=1, description="shuffle within windows of this many rows; None: full shuffle"
    )
    bucket_by_length: bool = Field(
        False,
        description="train on batches of titles of similar length (less padding for RNNs and "
        "transformers); batches are still drawn in a shuffled order",
    )
    prefetch_batches: int = Field(
        4, ge=0, description="batches a background thread builds ahead of the model (0: none)"
    )
    class_weights: bool = False
    unreliable_weight: float = Field(1.0, ge=0)
    seed: int = 0
    cache_dir: Path | None = None
    cache_vocab: int = Field(2_000_000, ge=100, description="distinct tokens a cache keeps")

    @model_validator(mode="before")
    @classmethod
    def _course_tokenizer(cls, value: Any) -> Any:
        # A token_to_index file lists the course's tokens: titles must be cut as the course cut
        # them (its language's stop words), or its words would not be found. An explicit
        # tokenizer still wins.
        if isinstance(value, dict) and value.get("token_to_index") and "tokenizer" not in value:
            course = TokenizerConfig.course(str(value.get("language") or "spanish").lower())
            value = {**value, "tokenizer": course.model_dump()}
        return value


class ModelConfig(StrictModel):
    """The `model:` section: `family` names the model family, whose own config (a subclass,
    in the family's file, `prodcat.registry`) holds the family's settings and only them."""

    family: str = "mlp"


class UncheckedModelConfig(ModelConfig):
    """A saved model section read without its family's schema: `family` and the other keys
    as they are. What a reader of a model folder gets when it imports no family (the ONNX
    runtime, which needs no torch, reads only the data section and the featurizer's file)."""

    model_config = ConfigDict(extra="allow")


def family_config(value: Any, check: bool = True) -> Any:
    """A model section validated by its family's schema (`family`, default mlp); with
    `check` false, an `UncheckedModelConfig` (no family module is needed)."""
    if isinstance(value, ModelConfig):
        value = value.model_dump()
    if not isinstance(value, dict):
        return value
    if not check:
        return UncheckedModelConfig.model_validate(value)
    schema = registry.family(value.get("family", "mlp")).config
    return schema.model_validate(value)


class TrainingConfig(StrictModel):
    """The loop's settings."""

    epochs: int = Field(10, ge=1)
    epoch_rows: int | None = Field(
        None,
        ge=1,
        description="an epoch (validation, checkpoint, early stopping) is this many training "
        "rows, read on through the shuffled data across passes (None: one pass over the data)",
    )
    max_steps: int | None = Field(
        None,
        ge=1,
        description="stop after this many optimizer steps; sets the run's length in place of "
        "epochs (the last epoch may be cut short)",
    )
    # Rows per optimizer step; under torchrun each process takes batch_size / processes.
    # "auto": on CUDA, the largest power of two that fits in memory (see training/batch_size.py).
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 256
    eval_batch_size: int = Field(2048, ge=1)
    # Sparse embedding rows are updated by LazyAdam; without them, torch's fused Adam(W).
    # Adagrad: the full-rank linear family's (LazyAdagrad over sparse rows).
    optimizer: Literal["adam", "adamw", "adagrad"] = "adam"
    # High for Adam: sparse embedding rows are updated only when their token appears.
    lr: float = Field(0.02, gt=0)
    encoder_lr: float | None = Field(
        None, gt=0, description="rate of everything below the head (None: lr)"
    )
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "warmup_cosine", "one_cycle"] = "warmup_cosine"
    warmup_fraction: float = Field(0.05, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    gradient_accumulation: int = Field(1, ge=1, description="batches per optimizer step")
    loss: Literal["cross_entropy", "squared_hinge"] = Field(
        "cross_entropy",
        description="what training minimises: cross-entropy, or the one-vs-rest squared hinge "
        "of scikit-learn's LinearSVC (the full-rank linear family's; validation loss is "
        "cross-entropy either way)",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup: float = Field(
        0.0,
        ge=0,
        description="mixup of title vectors: each step pairs the batch's titles at random and "
        "trains on lam x one + (1 - lam) x the other (their vectors before the head, and their "
        "losses), lam drawn from Beta(mixup, mixup) (0: off; 0.2-0.4 is usual)",
    )
    teacher: Path | None = Field(
        None,
        description="distil a teacher: a model folder, or a config YAML trained first (into "
        "OUTPUT-teacher) on this run's data and split; its probabilities on the training rows "
        "are computed once (cached) and the loss adds the divergence from them",
    )
    distill_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="with a teacher, the share of the loss that is the KL divergence from its "
        "probabilities (the rest: the labels')",
    )
    distill_temperature: float = Field(
        1.0,
        gt=0,
        description="with a teacher, both softmaxes at this temperature (the divergence scaled "
        "by its square)",
    )
    teacher_top_k: int = Field(
        16, ge=1, description="the teacher's most likely categories kept per title"
    )
    distill_copies: int = Field(
        0,
        ge=0,
        description="with a teacher, perturbed copies of each training title (a span of its "
        "words, words dropped or swapped for other titles' words, half of it joined to half "
        "of another) that the student also learns the teacher's probabilities on: a teacher "
        "is all but certain of its own training titles, and the copies show what else it "
        "knows (the training split grows copies + 1 times)",
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="validate and save an exponential moving average of the weights, updated "
        "after every step with this decay (0: off; 0.999 is usual)",
    )
    swa_epochs: int = Field(
        0,
        ge=0,
        description="validate (and save, if best) the mean of the weights at the end of each "
        "of the last this many epochs: stochastic weight averaging (0: off)",
    )
    monitor: Literal["bac", "loss"] = Field(
        "bac", description="what picks the best epoch and stops early: validation BAC or loss"
    )
    patience: int | None = Field(3, ge=1, description="epochs without a better monitored value")
    validation_rows_during: int | None = Field(
        None,
        ge=1,
        description="score this fixed, seeded sample of the validation rows after each epoch "
        "(best epoch, early stopping); all of them are scored once at the end (None: all)",
    )
    seed: int = 0
    score_test: bool = Field(
        True, description="score the test rows at the end (tuning trials leave them unread)"
    )
    calibrate: bool = Field(
        True,
        description="fit temperature scaling on the validation rows after training; the model "
        "folder keeps it (calibration.json) and predictions use it",
    )
    checkpoint_minutes: float | None = Field(
        10.0,
        gt=0,
        description="also checkpoint inside an epoch when this long has passed since the last "
        "checkpoint (None: at epochs' ends only)",
    )
    checkpoint_every_epoch: bool = Field(
        True,
        description="checkpoint at the end of every epoch; false: at an epoch's end only when "
        "checkpoint_minutes have passed, and at the run's last epoch (a sparse model's "
        "checkpoint of ~0.5 GB costs seconds: an ensemble's short members skip most of them)",
    )
    keep_checkpoint: bool = Field(
        False,
        description="keep the training state (checkpoint.safetensors: the optimizer's moments, "
        "as large as the model or twice) in a finished run's folder, to extend the run with "
        "--resume and more epochs; false: the folder holds what prediction needs",
    )
    weights_float16: bool = Field(
        False,
        description="store the finished model's weight matrices in 16 bits: half the folder, "
        "widened to float32 when loaded (the predictions then differ by float16's rounding; "
        "an ensemble's members alike)",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True
    threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    compile: bool = Field(False, description="torch.compile the model for training")
    distributed_timeout_minutes: float = Field(
        10.0, gt=0, description="under torchrun, how long a rank waits for the others at most"
    )
    progress: bool = True

    @model_validator(mode="after")
    def _smoothing_needs_cross_entropy(self) -> TrainingConfig:
        if self.label_smoothing and self.loss != "cross_entropy":
            raise ValueError("label_smoothing smooths cross-entropy: set loss: cross_entropy")
        return self

    @model_validator(mode="after")
    def _teacher_without_mixup(self) -> TrainingConfig:
        if self.teacher is not None and self.mixup:
            raise ValueError("a teacher's probabilities are per title: set mixup: 0 to distil")
        if self.distill_copies and self.teacher is None:
            raise ValueError("distill_copies are labelled by a teacher: set training.teacher")
        return self

    @model_validator(mode="after")
    def _one_average(self) -> TrainingConfig:
        if self.ema_decay and self.swa_epochs:
            raise ValueError("choose one average of the weights: ema_decay or swa_epochs")
        return self


class TrackingConfig(StrictModel):
    """Where runs are recorded."""

    enabled: bool = True
    uri: str | None = Field(
        None, description="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    )
    experiment: str = "prodcat"
    run_name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict, description="set on the run")


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
    def _family_config(cls, value: Any, info: ValidationInfo) -> Any:
        # Each family validates its own keys, so `hidden_size` on an MLP is an error.
        return family_config(value, check=(info.context or {}).get("check_family", True))

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


def read_yaml_file(path: str | Path, kind: str, shape: str = "") -> dict[str, Any]:
    """The mapping a YAML file holds; a missing file, invalid YAML or anything but a mapping
    is a one-line error naming the file (`kind`: what the file is, `shape`: what it holds)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a {kind} file")
    if not path.is_file():
        raise ConfigError(f"{path}: no such {kind} file")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}{_yaml_problem(e)}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: {shape or f'a {kind} file must be a mapping'}")
    return tree


def _yaml_problem(error: yaml.YAMLError) -> str:
    """`:LINE: invalid YAML: PROBLEM` on one line (PyYAML's own message spans several)."""
    mark = getattr(error, "problem_mark", None)
    where = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error)
    return f"{where}: invalid YAML: " + " ".join(str(problem).split())


def build_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    check_family: bool = True,
) -> Config:
    """Load a YAML config (or the defaults) and apply dotted overrides.

    The model section is checked by its family's schema, so the family must be registered
    (`import prodcat.models` registers the built-in ones); `check_family=False` leaves it
    unchecked, for commands that read only the data section.
    """
    tree = read_yaml_file(path, "config", "a config must be a mapping of sections") if path else {}
    items = (
        overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides or [])
    )
    for key, value in items:
        _set_dotted(tree, key, value)
    return validate_config(tree, path, check_family=check_family)


def validate_config(
    tree: dict[str, Any], path: str | Path | None = None, *, check_family: bool = True
) -> Config:
    """A `Config` of a mapping of sections; a problem is one `ConfigError` naming the key
    (and `path`, the file the mapping came from)."""
    try:
        return Config.model_validate(tree, context={"check_family": check_family})
    except ValidationError as e:
        raise ConfigError(_describe(e, path, tree)) from None
    except ConfigError as e:  # a validator's own (an unknown family): say which file
        if path is None:
            raise
        raise ConfigError(f"{path}: {e}") from None


def _describe(error: ValidationError, path: str | Path | None, tree: dict[str, Any]) -> str:
    where = f"{path}: " if path else ""
    model = tree.get("model") if isinstance(tree.get("model"), dict) else {}
    problems = []
    for item in error.errors():
        parts = [str(p) for p in item["loc"] if not str(p).startswith("function-")]
        loc = ".".join(parts)
        if item["type"] == "extra_forbidden" and parts[:1] == ["model"] and len(parts) == 2:
            # A setting of other families (embedding_dim on a transformer) names the family.
            family = model.get("family", "mlp")
            problems.append(f"{loc}: not a setting of the {family} family")
        else:
            problems.append(f"{loc}: {item['msg']}")
    return where + "invalid config: " + "; ".join(problems)


# The settings every family's config carried before each family had its own (prodcat 0.1.0
# folders written before 2026-12): a folder's config.yaml lists them whether or not its family
# used them, so reading a saved config drops those its family does not have.
_SHARED_BEFORE = (
    "embedding_dim",
    "ngram_buckets",
    "char_ngram_buckets",
    "char_ngram_min",
    "char_ngram_max",
    "char_ngrams_per_word",
    "word_dropout",
    "freeze_embeddings",
    "sparse_embeddings",
    "pretrained_embeddings",
    "embedding_dropout",
    "hidden_layers",
    "dropout",
)


def _without_unused_shared_settings(model: Any) -> Any:
    if not isinstance(model, dict) or not isinstance(model.get("family"), str):
        return model
    try:
        fields = registry.family(model["family"]).config.model_fields
    except ConfigError:
        return model  # reported when the config is validated
    model = {k: v for k, v in model.items() if k in fields or k not in _SHARED_BEFORE}
    if isinstance(model.get("members"), list):  # an ensemble's members, saved alike
        model["members"] = [
            {**m, "model": _without_unused_shared_settings(m.get("model"))}
            if isinstance(m, dict)
            else m
            for m in model["members"]
        ]
    return model


def load_config(path: str | Path, *, check_family: bool = True) -> Config:
    """Load a config saved beside a model or a run (`check_family=False`: without its
    family's schema, so that no family module is imported)."""
    tree = read_yaml_file(path, "config", "a config must be a mapping of sections")
    if check_family and "model" in tree:
        tree["model"] = _without_unused_shared_settings(tree["model"])
    return validate_config(tree, path, check_family=check_family)

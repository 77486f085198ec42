"""Every schema of prodcat: pydantic models, YAML files and dotted `--set` overrides.

Unknown keys are errors, so a typo in a config or an override fails loudly. This module
imports nothing else from prodcat but its errors, so any part of the package can take a
typed config without importing the data layer or torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

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
    # Words dropped after normalisation: "course" is NLTK's Spanish list, as the course used.
    stop_words: Literal["none", "course"] = "none"

    @classmethod
    def course(cls) -> TokenizerConfig:
        """The DiploDatos course's preprocessing, as its `token_to_index` tokens were made."""
        return cls(
            strip_accents=False,
            numbers="strip",
            min_token_length=3,
            separator="punctuation",
            stop_words="course",
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
    max_vocab: int | None = Field(None, ge=3)
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
        # them, or its words would not be found. An explicit tokenizer still wins.
        if isinstance(value, dict) and value.get("token_to_index") and "tokenizer" not in value:
            value = {**value, "tokenizer": TokenizerConfig.course().model_dump()}
        return value


MODEL_CONFIGS: dict[str, type[ModelConfig]] = {}


def model_config(family: str):
    """Class decorator: the config schema of the model family `family`."""

    def wrap(cls: type[ModelConfig]) -> type[ModelConfig]:
        MODEL_CONFIGS[family] = cls
        return cls

    return wrap


class ModelConfig(StrictModel):
    """Settings every family shares: embedder -> encoder -> head."""

    family: str = "mlp"
    embedding_dim: int = Field(200, ge=1)
    ngram_buckets: int = Field(
        0, ge=0, description="hashed word-bigram embeddings added to the tokens (0: none)"
    )
    # fastText's subword features: a word's vector is the mean of its own embedding and those
    # of the character n-grams of "<word>", hashed into this many rows. Words never seen in
    # training (brands, model codes, typos) then still have a vector built from their parts.
    char_ngram_buckets: int = Field(
        0, ge=0, description="hashed character n-grams of every word, seen or not (0: none)"
    )
    char_ngram_min: int = Field(3, ge=1, description="shortest character n-gram")
    char_ngram_max: int = Field(5, ge=1, description="longest character n-gram")
    char_ngrams_per_word: int = Field(
        40, ge=1, description="n-grams kept per word (the shortest first)"
    )
    word_dropout: float = Field(
        0.0, ge=0, lt=1, description="share of a title's words hidden at random in training"
    )
    freeze_embeddings: bool = Field(False, description="keep the pretrained vectors as they are")
    sparse_embeddings: bool = Field(
        True, description="update only the embedding rows a batch uses (much faster)"
    )
    pretrained_embeddings: Path | None = Field(
        None, description="word vectors (word2vec/fastText text, or .bin) to start from"
    )
    embedding_dropout: float = Field(0.0, ge=0, lt=1)
    # A linear head over the encoding: deeper heads overfit tens of thousands of titles.
    hidden_layers: list[int] = Field(default_factory=list)
    dropout: float = Field(0.0, ge=0, lt=1)

    @property
    def featurizer(self) -> str:
        """The kind of featurizer (prodcat.data.featurizer) the family's model reads."""
        return "ngrams" if self.char_ngram_buckets else "vocabulary"

    @model_validator(mode="after")
    def _ngram_sizes(self) -> ModelConfig:
        if self.char_ngram_min > self.char_ngram_max:
            raise ValueError(
                f"char_ngram_min ({self.char_ngram_min}) is above char_ngram_max "
                f"({self.char_ngram_max})"
            )
        return self

    @model_validator(mode="after")
    def _frozen_needs_vectors(self) -> ModelConfig:
        if self.freeze_embeddings and self.pretrained_embeddings is None:
            raise ValueError(
                "freeze_embeddings needs pretrained_embeddings (frozen random vectors learn "
                "nothing)"
            )
        return self


@model_config("mlp")
class MLPConfig(ModelConfig):
    """Mean (or max) of the title's word embeddings."""

    family: Literal["mlp"] = "mlp"
    # sqrt_sum: the sum over sqrt(tokens), the NNLM sentence encoders' pooling; with frozen
    # pretrained vectors it is the study's averaged-word-vectors encoder.
    pooling: Literal["mean", "max", "mean+max", "sqrt_sum"] = Field(
        "mean", description="over the title's tokens"
    )


@model_config("linear")
class LinearConfig(ModelConfig):
    """The classical baseline as a prodcat model: a TF-IDF-like bag of the title's words,
    their character n-grams and word bigrams, L2-normalised, into a linear layer.

    Every feature weighs its inverse document frequency (from the training rows); the bag is
    projected to `embedding_dim` dimensions (a low-rank linear model), or, with `full_rank`,
    scored by one weight per feature and category: scikit-learn's model, trained best with
    `training.loss: squared_hinge` and `optimizer: adagrad` (`configs/fast.yaml`).
    """

    family: Literal["linear"] = "linear"
    embedding_dim: int = Field(300, ge=1)
    full_rank: bool = Field(
        False,
        description="no projection: one weight per feature and category, as scikit-learn's "
        "linear models have (embedding_dim is unused; the table is features x categories, "
        "~1 GB for 400 k features and 632 categories)",
    )
    char_ngram_buckets: int = Field(
        200_000, ge=0, description="hashed character n-grams of every word, seen or not (0: none)"
    )
    ngram_buckets: int = Field(200_000, ge=0, description="hashed word-bigram features (0: none)")
    idf: bool = Field(True, description="weigh each feature by its inverse document frequency")
    separate_norms: bool = Field(
        False,
        description="L2-normalise the words (with their bigrams) and the character n-grams "
        "each on its own, as a FeatureUnion of two TfidfVectorizers does (false: the whole bag "
        "at once, ~150 n-grams then drowning ~10 words)",
    )
    min_count: int = Field(
        1,
        ge=1,
        description="features seen fewer times in training weigh 0 (scikit-learn's min_df)",
    )

    @model_validator(mode="after")
    def _full_rank_has_no_hidden_layers(self) -> LinearConfig:
        if self.full_rank and self.hidden_layers:
            raise ValueError(
                "full_rank scores categories straight from the bag: hidden_layers must be []"
            )
        return self


@model_config("cnn")
class CNNConfig(ModelConfig):
    """Convolutions of several widths, max-pooled over time."""

    family: Literal["cnn"] = "cnn"
    filters_length: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    num_filters: int = Field(128, ge=1, description="filters per width")


@model_config("lstm")
class RNNConfig(ModelConfig):
    """A recurrent encoder (LSTM; GRUConfig for a GRU)."""

    family: Literal["lstm"] = "lstm"
    hidden_size: int = Field(128, ge=1)
    num_layers: int = Field(1, ge=1)
    bidirectional: bool = True
    rnn_dropout: float = Field(0.0, ge=0, lt=1, description="between stacked layers")
    pooling: Literal["last", "mean", "max"] = "max"


@model_config("gru")
class GRUConfig(RNNConfig):
    family: Literal["gru"] = "gru"  # type: ignore[assignment]


@model_config("transformer")
class TransformerConfig(ModelConfig):
    """A pretrained transformer (BERT / RoBERTa / XLM-R style) fine-tuned end to end with its
    own tokenizer, a head over its pooled output. The word-embedding settings do not apply."""

    featurizer: ClassVar[str] = "subword"

    family: Literal["transformer"] = "transformer"
    pretrained: Literal["e5", "minilm"] | None = Field(
        None, description="a bundled model (e5: multilingual E5-small; minilm: English MiniLM)"
    )
    model_path: Path | None = Field(None, description="a local transformers folder")
    pooling: Literal["cls", "mean"] = "mean"
    text_prefix: str = Field("", description='put before each title (E5 reads "query: ")')
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> TransformerConfig:
        if (self.pretrained is None) == (self.model_path is None):
            raise ValueError("give exactly one of model.pretrained and model.model_path")
        return self


@model_config("encoder")
class EncoderConfig(ModelConfig):
    """A frozen pretrained sentence encoder turns each title into one vector; the head
    (hidden_layers, dropout) classifies it. The word-embedding settings do not apply."""

    featurizer: ClassVar[str] = "sentence"

    family: Literal["encoder"] = "encoder"
    encoder: Literal["use", "e5", "minilm", "transformers"] = Field(
        "use",
        description="use: multilingual USE (512-d); e5: multilingual E5-small (384-d); "
        "minilm: English MiniLM (384-d); transformers: the local folder encoder_path",
    )
    encoder_path: Path | None = Field(None, description="a sentence-transformers folder")
    text_prefix: str | None = Field(
        None, description='put before each title (None: "query: " for e5, nothing otherwise)'
    )
    max_length: int = Field(64, ge=1, description="pieces of a title the encoder reads")
    normalize: bool = Field(True, description="L2-normalise the vectors")
    encode_batch_size: int = Field(256, ge=1)


class EnsembleMember(StrictModel):
    """One member of an ensemble: the model config of another family, and the training
    settings it changes from the ensemble's own (`lr`, `epochs`, ...)."""

    model: SerializeAsAny[ModelConfig]
    training: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_path_or_model(cls, value: Any) -> Any:
        # `configs/cnn.yaml`: that file's model and training sections; a mapping with a
        # `family`: a model config, trained with the ensemble's training section.
        if isinstance(value, str | Path):
            tree = read_yaml_file(value, "ensemble member config")
            return {"model": tree.get("model") or {}, "training": tree.get("training") or {}}
        if isinstance(value, dict) and "model" not in value:
            return {"model": value}
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _family_config(cls, value: Any) -> Any:
        value = family_config(value)
        if isinstance(value, EnsembleConfig):
            raise ValueError("an ensemble member cannot be an ensemble (list its members)")
        return value

    @field_validator("training")
    @classmethod
    def _known_training_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        TrainingConfig.model_validate(value)  # a typo fails here, not after other members
        return value


@model_config("ensemble")
class EnsembleConfig(ModelConfig):
    """Several models of other families trained on the same data, one after another or
    `workers` at once; the saved model averages their (calibrated) probabilities with
    non-negative weights, summing to 1, that maximise the validation log-likelihood;
    temperature scaling goes on top.
    Members share the data section; the word-embedding settings here do not apply.

    Each member is a model config (a mapping with `family`), a mapping of `model` and
    `training` (settings that differ from the ensemble's), or the path of a config YAML
    (relative to the working folder) whose model and training sections are taken.
    """

    family: Literal["ensemble"] = "ensemble"
    members: list[EnsembleMember] = Field(min_length=2)
    workers: int = Field(
        1,
        ge=1,
        description="members trained at once, each in its own process (give each member "
        "training.threads so that workers x threads is at most the cores); 1: one after another",
    )

    @property
    def featurizer(self) -> str:
        return "ensemble"  # each member reads its own

    def member_config(self, cfg: Config, index: int) -> Config:
        """The full config member `index` trains with: `cfg` with its model and training.
        Its seed is `training.seed + index` unless it sets one, so that a member listed
        twice is a second draw, not a copy."""
        member = self.members[index]
        tree = cfg.model_dump(mode="json")
        tree["model"] = member.model.model_dump(mode="json")
        seed = {"seed": tree["training"]["seed"] + index}
        tree["training"] = {**tree["training"], **seed, **member.training}
        return Config.model_validate(tree)


def family_config(value: Any) -> Any:
    """A model config mapping validated by its family's schema (`family`, default mlp)."""
    if isinstance(value, ModelConfig):
        value = value.model_dump()
    if isinstance(value, dict):
        family = value.get("family", "mlp")
        if not isinstance(family, str) or family not in MODEL_CONFIGS:
            known = ", ".join(sorted(MODEL_CONFIGS))
            raise ConfigError(f"model.family: unknown model family '{family}' (known: {known})")
        return MODEL_CONFIGS[family].model_validate(value)
    return value


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
    def _family_config(cls, value: Any) -> Any:
        # Each family validates its own keys, so `hidden_size` on an MLP is an error.
        return family_config(value)

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
) -> Config:
    """Load a YAML config (or the defaults) and apply dotted overrides."""
    tree = read_yaml_file(path, "config", "a config must be a mapping of sections") if path else {}
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
    except ConfigError as e:  # a validator's own (an unknown family): say which file
        if path is None:
            raise
        raise ConfigError(f"{path}: {e}") from None


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

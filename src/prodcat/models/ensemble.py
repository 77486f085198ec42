"""The ensemble family: a model of models, whose probabilities are a weighted mean of its
members' calibrated probabilities.

Its members are models of other families, trained by `run()` like any model
(`prodcat.workflow.ensemble`); the ensemble adds weights and a temperature fitted on the
validation rows. An ensemble folder holds `config.yaml` (family `ensemble`, the members'
model configs and the data section), `labels.txt`, `ensemble.json` (the members' sub-folders
and weights), `calibration.json` (a temperature on top of the mean) and each member's own
model folder under `members/`; `manifest.json` covers them all.

The model is an `nn.Module` like any other: `EnsembleModel(batch)` returns logits, the log of
the weighted mean of probabilities (softmax gives the mean back), so evaluation, calibration
and serving use it unchanged. Since each member reads titles through its own featurizer, its
input is an `EnsembleBatch` (one `Batch` per member) and its rows an `EnsembleSplit`, made by
its `MemberReader`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, SerializeAsAny, field_validator, model_validator
from torch import nn

from prodcat.config import (
    Config,
    ModelConfig,
    StrictModel,
    TrainingConfig,
    family_config,
    read_yaml_file,
)
from prodcat.data.batches import Batch
from prodcat.data.dataset import Split
from prodcat.data.featurizers import Featurizer
from prodcat.data.vocab import LabelMap
from prodcat.errors import ConfigError, ProdcatError
from prodcat.evaluation.calibration import Calibration
from prodcat.evaluation.evaluate import calibrate_split
from prodcat.models.base import TitleReader
from prodcat.models.folder import load_model_folder
from prodcat.registry import register

ENSEMBLE_FILE = "ensemble.json"
MEMBERS_FOLDER = "members"


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


class EnsembleConfig(ModelConfig):
    """Several models of other families trained on the same data, one after another or
    `workers` at once; the saved model averages their (calibrated) probabilities with
    non-negative weights, summing to 1, that maximise the validation log-likelihood;
    temperature scaling goes on top. Members share the data section.

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

    def member_config(self, cfg: Config, index: int) -> Config:
        """The full config member `index` trains with: `cfg` with its model and training.
        Its seed is `training.seed + index` unless it sets one, so that a member listed
        twice is a second draw, not a copy. A member keeps no checkpoint when it is done."""
        member = self.members[index]
        tree = cfg.model_dump(mode="json")
        tree["model"] = member.model.model_dump(mode="json")
        seed = {"seed": tree["training"]["seed"] + index}
        done = {"keep_checkpoint": False}
        tree["training"] = {**tree["training"], **seed, **member.training, **done}
        return Config.model_validate(tree)


@dataclass
class EnsembleSpec:
    """What `ensemble.json` holds: member sub-folders (relative) and their weights."""

    members: list[str]
    weights: list[float]
    fitted_on: str | None = None  # what chose the weights: "validation", a file name, None

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / ENSEMBLE_FILE
        spec = {"members": self.members, "weights": self.weights, "fitted_on": self.fitted_on}
        path.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> EnsembleSpec:
        path = Path(folder) / ENSEMBLE_FILE
        if not path.is_file():
            raise ProdcatError(f"{folder}: not an ensemble folder (no {ENSEMBLE_FILE})")
        try:
            tree = json.loads(path.read_text(encoding="utf-8"))
            spec = cls(list(tree["members"]), [float(w) for w in tree["weights"]])
            spec.fitted_on = tree.get("fitted_on")
            if len(spec.members) != len(spec.weights) or not spec.members:
                raise ValueError("members and weights differ in length")
        except (ValueError, KeyError, TypeError) as e:
            raise ProdcatError(f"{path}: not an ensemble file ({e})") from None
        return spec


@dataclass
class EnsembleBatch:
    """One `Batch` per member, of the same titles; labels and weights of the first."""

    parts: list[Batch]

    @property
    def labels(self) -> torch.Tensor | None:
        return self.parts[0].labels

    @property
    def weights(self) -> torch.Tensor | None:
        return self.parts[0].weights

    def to(self, device: torch.device | str) -> EnsembleBatch:
        return EnsembleBatch([part.to(device) for part in self.parts])

    def __len__(self) -> int:
        return len(self.parts[0])


class EnsembleSplit:
    """The same rows of a file as each member encodes them; reads like a `Split`."""

    def __init__(self, parts: Sequence[Split]):
        first = parts[0]
        for part in parts[1:]:
            if len(part) != len(first) or not np.array_equal(part.labels, first.labels):
                raise ProdcatError(
                    f"the members read different {first.name} rows ({len(first)} and "
                    f"{len(part)}): their data settings must select the same rows"
                )
        self.parts = list(parts)
        self.name = first.name
        self.file, self.rows = first.file, first.rows
        self.labels, self.weights = first.labels, first.weights

    def __len__(self) -> int:
        return len(self.parts[0])

    def sample(self, rows: int | None, seed: int) -> EnsembleSplit:
        """The same fixed sample of every member's rows (`Split.sample`)."""
        return (
            self
            if rows is None or rows >= len(self)
            else EnsembleSplit([part.sample(rows, seed) for part in self.parts])
        )

    def subset(self, positions: np.ndarray) -> EnsembleSplit:
        """The same rows of every member's (`Split.subset`)."""
        return EnsembleSplit([part.subset(positions) for part in self.parts])

    def batches(self, batch_size: int, **options) -> Iterator[EnsembleBatch]:
        """The members' batches of the same rows, in step (no shuffling)."""
        for parts in zip(*(part.batches(batch_size) for part in self.parts)):
            yield EnsembleBatch(list(parts))


class MemberReader:
    """How an ensemble reads titles: each member through its own data settings and
    featurizer, the same titles in step; members whose featurizers encode alike (the same
    settings and vocabulary) share one encoding of a title."""

    def __init__(self, members: Sequence[TitleReader], folders: Sequence[str] = ()):
        self.members = list(members)
        self.folders = list(folders) or [f"{MEMBERS_FOLDER}/{i}" for i in range(len(members))]
        keys = [member.featurizer.encoding_key() for member in self.members]
        first = {key: i for i, key in reversed(list(enumerate(keys)))}
        self.encoder_of = [first[key] for key in keys]  # member -> the member that encodes

    def __call__(self, titles: list[str]) -> EnsembleBatch:
        batches: dict[int, Batch] = {}
        for i in sorted(set(self.encoder_of)):
            batches[i] = self.members[i](titles)
        return EnsembleBatch([batches[i] for i in self.encoder_of])

    def split(self, path: str | Path, labels: LabelMap, name: str = "evaluation") -> EnsembleSplit:
        return EnsembleSplit([member.split(path, labels, name) for member in self.members])

    def encodings(self) -> list[tuple[str, Featurizer]]:
        """One featurizer per distinct encoding (a member that encodes for others), with its
        member's folder: the exported graph's inputs."""
        return [(self.folders[i], self.members[i].featurizer) for i in sorted(set(self.encoder_of))]


@register("ensemble", config=EnsembleConfig, featurizer=None)
class EnsembleModel(nn.Module):
    """Logits log(sum_i w_i softmax(member_i / T_i)): the weighted mean of the members'
    calibrated probabilities, as logits. `folders`: the members' sub-folders."""

    def __init__(
        self,
        members: Sequence[nn.Module],
        weights: Sequence[float],
        temperatures: Sequence[float],
        folders: Sequence[str] = (),
    ):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.folders = list(folders) or [f"{MEMBERS_FOLDER}/{i}" for i in range(len(members))]
        self.n_classes = members[0].n_classes
        self.register_buffer("temperatures", torch.tensor(list(temperatures), dtype=torch.float32))
        self.register_buffer("log_weights", torch.zeros(len(members)))
        self.set_weights(weights)
        self.fitted_on: str | None = None
        self.init_report: dict[str, float] = {}

    def set_weights(self, weights: Sequence[float]) -> None:
        w = torch.tensor(list(weights), dtype=torch.float32)
        if len(w) != len(self.members) or (w < 0).any() or float(w.sum()) <= 0:
            raise ProdcatError(f"ensemble weights must be non-negative, one per member: {weights}")
        self.log_weights.copy_((w / w.sum()).log())

    @property
    def weights(self) -> list[float]:
        return self.log_weights.exp().tolist()

    def member_log_probs(self, batch: EnsembleBatch) -> torch.Tensor:
        """(M, B, C) calibrated log-probabilities of every member."""
        return torch.stack(
            [
                torch.log_softmax(member(part).float() / t, dim=1)
                for member, part, t in zip(self.members, batch.parts, self.temperatures)
            ]
        )

    def forward(self, batch: EnsembleBatch) -> torch.Tensor:
        log_probs = self.member_log_probs(batch)
        return torch.logsumexp(log_probs + self.log_weights.view(-1, 1, 1), dim=0)

    def calibrate(
        self, validation: EnsembleSplit, batch_size: int, device: torch.device, autocast=False
    ) -> tuple[Calibration, dict[str, float]]:
        """Set the weights that maximise the validation log-likelihood, then fit a
        temperature on top; return it and the validation metrics under both (members run in
        float32 here: a few passes over the validation rows)."""
        self.set_weights(fit_weights(true_class_log_probs(self, validation, batch_size, device)))
        return calibrate_split(self, validation, batch_size, device, autocast=False)

    @classmethod
    def build(cls, cfg: Config, n_classes: int, featurizer, initialise: bool = True):
        raise ConfigError("an ensemble is made of its members' runs: train it with run()")

    def onnx_module(self, reader: MemberReader) -> nn.Module:
        return EnsembleGraph(self, reader)

    def save_weights(self, folder: Path, float16: bool = False) -> None:
        """`ensemble.json`: the members' sub-folders (saved there by their own runs, or
        copied; `float16` is theirs to apply) and the weights."""
        EnsembleSpec(self.folders, self.weights, self.fitted_on).save(folder)

    @classmethod
    def load_folder(
        cls, folder: Path, cfg: Config, labels: LabelMap
    ) -> tuple[EnsembleModel, MemberReader]:
        """The members of an ensemble folder under its weights, and how they read titles."""
        spec = EnsembleSpec.load(folder)
        members = [load_model_folder(folder / name) for name in spec.members]
        for name, member in zip(spec.members, members):
            if list(member.labels.names) != list(labels.names):
                raise ProdcatError(f"{folder / name}: its categories differ from the ensemble's")
        model = cls(
            [m.model for m in members],
            spec.weights,
            [m.calibration.temperature for m in members],
            spec.members,
        )
        model.fitted_on = spec.fitted_on
        return model, MemberReader([m.reader for m in members], spec.members)


class EnsembleGraph(nn.Module):
    """The ensemble as one exported graph: called with the (ids, lengths) of each of the
    reader's encodings, each member reads the one its featurizer makes (`MemberReader`)."""

    def __init__(self, model: EnsembleModel, reader: MemberReader):
        super().__init__()
        self.members = nn.ModuleList(
            member.onnx_module(part) for member, part in zip(model.members, reader.members)
        )
        encoders = sorted(set(reader.encoder_of))
        self.slots = [encoders.index(i) for i in reader.encoder_of]
        self.temperatures, self.log_weights = model.temperatures, model.log_weights

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack(
            [
                torch.log_softmax(member(inputs[2 * slot], inputs[2 * slot + 1]) / t, dim=1)
                for member, slot, t in zip(self.members, self.slots, self.temperatures)
            ]
        )
        return torch.logsumexp(log_probs + self.log_weights.view(-1, 1, 1), dim=0)


def fit_weights(true_log_probs: np.ndarray, iterations: int = 500) -> np.ndarray:
    """Non-negative weights summing to 1 that maximise sum_n log sum_i w_i p_i(y_n), from
    (N, M) log-probabilities each member gives each row's true class: EM for the weights of a
    mixture, which raises the likelihood at every step."""
    log_p = np.asarray(true_log_probs, dtype=np.float64)
    members = log_p.shape[1]
    weights = np.full(members, 1.0 / members)
    if len(log_p) == 0:
        return weights
    for _ in range(iterations):
        joint = log_p + np.log(np.maximum(weights, 1e-300))
        top = joint.max(axis=1, keepdims=True)
        responsibility = np.exp(joint - top)
        responsibility /= responsibility.sum(axis=1, keepdims=True)
        updated = responsibility.mean(axis=0)
        if np.abs(updated - weights).max() < 1e-7:
            weights = updated
            break
        weights = updated
    return weights / weights.sum()


@torch.no_grad()
def true_class_log_probs(
    model: EnsembleModel, split: EnsembleSplit, batch_size: int, device: torch.device
) -> np.ndarray:
    """(N, M): the calibrated log-probability each member gives each row's true class."""
    model.eval()
    rows = []
    for batch in split.batches(batch_size):
        batch = batch.to(device)
        log_probs = model.member_log_probs(batch)  # (M, B, C)
        index = batch.labels.view(1, -1, 1).expand(log_probs.shape[0], -1, 1)
        rows.append(log_probs.gather(2, index).squeeze(2).T.cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, len(model.members)))

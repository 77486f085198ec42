"""A pretrained transformer fine-tuned end to end: the course's `--classifier BERT`.

The embedder is the `transformers` encoder itself (BERT / RoBERTa / XLM-R style, from a local
folder: the featurizer's); the head classifies its [CLS] or mean-pooled output. A new model
starts from the folder's weights (`initialise`); a reloaded one is built from the config that
the model folder keeps and gets its fine-tuned weights from `model.safetensors`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from prodcat.config import DataConfig
from prodcat.data.cache import default_cache_root
from prodcat.data.featurizers import SubwordFeaturizer
from prodcat.encoders.sentence import e5_folder, minilm_folder
from prodcat.models.base import ClassifierConfig, IdsAndLengths, TextClassifier, padding_mask
from prodcat.registry import register


class TransformerConfig(ClassifierConfig):
    """A pretrained transformer (BERT / RoBERTa / XLM-R style) fine-tuned end to end with its
    own tokenizer, a head over its pooled output."""

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


def subword_featurizer(data: DataConfig, model: TransformerConfig) -> SubwordFeaturizer:
    """The tokenizer of the model's folder: a bundled one, or `model_path`."""
    if model.pretrained == "e5":
        folder = e5_folder(data.cache_dir or default_cache_root())
    elif model.pretrained == "minilm":
        folder = minilm_folder()
    else:
        folder = model.model_path
    return SubwordFeaturizer.of_model(folder, data, model.text_prefix)


class PretrainedEncoder(nn.Module):
    """A `transformers` encoder: (ids, lengths) -> (B, T, hidden) states."""

    def __init__(self, folder, gradient_checkpointing: bool = False):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub
        from transformers import AutoConfig, AutoModel

        self.folder = folder
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        try:  # BERT-style models carry a pooler that mean or [CLS] pooling never uses
            self.model = AutoModel.from_config(config, add_pooling_layer=False)
        except TypeError:
            self.model = AutoModel.from_config(config)
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.dim = int(config.hidden_size)

    def load_pretrained(self) -> dict[str, float]:
        """The folder's weights (safetensors, or a pytorch_model.bin read with weights_only)."""
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        pretrained = AutoModel.from_pretrained(str(self.folder), local_files_only=True)
        missing, _ = self.model.load_state_dict(pretrained.state_dict(), strict=False)
        return {"pretrained.missing_weights": float(len(missing))}

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = padding_mask(lengths, input_ids.shape[1]).long()
        return self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state


@register("transformer", config=TransformerConfig, featurizer=subword_featurizer)
class TransformerClassifier(TextClassifier):
    def build_embedder(self, featurizer: SubwordFeaturizer) -> nn.Module:
        return PretrainedEncoder(featurizer.folder, self.cfg.gradient_checkpointing)

    def initialise(self, featurizer) -> dict[str, float]:
        return self.embedder.load_pretrained()

    def build_encoder(self, input_dim: int) -> int:
        return input_dim

    def encode(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.cfg.pooling == "cls":
            return states[:, 0]
        mask = padding_mask(lengths, states.shape[1]).unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1)

    def onnx_module(self, reader) -> nn.Module:
        # The exporter traces attention written out (eager), not a fused kernel it may not
        # know; the weights and what they compute are the same.
        self.embedder.model.set_attn_implementation("eager")
        return IdsAndLengths(self)

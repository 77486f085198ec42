"""A pretrained transformer fine-tuned end to end: the course's `--classifier BERT`.

The embedder is the `transformers` encoder itself (BERT / RoBERTa / XLM-R style, from a local
folder: the featurizer's); the head classifies its [CLS] or mean-pooled output. A new model
starts from the folder's weights (`initialise`); a reloaded one is built from the config that
the model folder keeps and gets its fine-tuned weights from `model.safetensors`.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from prodcat.config import TransformerConfig
from prodcat.data.batches import Batch
from prodcat.models.base import TextClassifier, padding_mask
from prodcat.registry import register


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


@register("transformer")
class TransformerClassifier(TextClassifier):
    config_class = TransformerConfig

    def build_embedder(self, featurizer) -> nn.Module:
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

    def title_vectors(
        self, input_ids: torch.Tensor | Batch, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, encoder_dim) of a `Batch`, or of (B, T) piece ids and their lengths."""
        if isinstance(input_ids, Batch):
            input_ids, lengths = input_ids.input_ids, input_ids.lengths
        if lengths is None:
            raise TypeError("forward(input_ids, lengths) needs the lengths")
        return self.encode(self.embedder(input_ids, lengths), lengths)

"""Training state (weights, optimizer, schedule, RNG, run progress) saved after every epoch and
every `training.checkpoint_minutes` inside one, so a killed run resumes where it stopped."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(folder: str | Path, state: dict[str, Any]) -> Path:
    """Write atomically: a kill during the write leaves the previous checkpoint intact."""
    path = Path(folder) / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)

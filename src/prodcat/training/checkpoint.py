"""Training state (weights, optimizer, schedule, RNG, run progress) saved after every epoch and
every `training.checkpoint_minutes` inside one, so a killed run resumes where it stopped.

One file, `checkpoint.safetensors`: the tensors as safetensors, everything else (run
progress, optimizer settings, schedule counters) as JSON in its header, with a SHA-256 of
both checked on load. Loading runs no code (no pickle), and the file is replaced atomically,
so a kill while it is written leaves the previous checkpoint whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from prodcat.atomic import atomic_path
from prodcat.errors import ConfigError
from prodcat.fault_points import pause_point

CHECKPOINT = "checkpoint.safetensors"
LEGACY_CHECKPOINT = "checkpoint.pt"  # older prodcat wrote pickles: read with weights_only
FORMAT = "prodcat-checkpoint/1"

log = logging.getLogger(__name__)


def save_checkpoint(folder: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` (nested dicts, lists, tuples, numbers, strings, tensors) atomically."""
    path = Path(folder) / CHECKPOINT
    tensors: dict[str, torch.Tensor] = {}
    tree = json.dumps(_encode(state, tensors, "", set()), allow_nan=True)
    metadata = {"format": FORMAT, "state": tree, "sha256": _digest(tree, tensors)}
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as e:  # how safetensors reports a full disk
            raise OSError(f"cannot write {path}: {e}") from None
        pause_point("checkpoint")
    (Path(folder) / LEGACY_CHECKPOINT).unlink(missing_ok=True)
    for stale in path.parent.glob(f".{CHECKPOINT}.*.tmp"):  # left by a killed process
        stale.unlink(missing_ok=True)
    return path


def load_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    """The folder's checkpoint, or None if it has none; a damaged one is a `ConfigError`."""
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        legacy = Path(folder) / LEGACY_CHECKPOINT
        return _load_legacy(legacy) if legacy.is_file() else None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise _damaged(path, f"unreadable ({e})") from None
    if metadata.get("format") != FORMAT or "state" not in metadata:
        raise _damaged(path, "not a prodcat checkpoint")
    if metadata.get("sha256") != _digest(metadata["state"], tensors):
        raise _damaged(path, "its checksum does not match its content")
    return _decode(json.loads(metadata["state"]), tensors)


def checkpoint_run_id(folder: str | Path) -> str | None:
    """The tracker's run id recorded in the folder's checkpoint, read from its header alone
    (no tensors loaded); None without a readable one."""
    path = Path(folder) / CHECKPOINT
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = json.loads((f.metadata() or {}).get("state", "{}")).get("state", {})
    except (SafetensorError, OSError, ValueError, AttributeError):
        return None
    run_id = state.get("run_id") if isinstance(state, dict) else None
    return run_id if isinstance(run_id, str) else None


def _damaged(path: Path, why: str) -> ConfigError:
    return ConfigError(f"{path}: damaged checkpoint: {why}; delete it to train from the start")


def _load_legacy(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle raises many kinds; none may load code
        raise _damaged(path, f"cannot be read safely ({type(e).__name__})") from None


def _digest(tree: str, tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(tree.encode())
    for key in sorted(tensors):
        tensor = tensors[key]
        digest.update(f"\0{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        raw = tensor.contiguous().reshape(-1).view(torch.uint8)
        digest.update(memoryview(raw.numpy()))
    return digest.hexdigest()


def _encode(value: Any, tensors: dict[str, torch.Tensor], key: str, storages: set[int]) -> Any:
    """A JSON tree of `value`, its tensors moved into `tensors` under their path."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in storages:  # safetensors refuses tensors that share memory
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
        return {"__tensor__": key}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {
            "__tuple__": [_encode(v, tensors, f"{key}/{i}", storages) for i, v in enumerate(value)]
        }
    if isinstance(value, list):
        return [_encode(v, tensors, f"{key}/{i}", storages) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors, f"{key}/{k}", storages) for k, v in value.items()}
        # Optimizer state is keyed by parameter number: keep the keys' types.
        return {
            "__items__": [
                [
                    _encode(k, tensors, f"{key}/{k}#", storages),
                    _encode(v, tensors, f"{key}/{k}", storages),
                ]
                for k, v in value.items()
            ]
        }
    raise TypeError(f"cannot checkpoint {type(value).__name__} at {key or '/'}")


def _decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, list):
        return [_decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__tuple__" in tree:
        return tuple(_decode(v, tensors) for v in tree["__tuple__"])
    if "__items__" in tree:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in tree["__items__"]}
    return {k: _decode(v, tensors) for k, v in tree.items()}


def remove_checkpoint(folder: str | Path) -> None:
    """Delete the folder's checkpoint (either format), if any."""
    for name in (CHECKPOINT, LEGACY_CHECKPOINT):
        (Path(folder) / name).unlink(missing_ok=True)

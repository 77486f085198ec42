"""Stochastic weight averaging (`training.swa_epochs`): the mean of the weights at the end of
each of the run's last epochs.

An epoch of the window is validated with the mean so far (that epoch's weights included), so
the best epoch, early stopping and the saved model choose between single epochs and these
means as they choose between epochs. The families have no batch norm, so the mean needs no
pass over the data to recompute statistics. Sparse tables are averaged whole, once an epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from prodcat.training.ema import holding


class EpochAverage:
    """The running mean of `model`'s trained parameters, one term per `add`."""

    def __init__(self, model: torch.nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.average = [torch.zeros_like(p) for p in self.params]
        self.count = 0

    @torch.no_grad()
    def add(self) -> None:
        """Take the current weights into the mean."""
        self.count += 1
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1 / self.count)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the mean inside the block, its own weights again after it."""
        with holding(self.params, self.average):
            yield

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "average": list(self.average)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore a saved mean; None (a checkpoint without one) starts an empty one."""
        if state is None:
            self.count = 0
            return
        saved = state["average"]
        if len(saved) != len(self.params) or any(
            a.shape != p.shape for a, p in zip(saved, self.params)
        ):
            raise ValueError("the checkpoint's weight mean does not match this model")
        torch._foreach_copy_(self.average, [a.to(p.device) for a, p in zip(saved, self.params)])
        self.count = int(state["count"])

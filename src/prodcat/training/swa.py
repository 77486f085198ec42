"""Stochastic weight averaging (`training.swa_epochs`): the mean of the weights at the end of
each of the run's last epochs, kept by torch's `AveragedModel`.

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
from torch.optim.swa_utils import AveragedModel

from prodcat.training.ema import holding


class EpochAverage:
    """The running mean of `model`'s parameters, one term per `add`."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.averaged = AveragedModel(model)

    def add(self) -> None:
        """Take the current weights into the mean."""
        self.averaged.update_parameters(self.model)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the mean inside the block, its own weights again after it."""
        with holding(list(self.model.parameters()), list(self.averaged.module.parameters())):
            yield

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore a saved mean; None (a checkpoint without one) starts an empty one."""
        if state is None:
            self.averaged.n_averaged.zero_()
            return
        try:
            self.averaged.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"the checkpoint's mean does not match the model ({e})") from None

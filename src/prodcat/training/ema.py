"""An exponential moving average of the weights (`training.ema_decay`), validated and saved in
place of the last step's weights.

After every optimizer step each trained tensor's average moves towards it:
`average += (1 - decay) * (weight - average)`, with the decay ramped up over the first
steps (`min(decay, (1 + n) / (10 + n))` after n steps, as TensorFlow's
ExponentialMovingAverage does) so the random start is soon forgotten. One fused
`_foreach_lerp_` over all tensors does it. Sparse embedding tables are averaged whole, every
row every step, although a step changes only the rows its batch used: simple and exact, at
the cost of reading and writing each table once a step (measured in benchmarks/README.md).
Under torchrun every rank holds the same weights, so every rank keeps the same average.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class WeightAverage:
    """The moving average of `model`'s trained parameters."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (call after each optimizer step)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1 - decay)

    @contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after it."""
        own = [p.detach().clone() for p in self.params]
        torch._foreach_copy_([p.data for p in self.params], self.average)
        try:
            yield
        finally:
            torch._foreach_copy_([p.data for p in self.params], own)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "average": list(self.average)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore a saved average; None (a checkpoint without one) starts from the weights."""
        if state is None:
            self.average = [p.detach().clone() for p in self.params]
            self.updates = 0
            return
        saved = state["average"]
        if len(saved) != len(self.params) or any(
            a.shape != p.shape for a, p in zip(saved, self.params)
        ):
            raise ValueError("the checkpoint's weight average does not match this model")
        torch._foreach_copy_(self.average, [a.to(p.device) for a, p in zip(saved, self.params)])
        self.updates = int(state["updates"])

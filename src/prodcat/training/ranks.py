"""Which process this is, and so which side effects are its to have.

Under `torchrun` every process trains on its shard of the batches; only rank 0 tracks the run,
writes checkpoints and the model folder, and prints. The loop asks a `Rank` and nothing else,
so adding the process group and the gradient policy (the torchrun issue) touches no side effect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Rank:
    """This process's place among `world` training processes."""

    index: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that tracks, checkpoints, saves and prints."""
        return self.index == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, world size), as `Split.batches` takes it."""
        return self.index, self.world

    @classmethod
    def from_env(cls) -> Rank:
        """The rank torchrun sets in $RANK and $WORLD_SIZE; rank 0 of 1 otherwise."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

"""`training.batch_size: auto` (`prodcat train --batch-size auto`): the largest batch that fits.

On CUDA, batches of the longest training titles (the most a batch can hold) go forward and
backward under the run's autocast, at 32, 64, 128, ... rows per process, until one raises
`torch.OutOfMemoryError` or its peak memory, plus what training keeps beside the weights
(Adam's two moments, the best epoch's copy, the EMA's), would pass `MEMORY_SHARE` of the
memory the GPU had free. The last size that fitted wins, capped at `MAX_BATCH` (larger
batches only change the optimisation at a fixed learning rate) and at the training rows.
Under torchrun every rank tries its own GPU and all take the smallest answer.

On CPU, memory is not what limits a batch: auto keeps the family's usual batch (as in
configs/) and says so.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from prodcat.data.dataset import Split
from prodcat.training.ranks import Rank

log = logging.getLogger(__name__)

MAX_BATCH = 16384  # rows per optimizer step, all processes together
MIN_BATCH = 32  # the first size tried per process
MEMORY_SHARE = 0.85  # of the free memory: room for the allocator's fragmentation
CPU_BATCH = {"transformer": 32}  # the configs' batch sizes; 256 for every other family
CPU_DEFAULT = 256


def auto_batch_size(
    model: torch.nn.Module,
    family: str,
    train: Split,
    device: torch.device,
    autocast: bool,
    rank: Rank,
    copies: int = 3,
) -> int:
    """The batch size (rows per step of all ranks together) `batch_size: auto` picks.

    `copies`: how many more copies of the trained weights training keeps (optimizer state,
    best weights, EMA), counted against the memory beside the batch's own.
    """
    world = rank.world
    rows = len(train) // world * world
    cap = min(MAX_BATCH, _power_of_two_at_most(max(rows, world)))
    if device.type != "cuda":
        chosen = min(CPU_BATCH.get(family, CPU_DEFAULT), cap)
        chosen -= chosen % world
        chosen = max(chosen, world)
        log.info(
            "batch size auto on %s: %d, the %s family's usual batch (memory does not limit "
            "a batch on a CPU; set training.batch_size to choose another)",
            device.type,
            chosen,
            family,
        )
        return chosen
    free, _ = torch.cuda.mem_get_info(device)
    budget = MEMORY_SHARE * (free + torch.cuda.memory_allocated(device))
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    kept = copies * weights
    longest = np.argsort(-np.asarray(train.file.lengths)[train.rows], kind="stable")

    def peak_memory(size: int) -> int | None:
        # Dropout draws random numbers: the run's own draws stay as if no batch had been tried.
        with torch.random.fork_rng(devices=[device]):
            return _peak_memory(model, _rows(train, longest[:size]), device, autocast)

    per_rank, peak = largest_fitting(peak_memory, budget - kept, cap // world)
    chosen = torch.tensor([max(per_rank, 1)], device=device)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(chosen, op=dist.ReduceOp.MIN)
    batch = int(chosen) * world
    if per_rank == 0:
        log.warning("batch size auto: even %d titles per process do not fit; trying 1", MIN_BATCH)
        peak = 0
    log.info(
        "batch size auto on %s: %d (peak %.0f MiB of a %.0f MiB budget; cap %d)",
        torch.cuda.get_device_name(device),
        batch,
        (peak + kept) / 2**20,
        budget / 2**20,
        cap,
    )
    return batch


def largest_fitting(
    peak_memory: Callable[[int], int | None], budget: float, most: int
) -> tuple[int, int]:
    """The largest of MIN_BATCH, twice that, ... up to `most` (or `most` itself when smaller)
    whose `peak_memory(size)` (None: out of memory) stays within `budget`, and that peak;
    (0, 0) when none does. Sizes are tried from the smallest, and no larger one after a
    failure: memory grows with the batch."""
    best, best_peak = 0, 0
    size = min(MIN_BATCH, most)
    while 0 < size <= most:
        peak = peak_memory(size)
        if peak is None or peak > budget:
            break
        best, best_peak = size, peak
        size *= 2
    return best, best_peak


def _power_of_two_at_most(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


def _rows(train: Split, positions: np.ndarray) -> Split:
    """The rows of `train` at `positions` (the batch of the longest titles, for one)."""
    pick = np.sort(positions)
    return dataclasses.replace(
        train,
        rows=train.rows[pick],
        labels=None if train.labels is None else train.labels[pick],
        weights=train.weights[pick],
    )


def _peak_memory(
    model: torch.nn.Module, rows: Split, device: torch.device, autocast: bool
) -> int | None:
    """Peak CUDA memory of one forward and backward pass on `rows`; None if out of memory."""
    batch = next(iter(rows.batches(len(rows))))
    peak: int | None = None
    model.train()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        batch = batch.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(batch)
        F.cross_entropy(logits.float(), batch.labels).backward()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    except RuntimeError as e:  # torch.OutOfMemoryError, or cuDNN's own failure to allocate
        if not isinstance(e, torch.OutOfMemoryError) and "out of memory" not in str(e).lower():
            raise
        # The traceback held the batch's tensors: they go below.
    finally:
        model.zero_grad(set_to_none=True)
        batch = logits = None
        gc.collect()
        torch.cuda.empty_cache()
    return peak

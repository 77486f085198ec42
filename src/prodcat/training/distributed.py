"""Several training processes under `torchrun`: the process group, DDP, and what ranks share.

`torchrun --nproc-per-node N -m prodcat train ...` starts N processes with $RANK,
$WORLD_SIZE, $LOCAL_RANK and a rendezvous address; `train()` then joins them in one process
group (gloo on CPU, NCCL on CUDA, one GPU per $LOCAL_RANK) and leaves it at the end. The
choices, and why:

- **Global batch.** `training.batch_size` is the rows per optimizer step whatever the
  number of processes: each rank takes `batch_size / world` rows of it (rank r the r-th of
  every `world` rows of the epoch's order), so batch k of the ranks together is batch k of
  one process, and learning rates and schedules carry over unchanged. Each rank scales its
  loss by the weight summed over all ranks (`global_weight`), so the averaged gradient is
  the one process's gradient, up to the order of floating-point sums.
- **Sparse embeddings outside DDP.** DDP's reducer does not all-reduce sparse gradients
  under NCCL, and making the tables dense sends and updates every row every step (a
  200-wide table of 1 M words is 800 MB a step). So DDP ignores the sparse tables and
  `reduce_sparse_gradients` all-gathers the rows each rank touched (a few thousand), then
  averages them; LazyAdam then updates exactly the rows one process would.
- **Evaluation on every rank.** Every rank scores all validation and test rows: metrics,
  the best epoch and early stopping come out the same everywhere with nothing to gather,
  at the cost of validation not getting faster with more processes. The stop decision is
  still broadcast from rank 0, since a rank-0-only callback (a tuning pruner) may take it.
- **No hang.** The group has a timeout (`training.distributed_timeout_minutes`): a rank
  that waits longer on a collective raises, and torchrun stops the others when one fails.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from prodcat.training.ranks import Rank

log = logging.getLogger(__name__)


def local_device(device: torch.device, rank: Rank) -> torch.device:
    """The device of this process: the GPU of its $LOCAL_RANK when training on CUDA."""
    if device.type != "cuda" or rank.world == 1:
        return device
    index = int(os.environ.get("LOCAL_RANK", rank.index)) % max(torch.cuda.device_count(), 1)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


@contextmanager
def process_group(rank: Rank, device: torch.device, timeout_minutes: float):
    """Join torchrun's process group for the block (if several ranks and not joined yet)."""
    if rank.world == 1 or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        rank=rank.index,
        world_size=rank.world,
        timeout=timedelta(minutes=timeout_minutes),
        device_id=device if device.type == "cuda" else None,
    )
    log.info("rank %d of %d joined the %s process group", rank.index, rank.world, backend)
    try:
        yield
        # Ranks leave together: rank 1 tearing gloo down while rank 0 still writes the model
        # folder was seen to abort it ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def sparse_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The trained embedding tables of `model` that produce sparse gradients."""
    return [
        (f"{name}.weight" if name else "weight", m.weight)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse and m.weight.requires_grad
    ]


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel, its sparse tables left to `reduce_sparse_gradients`."""
    from torch.nn.parallel import DistributedDataParallel

    sparse = sparse_parameters(model)
    # Every rank starts from rank 0's weights; DDP broadcasts only the parameters it manages.
    with torch.no_grad():
        for _, p in sparse:
            dist.broadcast(p.data, src=0)
    if sparse:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, [name for name, _ in sparse]
        )
    dense = [p for p in model.parameters() if p.requires_grad]
    if not any(id(p) not in {id(q) for _, q in sparse} for p in dense):
        return model  # nothing for DDP to reduce
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


@torch.no_grad()
def reduce_sparse_gradients(params: list[nn.Parameter], world: int) -> None:
    """Average the sparse gradients of `params` over the ranks: all-gather the touched rows."""
    for p in params:
        grad = p.grad.coalesce() if p.grad is not None else None
        if grad is None:
            grad = torch.sparse_coo_tensor(
                torch.zeros((1, 0), dtype=torch.int64, device=p.device),
                torch.zeros((0, *p.shape[1:]), dtype=p.dtype, device=p.device),
                p.shape,
            ).coalesce()
        rows, values = grad.indices()[0], grad.values()
        count = torch.tensor([rows.numel()], device=p.device)
        counts = [torch.zeros_like(count) for _ in range(world)]
        dist.all_gather(counts, count)
        counts = [int(c) for c in counts]
        most = max(counts)
        # all_gather wants tensors of one size: pad to the largest rank's rows.
        padded_rows = rows.new_zeros(most)
        padded_rows[: len(rows)] = rows
        padded_values = values.new_zeros((most, *values.shape[1:]))
        padded_values[: len(rows)] = values
        all_rows = [torch.empty_like(padded_rows) for _ in range(world)]
        all_values = [torch.empty_like(padded_values) for _ in range(world)]
        dist.all_gather(all_rows, padded_rows)
        dist.all_gather(all_values, padded_values)
        joined = torch.sparse_coo_tensor(
            torch.cat([r[:n] for r, n in zip(all_rows, counts)])[None],
            torch.cat([v[:n] for v, n in zip(all_values, counts)]) / world,
            p.shape,
            check_invariants=False,  # the rows come from valid gradients
        )
        p.grad = joined.coalesce()


def sum_over_ranks(value: torch.Tensor, world: int) -> torch.Tensor:
    """`value` summed over all ranks (itself with one rank)."""
    if world == 1:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value


def from_rank_zero(flags: list[bool], device: torch.device, world: int) -> list[bool]:
    """Rank 0's values of `flags`, on every rank."""
    if world == 1:
        return flags
    tensor = torch.tensor([int(f) for f in flags], device=device)
    dist.broadcast(tensor, src=0)
    return [bool(v) for v in tensor.tolist()]

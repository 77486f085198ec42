"""The one training loop, for every model family.

Read top to bottom: build the model, optimizer and schedule; resume from a checkpoint if
asked; per epoch, train over shuffled batches, evaluate on validation, keep the best
weights, tell the callbacks (the tracker, early stopping, ...), checkpoint; at the end
restore the best weights, score the test split and save the model folder. What only one
process may do (track, checkpoint, save, print) is asked of `rank.main`.

An epoch is one pass over the training rows, or `training.epoch_rows` rows of the stream of
passes (pass p shuffled by (seed, p)), so that a run over 20 M rows validates, checkpoints
and may stop early more often than once a pass; `training.max_steps` sets the run's length
in optimizer steps instead of epochs. Each epoch scores the validation rows, or a fixed
sample of them (`training.validation_rows_during`), with the moving average of the weights
when `training.ema_decay` is set (or the mean over the last `training.swa_epochs` epochs,
in those epochs); the end scores them all with the best epoch's weights.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prodcat.atomic import write_text_atomic
from prodcat.config import Config, TrainingConfig
from prodcat.data.batches import Batch
from prodcat.data.dataset import Split, Splits
from prodcat.errors import ConfigError
from prodcat.evaluation.evaluate import (
    calibrate_split,
    evaluate_split,
    save_predictions,
    weighted_loss,
)
from prodcat.evaluation.metrics import write_category_report
from prodcat.evaluation.plots import plot_history
from prodcat.models.folder import build_model, staging_folder, write_model_files
from prodcat.training.batch_size import auto_batch_size
from prodcat.training.callbacks import Callback, Callbacks, EarlyStopping, RunInfo, RunState
from prodcat.training.checkpoint import (
    CHECKPOINT,
    checkpoint_run_id,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from prodcat.training.device import device_name, resolve_device
from prodcat.training.distributed import (
    from_rank_zero,
    local_device,
    process_group,
    reduce_sparse_gradients,
    sparse_parameters,
    sum_over_ranks,
    wrap,
)
from prodcat.training.ema import WeightAverage
from prodcat.training.optim import clip_gradients, make_optimizer
from prodcat.training.prefetch import Prefetcher
from prodcat.training.progress import progress_bar
from prodcat.training.ranks import Rank
from prodcat.training.result import METRICS_FILE, RunResult, Scores
from prodcat.training.swa import EpochAverage

log = logging.getLogger(__name__)


def make_schedule(cfg: Config, optimizer: torch.optim.Optimizer, total_steps: int):
    t = cfg.training
    if t.schedule == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],  # keeps each group's own rate
            total_steps=total_steps,
            pct_start=max(t.warmup_fraction, 1e-3),
        )
    if t.schedule == "warmup_cosine":
        warmup = max(1, int(t.warmup_fraction * total_steps))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return 0.5 * (1 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def train(
    cfg: Config,
    splits: Splits,
    output_dir: str | Path,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    resume: bool = False,
    rank: Rank | None = None,
) -> RunResult:
    """Train `cfg.model` on `splits`; save the model folder in `output_dir`; return the result.

    `callbacks` hear the run's events (the MLflow tracker is one). `resume` continues from the
    folder's checkpoint. `rank` (default: from torchrun's environment) says which shard of
    the batches this process trains on and whether it has the side effects.
    """
    rank = rank or Rank.from_env()
    if cfg.training.batch_size != "auto" and cfg.training.batch_size % rank.world:
        raise ConfigError(
            f"training.batch_size {cfg.training.batch_size} does not split evenly across "
            f"{rank.world} processes (it is the rows per step of all of them together)"
        )
    device = local_device(resolve_device(cfg.training.device), rank)
    with process_group(rank, device, cfg.training.distributed_timeout_minutes):
        return _train(cfg, splits, Path(output_dir), callbacks, resume, rank, device)


def _train(cfg, splits, output: Path, callbacks, resume, rank: Rank, device) -> RunResult:
    t = cfg.training
    if rank.main:
        output.mkdir(parents=True, exist_ok=True)
    if t.threads:
        torch.set_num_threads(t.threads)
    if device.type == "cpu":
        # A trained softmax puts many probabilities below float32's normal range, and CPUs
        # compute on such subnormals ~100x slower: an MLP epoch over 16 M titles went from
        # 15 to 4 steps/s as the model learnt (benchmarks/README.md). Flushing them to zero
        # changes no result that matters and keeps the rate.
        torch.set_flush_denormal(True)
    autocast = device.type == "cuda" and t.bf16
    torch.manual_seed(t.seed)

    featurizer = splits.featurizer
    if featurizer.kind != cfg.model.featurizer:
        raise ConfigError(
            f"the {cfg.model.family} family reads a {cfg.model.featurizer} featurizer, but the "
            f"data was prepared with a {featurizer.kind} one (prepare_data(cfg) picks it)"
        )
    checkpoint = load_checkpoint(output) if resume else None
    # A resumed model gets its weights from the checkpoint: no vectors to read.
    model = build_model(cfg, len(splits.labels), featurizer, initialise=checkpoint is None)
    model = model.to(device)
    batch_size = _batch_size(cfg, model, splits, device, autocast, rank, checkpoint)
    plan = _Plan.of(cfg, splits.train.num_batches(batch_size // rank.world, rank.world), batch_size)
    optimizer = make_optimizer(
        model, name=t.optimizer, lr=t.lr, weight_decay=t.weight_decay, encoder_lr=t.encoder_lr
    )
    schedule = make_schedule(cfg, optimizer, plan.total_steps)
    ema = WeightAverage(model, t.ema_decay) if t.ema_decay else None
    swa = EpochAverage(model) if t.swa_epochs else None
    during = validation_sample(splits.validation, t.validation_rows_during, t.seed)
    class_weights = (
        torch.from_numpy(splits.class_weights()).to(device) if cfg.data.class_weights else None
    )

    state = RunState()
    replaced_run_id = None
    best_weights = _copy_weights(model)
    if resume and checkpoint is None:
        log.warning("no %s in %s: starting a new run", CHECKPOINT, output)
    if checkpoint is not None:
        state, best_weights = _restore(checkpoint, model, optimizer, schedule, ema, swa, output)
    elif rank.main:
        # A new run in an old folder starts clean; the tracker closes the run it replaces if
        # that one was killed without a chance to end itself.
        replaced_run_id = checkpoint_run_id(output)
        remove_checkpoint(output)
    state.batch_size = batch_size
    if rank.main:
        write_text_atomic(output / "config.yaml", cfg.to_yaml())
        _log_plan(cfg, plan, batch_size, len(splits.train), during, splits.validation)

    listeners = list(callbacks) + ([EarlyStopping(t.patience)] if t.patience else [])
    events = Callbacks(listeners, main=rank.main)
    run = RunInfo(cfg, splits, output, device, rank, state, resumed=checkpoint is not None)
    run.batch_size, run.batches_per_epoch = batch_size, plan.epoch_batches
    run.init_report = model.init_report
    run.optimizer = optimizer
    run.replaced_run_id = replaced_run_id
    if rank.main and model.init_report:
        log.info(
            "pretrained vectors: " + ", ".join(f"{k} {v:.4g}" for k, v in model.init_report.items())
        )
    # What steps: DDP around the model under torchrun (sparse tables left out), compiled if
    # asked; `model` itself evaluates and is saved.
    trainer = wrap(model, device) if rank.world > 1 else model
    if t.compile:
        trainer = torch.compile(trainer, dynamic=True)
    sparse = [p for _, p in sparse_parameters(model)] if rank.world > 1 else []
    parts = _Parts(
        cfg,
        model,
        optimizer,
        schedule,
        splits,
        device,
        autocast,
        class_weights,
        trainer,
        sparse,
        batch_size,
        plan,
        ema,
    )

    def write(partial: dict[str, Any] | None) -> None:
        state.partial = partial
        if rank.main:
            path = save_checkpoint(
                output, _checkpoint(state, best_weights, model, optimizer, schedule, ema, swa)
            )
            events.on_checkpoint(run, path)

    save = _Checkpoints(write, t.checkpoint_minutes, state.epoch if checkpoint else None)
    events.on_run_start(run)
    if state.epoch >= plan.epochs:
        more = "training.max_steps" if t.max_steps else "training.epochs"
        log.info("already trained %d epochs; raise %s to train more", state.epoch, more)
    try:
        for epoch in range(state.epoch + 1, plan.epochs + 1):
            if state.stop:
                break
            record = _train_epoch(parts, run, events, epoch, state.partial, save)
            state.partial = None
            if swa is not None and epoch > plan.epochs - t.swa_epochs:
                swa.add()
                average = swa
            else:
                average = ema
            # The weights that are validated are the ones kept: the average, when there is one.
            with average.applied() if average else contextlib.nullcontext():
                val, _ = evaluate_split(model, during, t.eval_batch_size, device, autocast)
                record.update({f"validation_{k}": v for k, v in val.items() if k != "rows"})
                state.history.append(record)
                score = val["balanced_accuracy"] if t.monitor == "bac" else -val["loss"]
                state.improved = score > state.best_score
                if state.improved:
                    state.best_score, state.best_epoch = score, epoch
                    best_weights = _copy_weights(model)
            state.epoch = epoch
            events.on_epoch_end(run, record)
            # A rank-0-only callback (a tuning pruner) may stop the run: all ranks stop.
            (state.stop,) = from_rank_zero([state.stop], device, rank.world)
            if rank.main:
                _log_epoch(record, plan.epochs, state.improved)
            if t.checkpoint_every_epoch or state.stop or epoch == plan.epochs or save.due():
                save(epoch=epoch)
        # The end (the test rows scored, the folder written, the tracker's last logs) is part
        # of the run: a signal there marks the run KILLED too, never leaves it RUNNING.
        model.load_state_dict(best_weights)
        result = _finish(cfg, model, splits, state, output, device, autocast, rank, during)
        events.on_run_end(run, result, "FINISHED")
    except KeyboardInterrupt:
        events.on_run_end(run, None, "KILLED")
        if save.epoch is None:
            log.warning("interrupted before the first checkpoint: --resume starts over")
        else:
            log.warning(
                "interrupted: resume with --resume (checkpoint of epoch %d kept)", save.epoch
            )
        raise
    except BaseException:
        events.on_run_end(run, None, "FAILED")
        raise
    return result


class _Checkpoints:
    """Writes the run's checkpoint through `write` and remembers when it last did, and the
    last whole epoch it holds (None: no checkpoint yet)."""

    def __init__(self, write, minutes: float | None, epoch: int | None):
        self.write, self.minutes, self.epoch = write, minutes, epoch
        self.last = time.perf_counter()

    def __call__(self, partial: dict[str, Any] | None = None, *, epoch: int) -> None:
        self.write(partial)
        self.last, self.epoch = time.perf_counter(), epoch

    def due(self) -> bool:
        """Whether `training.checkpoint_minutes` have passed since the last checkpoint."""
        return self.minutes is not None and time.perf_counter() - self.last > 60 * self.minutes


def _copy_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy(model.state_dict())


def _checkpoint(
    state: RunState,
    best_weights,
    model,
    optimizer,
    schedule,
    ema: WeightAverage | None,
    swa: EpochAverage | None,
) -> dict[str, Any]:
    weights = model.state_dict()
    return {
        "state": state.to_dict(),
        # Usually the epoch just validated is the best so far: its weights are the model's,
        # stored once (a quarter of a sparse model's checkpoint beside its two Adam moments).
        "best_weights": "model" if _same_weights(best_weights, weights) else best_weights,
        "model": weights,
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "ema": ema.state_dict() if ema else None,
        "swa": swa.state_dict() if swa else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _restore(checkpoint, model, optimizer, schedule, ema, swa, output) -> tuple[RunState, dict]:
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if ema is not None:
            # A run that had no average starts one from the weights it resumes with.
            ema.load_state_dict(checkpoint.get("ema"))
        if swa is not None:
            swa.load_state_dict(checkpoint.get("swa"))
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConfigError(
            f"{output / CHECKPOINT}: does not match this model and data "
            f"(resume with the same data and settings): {e}"
        ) from None
    total_steps = getattr(schedule, "total_steps", None)
    schedule.load_state_dict(checkpoint["schedule"])
    if total_steps is not None:
        schedule.total_steps = total_steps  # a resumed run may have been given more epochs
    torch.set_rng_state(checkpoint["torch_rng"])
    if checkpoint.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
    state = RunState.from_dict(checkpoint["state"])
    log.info(
        "resumed from epoch %d (best epoch so far: %d)",
        state.epoch,
        state.best_epoch,
    )
    best = checkpoint["best_weights"]
    if best == "model":  # loaded into the model by copy: the loaded tensors are free to keep
        best = checkpoint["model"]
    return state, best


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )


def _batch_size(cfg, model, splits, device, autocast, rank, checkpoint) -> int:
    """`training.batch_size`, or the size `auto` finds (a resumed run keeps the one it found)."""
    t = cfg.training
    if t.batch_size != "auto":
        return t.batch_size
    found = checkpoint["state"].get("batch_size") if checkpoint is not None else None
    if found:
        log.info("batch size auto: %d, as the run being resumed found", found)
        return int(found)
    copies = 3 + (1 if t.ema_decay else 0)  # Adam's moments, the best weights, the average
    return auto_batch_size(model, cfg.model.family, splits.train, device, autocast, rank, copies)


@dataclass(frozen=True)
class _Plan:
    """How long epochs and the run are, in this rank's batches and in optimizer steps."""

    pass_batches: int  # one pass over the training rows
    epoch_batches: int  # one epoch (a pass, or `epoch_rows` rows)
    steps_per_epoch: int
    epochs: int
    total_steps: int
    accumulate: int

    @classmethod
    def of(cls, cfg: Config, pass_batches: int, batch_size: int) -> _Plan:
        """`batch_size`: the rows of one step of all ranks together, as the run uses it."""
        t = cfg.training
        epoch_batches = -(-t.epoch_rows // batch_size) if t.epoch_rows else pass_batches
        steps_per_epoch = -(-epoch_batches // t.gradient_accumulation)
        if t.max_steps:
            epochs = -(-t.max_steps // max(steps_per_epoch, 1))
            total_steps = t.max_steps
        else:
            epochs = t.epochs
            total_steps = epochs * steps_per_epoch
        return cls(
            pass_batches,
            epoch_batches,
            steps_per_epoch,
            epochs,
            total_steps,
            t.gradient_accumulation,
        )

    def batches_in(self, epoch: int) -> int:
        """The batches epoch `epoch` trains on: all of an epoch but the last that max_steps cuts."""
        steps_before = (epoch - 1) * self.steps_per_epoch
        left = (self.total_steps - steps_before) * self.accumulate
        return max(0, min(self.epoch_batches, left))


def validation_sample(split: Split, rows: int | None, seed: int) -> Split:
    """A fixed sample of `rows` rows of `split` (the same for the same seed), or all of it."""
    return split.sample(rows, seed)


def _log_plan(cfg, plan: _Plan, batch_size: int, rows: int, during: Split, validation) -> None:
    t = cfg.training
    if t.epoch_rows or t.max_steps:
        log.info(
            "%d epochs of %d batches of %d rows (%s rows in a pass over the data), %d steps",
            plan.epochs,
            plan.epoch_batches,
            batch_size,
            f"{rows:,}",
            plan.total_steps,
        )
    if len(during) < len(validation):
        log.info(
            "each epoch scores %s of the %s validation rows; the end scores them all",
            f"{len(during):,}",
            f"{len(validation):,}",
        )


@dataclass
class _Parts:
    """What every epoch of a run works with."""

    cfg: Config
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any
    splits: Splits
    device: torch.device
    autocast: bool
    class_weights: torch.Tensor | None
    trainer: torch.nn.Module  # the model as it steps: in DDP, compiled, or itself
    sparse: list[torch.nn.Parameter]  # tables whose gradients ranks average outside DDP
    batch_size: int  # rows per step, all ranks together
    plan: _Plan
    ema: WeightAverage | None


def epoch_batches(
    split: Split, plan: _Plan, epoch: int, first: int, last: int, batch_size: int, **order
) -> Iterator[Batch]:
    """Batches `first` to `last` (excluded) of epoch `epoch`, cut from the stream of passes
    over `split` (pass p shuffled by (seed, p)): with epochs of one pass, pass p is epoch p.

    `order`: `Split.batches`'s seed, buffer, shard and bucket.
    """
    begin = (epoch - 1) * plan.epoch_batches + first  # where in the stream
    end = (epoch - 1) * plan.epoch_batches + last
    while begin < end and plan.pass_batches:
        done_passes, offset = divmod(begin, plan.pass_batches)
        n = min(end - begin, plan.pass_batches - offset)
        stream = split.batches(
            batch_size, shuffle=True, epoch=done_passes + 1, start=offset, **order
        )
        yield from itertools.islice(stream, n)
        begin += n


def _train_epoch(
    parts: _Parts, run: RunInfo, events: Callbacks, epoch: int, partial, save: _Checkpoints
) -> dict[str, float]:
    """One epoch of this rank's shard of the shuffled training rows, from a mid-epoch
    checkpoint if given.

    Every `training.checkpoint_minutes` (since the last checkpoint, this epoch's or an
    earlier one's), `save` records how far the epoch got; the batch
    order is a function of (seed, pass), so a resumed epoch skips exactly those batches.
    """
    cfg, model, optimizer, schedule = parts.cfg, parts.model, parts.optimizer, parts.schedule
    device, autocast, class_weights = parts.device, parts.autocast, parts.class_weights
    t = cfg.training
    world = run.rank.world
    trainer = parts.trainer
    model.train()
    partial = partial or {"step": 0, "loss_sum": 0.0, "weight_sum": 0.0, "seen": 0, "seconds": 0.0}
    first = partial["step"]
    total = parts.plan.batches_in(epoch)
    batches = Prefetcher(
        epoch_batches(
            parts.splits.train,
            parts.plan,
            epoch,
            first,
            total,
            parts.batch_size // world,
            seed=t.seed,
            buffer=cfg.data.shuffle_buffer,
            shard=run.rank.shard,
            bucket=cfg.data.bucket_by_length,
        ),
        depth=cfg.data.prefetch_batches,
        pin_memory=device.type == "cuda",
    )
    loss_sum = torch.tensor(partial["loss_sum"], device=device)
    weight_sum = torch.tensor(partial["weight_sum"], device=device)
    seen = partial["seen"]
    started = time.perf_counter() - partial["seconds"]
    accumulate = t.gradient_accumulation
    lr = optimizer.param_groups[0]["lr"]  # the rate the epoch's first step uses
    optimizer.zero_grad(set_to_none=True)
    with progress_bar(t.progress and run.rank.main) as bar:
        task = bar.add_task(
            f"epoch {epoch}/{parts.plan.epochs}", total=total, completed=first, info=""
        )
        for step, batch in enumerate(batches, start=first + 1):
            batch = batch.to(device)
            # With gradient accumulation, several batches make one optimizer step.
            stepping = step % accumulate == 0 or step == total
            syncing = contextlib.nullcontext() if stepping else _no_sync(trainer)
            with syncing:
                mix = mixup_pairs(t, epoch, step, len(batch), device) if t.mixup else None
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    logits = trainer(batch) if mix is None else trainer(batch, mix=mix)
                loss, weight = weighted_loss(
                    logits, batch, class_weights, t.label_smoothing, t.loss
                )
                if mix is not None:  # the partners' labels, with the same row weights
                    partner, lam = mix
                    paired = replace(batch, labels=batch.labels[partner])
                    other, _ = weighted_loss(
                        logits, paired, class_weights, t.label_smoothing, t.loss
                    )
                    loss = lam * loss + (1 - lam) * other
                # Over the weight of all ranks' rows, times the ranks DDP averages over: the
                # gradient of one process on the whole batch.
                total_weight = sum_over_ranks(weight.detach(), world) / world
                (loss / total_weight.clamp(min=1e-12) / accumulate).backward()
            if stepping:
                if parts.sparse:
                    reduce_sparse_gradients(parts.sparse, world)
                if t.grad_clip:
                    clip_gradients(model.parameters(), t.grad_clip)
                if parts.ema:
                    parts.ema.before_step()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                if parts.ema:
                    parts.ema.update()
            loss_sum += loss.detach()
            weight_sum += weight.detach()
            seen += len(batch)
            events.on_batch_end(run, step, len(batch))
            if step % 50 == 0 or step == total:
                elapsed = time.perf_counter() - started
                rate = seen * world / elapsed
                info = f"loss {float(loss_sum / weight_sum):.4f}  {rate:,.0f} titles/s"
                bar.update(task, completed=step, info=info)
            if stepping and step < total and save.due():
                save(
                    {
                        "step": step,
                        "loss_sum": float(loss_sum),
                        "weight_sum": float(weight_sum),
                        "seen": seen,
                        "seconds": time.perf_counter() - started,
                    },
                    epoch=epoch - 1,
                )
        bar.update(task, completed=total)
    seconds = time.perf_counter() - started
    # Every rank's rows count. A resumed epoch starts each rank from rank 0's partial sums
    # (the checkpoint's): exact for the row count, an estimate of the loss of those rows.
    sums = sum_over_ranks(
        torch.stack([loss_sum, weight_sum, torch.tensor(float(seen), device=device)]), world
    )
    return {
        "epoch": epoch,
        "train_loss": float(sums[0] / sums[1].clamp(min=1e-12)),
        "epoch_seconds": seconds,
        "train_titles_per_second": float(sums[2]) / max(seconds, 1e-9),
        "data_wait_share": batches.wait_seconds / max(seconds, 1e-9),
        "lr": lr,
    }


def mixup_pairs(
    t: TrainingConfig, epoch: int, step: int, rows: int, device: torch.device
) -> tuple[torch.Tensor, float]:
    """A random pairing of a batch's rows and the share lam of each row in its mix, drawn
    from the seed, epoch and step: a resumed run draws what the uninterrupted one drew."""
    rng = np.random.default_rng([t.seed, epoch, step])
    lam = float(rng.beta(t.mixup, t.mixup))
    return torch.from_numpy(rng.permutation(rows)).to(device), lam


def _no_sync(trainer: torch.nn.Module):
    """DDP's no_sync (no all-reduce on a batch that only accumulates), if `trainer` has it."""
    module = getattr(trainer, "_orig_mod", trainer)  # torch.compile's wrapper
    no_sync = getattr(module, "no_sync", None)
    return no_sync() if no_sync is not None else contextlib.nullcontext()


def _log_epoch(record: dict[str, float], epochs: int, improved: bool) -> None:
    log.info(
        "epoch %d/%d: train loss %.4f, validation loss %.4f, BAC %.4f%s (%.1f s, %s titles/s)",
        record["epoch"],
        epochs,
        record["train_loss"],
        record["validation_loss"],
        record["validation_balanced_accuracy"],
        " *" if improved else "",
        record["epoch_seconds"],
        f"{record['train_titles_per_second']:,.0f}",
    )


def _finish(
    cfg, model, splits, state: RunState, output, device, autocast, rank, during: Split
) -> RunResult:
    """Score the best weights, and on rank 0 write the model folder around them.

    `during`: the validation rows the epochs were scored on; all of them are scored here.
    """
    t = cfg.training
    history = state.history
    best = next((h for h in history if h["epoch"] == state.best_epoch), {})
    validation = {k.removeprefix("validation_"): v for k, v in best.items()}
    calibration = None
    if t.calibrate:  # temperature scaling on the validation rows (evaluation/calibration.py),
        # which scores every validation row under it: the sampled epochs need no other pass
        calibration, calibrated = calibrate_split(
            model, splits.validation, t.eval_batch_size, device, autocast
        )
        validation.update(calibrated)
    elif len(during) < len(splits.validation) and history:
        validation, _ = evaluate_split(
            model, splits.validation, t.eval_batch_size, device, autocast
        )
    temperature = calibration.temperature if calibration is not None else 1.0
    scored_test = splits.test is not None and t.score_test
    report_split = splits.test if scored_test else splits.validation
    scores, predictions = evaluate_split(
        model, report_split, t.eval_batch_size, device, autocast, top_k=5, temperature=temperature
    )
    result = RunResult(
        family=cfg.model.family,
        output_dir=output,
        best_epoch=state.best_epoch,
        epochs_run=len(history),
        validation=Scores(
            **{k: validation.get(k, math.nan) for k in Scores.model_fields if k != "rows"},
            rows=len(splits.validation),
        ),
        test=Scores(**scores) if scored_test else None,
        train_rows=len(splits.train),
        batch_size=state.batch_size,
        train_seconds=sum(h["epoch_seconds"] for h in history),
        titles_per_second=(
            sum(h["train_titles_per_second"] for h in history) / len(history) if history else 0.0
        ),
        device=device_name(device),
        device_type=device.type,
        parameters=sum(p.numel() for p in model.parameters()),
        history=history,
        run_id=state.run_id,
        init_report=model.init_report,
        temperature=calibration.temperature if calibration is not None else None,
    )
    result._model = model.eval()  # ready to predict, as a reloaded model is
    if not rank.main:
        return result
    # Written aside and renamed into place, metrics.json last: a folder that has it is whole.
    with staging_folder(output, last=(METRICS_FILE,)) as staging:
        write_model_files(staging, cfg, model, splits.featurizer, splits.labels, calibration)
        save_predictions(staging, report_split, predictions, splits.labels)
        write_category_report(
            report_split.labels,
            predictions.top_ids[:, 0],
            splits.labels.names,
            staging / "category_report.csv",
        )
        if history:
            plot_history(history, staging)
        result.save(staging)
    log.info("saved the model in %s", output)
    return result

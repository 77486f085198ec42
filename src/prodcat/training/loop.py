"""The one training loop, for every model family, as a recipe that reads top to bottom.

`train(cfg, splits, output)` runs a `Trainer`: `setup` builds the model, optimizer and
schedule (and restores them from a checkpoint on resume); each epoch `train_epoch` steps over
shuffled batches, `validate` scores the validation rows and keeps the best weights, and
`end_epoch` tells the callbacks (the tracker, early stopping, ...) and checkpoints; `finish`
restores the best weights, calibrates, scores the test rows and writes the model folder. Its
progress lives in one `RunState`, the object every checkpoint saves. What only one process
may do (track, checkpoint, save, print) is asked of `rank.main`.

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
from collections.abc import Iterator, Sequence
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
from prodcat.evaluation.evaluate import evaluate_split, weighted_loss
from prodcat.models.base import float16_state
from prodcat.models.folder import build_model
from prodcat.progress import progress_bar
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
from prodcat.training.finish import score, write_run_folder
from prodcat.training.optim import clip_gradients, make_optimizer
from prodcat.training.prefetch import Prefetcher
from prodcat.training.ranks import Rank
from prodcat.training.result import RunResult, Scores
from prodcat.training.swa import EpochAverage

log = logging.getLogger(__name__)


def train(
    cfg: Config,
    splits: Splits,
    output_dir: str | Path,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    rank: Rank | None = None,
) -> RunResult:
    """Train `cfg.model` on `splits`; save the model folder in `output_dir`; return the result.

    `callbacks` hear the run's events (the tracker is one). `resume` continues from the
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
        return Trainer(cfg, splits, Path(output_dir), callbacks, resume, rank, device).fit()


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


@dataclass(frozen=True)
class Plan:
    """How long epochs and the run are, in this rank's batches and in optimizer steps."""

    pass_batches: int  # one pass over the training rows
    epoch_batches: int  # one epoch (a pass, or `epoch_rows` rows)
    steps_per_epoch: int
    epochs: int
    total_steps: int
    accumulate: int

    @classmethod
    def of(cls, t: TrainingConfig, pass_batches: int, batch_size: int) -> Plan:
        """`batch_size`: the rows of one step of all ranks together, as the run uses it."""
        epoch_batches = -(-t.epoch_rows // batch_size) if t.epoch_rows else pass_batches
        steps_per_epoch = -(-epoch_batches // t.gradient_accumulation)
        if t.max_steps:
            epochs = -(-t.max_steps // max(steps_per_epoch, 1))
            total_steps = t.max_steps
        else:
            epochs, total_steps = t.epochs, t.epochs * steps_per_epoch
        return cls(
            pass_batches, epoch_batches, steps_per_epoch, epochs, total_steps,
            t.gradient_accumulation,
        )  # fmt: skip

    def batches_in(self, epoch: int) -> int:
        """The batches epoch `epoch` trains on: all of an epoch but the last that max_steps cuts."""
        steps_before = (epoch - 1) * self.steps_per_epoch
        left = (self.total_steps - steps_before) * self.accumulate
        return max(0, min(self.epoch_batches, left))


class Trainer:
    """One run of the loop: `fit()` = set up, then per epoch train, validate and end the epoch,
    then finish. The components are built in `setup`; the run's progress is `self.state`."""

    def __init__(self, cfg, splits: Splits, output: Path, callbacks, resume, rank, device):
        self.cfg, self.t = cfg, cfg.training
        self.splits, self.output = splits, output
        self.resume, self.rank, self.device = resume, rank, device
        self.autocast = device.type == "cuda" and self.t.bf16
        patience = [EarlyStopping(self.t.patience)] if self.t.patience else []
        self.events = Callbacks([*callbacks, *patience], main=rank.main)
        self.checkpointed_epoch: int | None = None  # the last whole epoch a checkpoint holds

    def fit(self) -> RunResult:
        """Train every epoch the plan has (or until a callback stops the run), then finish."""
        self.setup()
        self.events.on_run_start(self.info)
        if self.state.epoch >= self.plan.epochs:
            more = "training.max_steps" if self.t.max_steps else "training.epochs"
            log.info("already trained %d epochs; raise %s to train more", self.state.epoch, more)
        try:
            for epoch in range(self.state.epoch + 1, self.plan.epochs + 1):
                if self.state.stop:
                    break
                record = self.train_epoch(epoch)
                self.validate(epoch, record)
                self.end_epoch(epoch, record)
            # The end (the test rows scored, the folder written, the tracker's last logs) is
            # part of the run: a signal there marks the run KILLED too, never leaves it RUNNING.
            result = self.finish()
            self.events.on_run_end(self.info, result, "FINISHED")
            if self.rank.main and not self.t.keep_checkpoint:
                # Tracked and saved: the training state goes, unless the run is to be extended.
                remove_checkpoint(self.output)
        except KeyboardInterrupt:
            self.events.on_run_end(self.info, None, "KILLED")
            if self.checkpointed_epoch is None:
                log.warning("interrupted before the first checkpoint: --resume starts over")
            else:
                log.warning(
                    "interrupted: resume with --resume (checkpoint of epoch %d kept)",
                    self.checkpointed_epoch,
                )
            raise
        except BaseException:
            self.events.on_run_end(self.info, None, "FAILED")
            raise
        return result

    # -- set up ------------------------------------------------------------------------------

    def setup(self) -> None:
        """The model, its optimizer, schedule and weight average, restored from the folder's
        checkpoint on resume; the plan of epochs; what callbacks see of the run."""
        self._prepare_process()
        checkpoint = load_checkpoint(self.output) if self.resume else None
        if self.resume and checkpoint is None:
            log.warning(
                "no %s in %s (a finished run keeps one only with training.keep_checkpoint): "
                "starting a new run",
                CHECKPOINT,
                self.output,
            )
        batch_size = self._build(checkpoint)
        self.state, self.best_weights, replaced_run_id = RunState(), _copy_weights(self.model), None
        if checkpoint is not None:
            self._restore(checkpoint)
            self.checkpointed_epoch = self.state.epoch
        elif self.rank.main:
            # A new run in an old folder starts clean; the tracker closes the run it replaces
            # if that one was killed without a chance to end itself.
            replaced_run_id = checkpoint_run_id(self.output)
            remove_checkpoint(self.output)
        self.state.batch_size = batch_size
        if self.rank.main:
            write_text_atomic(self.output / "config.yaml", self.cfg.to_yaml())
            self._log_plan()
        self.info = RunInfo(
            self.cfg, self.splits, self.output, self.device, self.rank, self.state,
            resumed=checkpoint is not None, init_report=self.model.init_report,
            optimizer=self.optimizer, replaced_run_id=replaced_run_id,
            batches_per_epoch=self.plan.epoch_batches,
        )  # fmt: skip
        # What steps: DDP around the model under torchrun (sparse tables left out), compiled
        # if asked; `model` itself evaluates and is saved.
        self.stepper = wrap(self.model, self.device) if self.rank.world > 1 else self.model
        if self.t.compile:
            self.stepper = torch.compile(self.stepper, dynamic=True)
        self.sparse = [p for _, p in sparse_parameters(self.model)] if self.rank.world > 1 else []
        self.last_checkpoint = time.perf_counter()

    def _prepare_process(self) -> None:
        t = self.t
        if self.rank.main:
            self.output.mkdir(parents=True, exist_ok=True)
        if t.threads:
            torch.set_num_threads(t.threads)
        if self.device.type == "cpu":
            # A trained softmax puts many probabilities below float32's normal range, and
            # CPUs compute on such subnormals ~100x slower: an MLP epoch over 16 M titles went
            # from 15 to 4 steps/s as the model learnt (benchmarks/README.md). Flushing them
            # to zero changes no result that matters and keeps the rate.
            torch.set_flush_denormal(True)
        torch.manual_seed(t.seed)

    def _build(self, checkpoint: dict[str, Any] | None) -> int:
        """The model (a resumed one gets its weights from the checkpoint: no vectors to
        read), the plan, the optimizer, schedule and weight averages; return the batch size
        (rows per step, all ranks together)."""
        t, rank = self.t, self.rank
        featurizer = self.splits.featurizer
        model = build_model(self.cfg, len(self.splits.labels), featurizer, checkpoint is None)
        self.model = model.to(self.device)
        if rank.main and model.init_report:
            report = ", ".join(f"{k} {v:.4g}" for k, v in model.init_report.items())
            log.info("pretrained vectors: %s", report)
        batch_size = self._batch_size(checkpoint)
        train_batches = self.splits.train.num_batches(batch_size // rank.world, rank.world)
        self.plan = Plan.of(t, train_batches, batch_size)
        self.optimizer = make_optimizer(
            model, name=t.optimizer, lr=t.lr, weight_decay=t.weight_decay, encoder_lr=t.encoder_lr
        )
        self.schedule = make_schedule(self.cfg, self.optimizer, self.plan.total_steps)
        self.ema = WeightAverage(model, t.ema_decay) if t.ema_decay else None
        self.swa = EpochAverage(model) if t.swa_epochs else None
        self.during = self.splits.validation.sample(t.validation_rows_during, t.seed)
        self.class_weights = (
            torch.from_numpy(self.splits.class_weights()).to(self.device)
            if self.cfg.data.class_weights
            else None
        )
        return batch_size

    def _batch_size(self, checkpoint) -> int:
        """`training.batch_size`, or the size `auto` finds (a resumed run keeps its own)."""
        t = self.t
        if t.batch_size != "auto":
            return t.batch_size
        found = checkpoint["state"].get("batch_size") if checkpoint is not None else None
        if found:
            log.info("batch size auto: %d, as the run being resumed found", found)
            return int(found)
        copies = 3 + (1 if t.ema_decay else 0)  # Adam's moments, the best weights, the average
        return auto_batch_size(
            self.model, self.cfg.model.family, self.splits.train, self.device, self.autocast,
            self.rank, copies,
        )  # fmt: skip

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if self.ema is not None:
                # A run that had no average starts one from the weights it resumes with.
                self.ema.load_state_dict(checkpoint.get("ema"))
            if self.swa is not None:
                self.swa.load_state_dict(checkpoint.get("swa"))
        except (RuntimeError, ValueError, KeyError) as e:
            raise ConfigError(
                f"{self.output / CHECKPOINT}: does not match this model and data "
                f"(resume with the same data and settings): {e}"
            ) from None
        total_steps = getattr(self.schedule, "total_steps", None)  # OneCycleLR's alone
        self.schedule.load_state_dict(checkpoint["schedule"])
        if total_steps is not None:
            self.schedule.total_steps = total_steps  # a resumed run may have been given more
        torch.set_rng_state(checkpoint["torch_rng"])
        if checkpoint.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
        self.state = RunState.from_dict(checkpoint["state"])
        log.info(
            "resumed from epoch %d (best epoch so far: %d)", self.state.epoch, self.state.best_epoch
        )
        best = checkpoint["best_weights"]
        # "model": stored once, as the model's (loaded into it by copy: free to keep).
        self.best_weights = checkpoint["model"] if best == "model" else best

    def _log_plan(self) -> None:
        t, plan = self.t, self.plan
        if t.epoch_rows or t.max_steps:
            log.info(
                "%d epochs of %d batches of %d rows (%s rows in a pass over the data), %d steps",
                plan.epochs, plan.epoch_batches, self.state.batch_size,
                f"{len(self.splits.train):,}", plan.total_steps,
            )  # fmt: skip
        if len(self.during) < len(self.splits.validation):
            log.info(
                "each epoch scores %s of the %s validation rows; the end scores them all",
                f"{len(self.during):,}",
                f"{len(self.splits.validation):,}",
            )

    # -- one epoch ---------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of this rank's shard of the shuffled training rows, from where a
        mid-epoch checkpoint left it. The batch order is a function of (seed, pass), so a
        resumed epoch skips exactly the batches it had done."""
        t, world, device = self.t, self.rank.world, self.device
        self.model.train()
        progress = self.state.partial or {
            "step": 0, "loss_sum": 0.0, "weight_sum": 0.0, "seen": 0, "seconds": 0.0,
        }  # fmt: skip
        first, total = progress["step"], self.plan.batches_in(epoch)
        batches = Prefetcher(
            self._batches(epoch, first, total),
            depth=self.cfg.data.prefetch_batches,
            pin_memory=device.type == "cuda",
        )
        loss_sum = torch.tensor(progress["loss_sum"], device=device)
        weight_sum = torch.tensor(progress["weight_sum"], device=device)
        seen = progress["seen"]
        started = time.perf_counter() - progress["seconds"]
        lr = self.optimizer.param_groups[0]["lr"]  # the rate the epoch's first step uses
        self.optimizer.zero_grad(set_to_none=True)
        with progress_bar(t.progress and self.rank.main) as bar:
            task = bar.add_task(
                f"epoch {epoch}/{self.plan.epochs}", total=total, completed=first, info=""
            )
            for step, batch in enumerate(batches, start=first + 1):
                # With gradient accumulation, several batches make one optimizer step.
                stepping = step % t.gradient_accumulation == 0 or step == total
                loss, weight = self._forward_backward(batch.to(device), epoch, step, stepping)
                if stepping:
                    self._step()
                loss_sum += loss.detach()
                weight_sum += weight.detach()
                seen += len(batch)
                self.events.on_batch_end(self.info, step, len(batch))
                if step % 50 == 0 or step == total:
                    rate = seen * world / (time.perf_counter() - started)
                    info = f"loss {float(loss_sum / weight_sum):.4f}  {rate:,.0f} titles/s"
                    bar.update(task, completed=step, info=info)
                if stepping and step < total and self._checkpoint_due():
                    seconds = time.perf_counter() - started
                    partial = {"step": step, "loss_sum": float(loss_sum), "seen": seen}
                    partial.update(weight_sum=float(weight_sum), seconds=seconds)
                    self.checkpoint(epoch - 1, partial)
            bar.update(task, completed=total)
        self.state.partial = None  # the epoch is whole
        seconds = time.perf_counter() - started
        # Every rank's rows count. A resumed epoch starts each rank from rank 0's partial sums
        # (the checkpoint's): exact for the row count, an estimate of the loss of those rows.
        counts = torch.stack([loss_sum, weight_sum, torch.tensor(float(seen), device=device)])
        sums = sum_over_ranks(counts, world)
        return {
            "epoch": epoch,
            "train_loss": float(sums[0] / sums[1].clamp(min=1e-12)),
            "epoch_seconds": seconds,
            "train_titles_per_second": float(sums[2]) / max(seconds, 1e-9),
            "data_wait_share": batches.wait_seconds / max(seconds, 1e-9),
            "lr": lr,
        }

    def _batches(self, epoch: int, first: int, last: int) -> Iterator[Batch]:
        """This rank's batches `first` to `last` (excluded) of epoch `epoch`."""
        return epoch_batches(
            self.splits.train, self.plan, epoch, first, last,
            self.state.batch_size // self.rank.world,
            seed=self.t.seed, buffer=self.cfg.data.shuffle_buffer, shard=self.rank.shard,
            bucket=self.cfg.data.bucket_by_length,
        )  # fmt: skip

    def _forward_backward(self, batch: Batch, epoch: int, step: int, stepping: bool):
        """The batch's loss and row weight; its gradient, scaled so that the step is one
        process's on the whole batch, added to the parameters'."""
        t, world = self.t, self.rank.world
        syncing = contextlib.nullcontext() if stepping else _no_sync(self.stepper)
        with syncing:
            mix = mixup_pairs(t, epoch, step, len(batch), self.device) if t.mixup else None
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.stepper(batch) if mix is None else self.stepper(batch, mix=mix)
            loss, weight = weighted_loss(
                logits, batch, self.class_weights, t.label_smoothing, t.loss,
                (t.distill_weight, t.distill_temperature),
            )  # fmt: skip
            if mix is not None:  # the partners' labels, with the same row weights
                partner, lam = mix
                paired = replace(batch, labels=batch.labels[partner])
                other, _ = weighted_loss(
                    logits, paired, self.class_weights, t.label_smoothing, t.loss
                )
                loss = lam * loss + (1 - lam) * other
            # Over the weight of all ranks' rows, times the ranks DDP averages over.
            total_weight = sum_over_ranks(weight.detach(), world) / world
            (loss / total_weight.clamp(min=1e-12) / t.gradient_accumulation).backward()
        return loss, weight

    def _step(self) -> None:
        """One optimizer step, with the ranks' sparse gradients reduced, clipping, the
        schedule and the moving average."""
        if self.sparse:
            reduce_sparse_gradients(self.sparse, self.rank.world)
        if self.t.grad_clip:
            clip_gradients(self.model.parameters(), self.t.grad_clip)
        if self.ema:
            self.ema.before_step()
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema:
            self.ema.update()

    def validate(self, epoch: int, record: dict[str, float]) -> None:
        """Score the epoch's validation rows with the weights that would be kept (the
        average, when there is one); keep them if they are the best so far."""
        t, state = self.t, self.state
        if self.swa is not None and epoch > self.plan.epochs - t.swa_epochs:
            self.swa.add()
            average = self.swa
        else:
            average = self.ema
        with average.applied() if average else contextlib.nullcontext():
            val, _ = evaluate_split(
                self.model, self.during, t.eval_batch_size, self.device, self.autocast
            )
            record.update({f"validation_{k}": v for k, v in val.items() if k != "rows"})
            state.history.append(record)
            monitored = val["balanced_accuracy"] if t.monitor == "bac" else -val["loss"]
            state.improved = monitored > state.best_score
            if state.improved:
                state.best_score, state.best_epoch = monitored, epoch
                self.best_weights = _copy_weights(self.model, into=self.best_weights)

    def end_epoch(self, epoch: int, record: dict[str, float]) -> None:
        """Tell the callbacks (which may stop the run: all ranks then stop) and checkpoint."""
        state = self.state
        state.epoch = epoch
        self.events.on_epoch_end(self.info, record)
        (state.stop,) = from_rank_zero([state.stop], self.device, self.rank.world)
        if self.rank.main:
            _log_epoch(record, self.plan.epochs, state.improved)
        last = state.stop or epoch == self.plan.epochs
        if self.t.checkpoint_every_epoch or last or self._checkpoint_due():
            self.checkpoint(epoch)

    # -- checkpoints -------------------------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        """Whether `training.checkpoint_minutes` have passed since the last checkpoint."""
        minutes = self.t.checkpoint_minutes
        return minutes is not None and time.perf_counter() - self.last_checkpoint > 60 * minutes

    def checkpoint(self, epoch: int, partial: dict[str, Any] | None = None) -> None:
        """Save the run so far: `epoch` whole epochs, and `partial`, how far the next got."""
        self.state.partial = partial
        if self.rank.main:
            weights = self.model.state_dict()
            same = _same_weights(self.best_weights, weights)
            contents = {
                "state": self.state.to_dict(),
                # Usually the epoch just validated is the best so far: its weights are the
                # model's, stored once (a quarter of a sparse model's checkpoint beside its
                # two Adam moments).
                "best_weights": "model" if same else self.best_weights,
                "model": weights,
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
                "swa": self.swa.state_dict() if self.swa else None,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            }
            self.events.on_checkpoint(self.info, save_checkpoint(self.output, contents))
        self.last_checkpoint, self.checkpointed_epoch = time.perf_counter(), epoch

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> RunResult:
        """Score the best weights, and on rank 0 write the model folder around them."""
        state, history, model = self.state, self.state.history, self.model
        model.load_state_dict(self.best_weights)
        if self.t.weights_float16:  # scored as the folder will hold them
            model.load_state_dict(float16_state(model.state_dict()))
        # What only training needs goes before the scoring: the optimizer's moments, the
        # weight averages and the best weights' copy are 3-4 times the word table.
        self.optimizer = self.schedule = self.ema = self.swa = self.best_weights = None
        self.info.optimizer = None  # (callbacks read its learning rate during epochs only)
        sampled = len(self.during) < len(self.splits.validation)
        scored = score(
            self.cfg, model, self.splits.validation, self.splits.test, self.device,
            self.autocast, calibrate=self.t.calibrate, rescore_validation=sampled and bool(history),
        )  # fmt: skip
        best = next((h for h in history if h["epoch"] == state.best_epoch), {})
        validation = {
            **{k.removeprefix("validation_"): v for k, v in best.items()},
            **scored.validation,
        }
        fields = [k for k in Scores.model_fields if k != "rows"]
        result = RunResult(
            family=self.cfg.model.family,
            output_dir=self.output,
            best_epoch=state.best_epoch,
            epochs_run=len(history),
            validation=Scores(
                **{k: validation.get(k, math.nan) for k in fields},
                rows=len(self.splits.validation),
            ),
            test=Scores(**scored.scores) if scored.scored_test else None,
            train_rows=len(self.splits.train),
            batch_size=state.batch_size,
            train_seconds=sum(h["epoch_seconds"] for h in history),
            titles_per_second=(
                sum(h["train_titles_per_second"] for h in history) / len(history)
                if history
                else 0.0
            ),
            device=device_name(self.device),
            device_type=self.device.type,
            parameters=sum(p.numel() for p in model.parameters()),
            history=history,
            run_id=state.run_id,
            init_report=model.init_report,
            temperature=scored.temperature,
        )
        result._model = model.eval()  # ready to predict, as a reloaded model is
        if self.rank.main:
            write_run_folder(
                self.output, self.cfg, model, self.splits.featurizer, self.splits.labels,
                scored, result,
            )  # fmt: skip
        return result


def epoch_batches(
    split: Split, plan: Plan, epoch: int, first: int, last: int, batch_size: int, **order
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
        pass_number = done_passes + 1
        stream = split.batches(batch_size, shuffle=True, epoch=pass_number, start=offset, **order)
        yield from itertools.islice(stream, n)
        begin += n


def mixup_pairs(
    t: TrainingConfig, epoch: int, step: int, rows: int, device: torch.device
) -> tuple[torch.Tensor, float]:
    """A random pairing of a batch's rows and the share lam of each row in its mix, drawn
    from the seed, epoch and step: a resumed run draws what the uninterrupted one drew."""
    rng = np.random.default_rng([t.seed, epoch, step])
    lam = float(rng.beta(t.mixup, t.mixup))
    return torch.from_numpy(rng.permutation(rows)).to(device), lam


def _copy_weights(
    model: torch.nn.Module, into: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """A copy of the model's weights; `into`, an earlier copy of the same shapes, is
    overwritten in place (a new copy beside the old held the word table three times: the
    peak of a 5 M-row run's training, 2.2 GB of heap)."""
    state = model.state_dict()
    if (
        into is None
        or into.keys() != state.keys()
        or any(into[k].shape != v.shape or into[k].dtype != v.dtype for k, v in state.items())
    ):
        return copy.deepcopy(state)
    for k, v in state.items():
        into[k].copy_(v)
    return into


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )


def _no_sync(stepper: torch.nn.Module):
    """DDP's no_sync (no all-reduce on a batch that only accumulates), if `stepper` has it."""
    module = getattr(stepper, "_orig_mod", stepper)  # torch.compile's wrapper
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

"""The one training loop, for every model family.

Read top to bottom: build the model, optimizer and schedule; resume from a checkpoint if
asked; per epoch, train over shuffled batches, evaluate on validation, keep the best
weights, checkpoint, stop early when validation balanced accuracy stops improving; at the
end restore the best weights, score the test split and save the model folder.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prodcat.config import Config
from prodcat.data.dataset import Splits
from prodcat.data.featurizer import VocabularyFeaturizer
from prodcat.errors import ConfigError
from prodcat.evaluation.evaluate import evaluate_split, weighted_loss
from prodcat.evaluation.metrics import write_category_report
from prodcat.evaluation.plots import plot_history
from prodcat.models.folder import build_model, save_model_folder
from prodcat.tracking.tracker import NullTracker, device_name, git_commit, library_versions
from prodcat.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from prodcat.training.optim import LazyAdam, clip_gradients
from prodcat.training.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced."""

    output_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    run_id: str | None = None
    model: torch.nn.Module | None = None  # the best weights, on the training device


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device is cuda, but no CUDA device is available")
    return torch.device(name)


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return LazyAdam(
        params,
        lr=cfg.training.lr,
        weight_decay=cfg.training.weight_decay,
        decoupled=cfg.training.optimizer == "adamw",
    )


def make_schedule(cfg: Config, optimizer: torch.optim.Optimizer, total_steps: int):
    t = cfg.training
    if t.schedule == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=t.lr, total_steps=total_steps, pct_start=max(t.warmup_fraction, 1e-3)
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
    tracker: NullTracker | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train `cfg.model` on `splits`; save the model folder in `output_dir`; return the result."""
    t = cfg.training
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    tracker = tracker or NullTracker()
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    autocast = device.type == "cuda" and t.bf16
    torch.manual_seed(t.seed)

    n_classes, vocab_size = len(splits.labels), len(splits.vocabulary)
    model = build_model(cfg, n_classes, vocab_size).to(device)
    featurizer = VocabularyFeaturizer(splits.vocabulary, cfg.data.tokenizer, cfg.data.max_tokens)
    optimizer = make_optimizer(cfg, model)
    steps_per_epoch = splits.train.num_batches(t.batch_size)
    schedule = make_schedule(cfg, optimizer, t.epochs * steps_per_epoch)
    class_weights = (
        torch.from_numpy(splits.class_weights()).to(device) if cfg.data.class_weights else None
    )

    state = _initial_state(model)
    checkpoint = load_checkpoint(output) if resume else None
    if resume and checkpoint is None:
        log.warning("no %s in %s: starting a new run", CHECKPOINT, output)
    if checkpoint is not None:
        state = _restore(checkpoint, model, optimizer, schedule, vocab_size, t.patience, output)
    elif (output / CHECKPOINT).exists():
        (output / CHECKPOINT).unlink()  # a new run in an old folder starts clean
    (output / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")

    run_id = tracker.start(state["run_id"])
    state["run_id"] = run_id
    _log_run_metadata(tracker, cfg, splits, device)

    parts = _Parts(cfg, model, optimizer, schedule, splits, device, autocast, class_weights)
    first_epoch = state["epoch"] + 1
    if first_epoch > t.epochs:
        log.info("already trained %d epochs; raise training.epochs to train more", state["epoch"])
    try:
        for epoch in range(first_epoch, t.epochs + 1):
            if t.patience and state["bad_epochs"] >= t.patience:
                break

            def save_partial(progress: dict[str, Any]) -> None:
                state["partial"] = progress
                save_checkpoint(output, _checkpoint(state, model, optimizer, schedule))

            record = _train_epoch(parts, epoch, state.pop("partial", None), save_partial)
            state["partial"] = None
            val, _ = evaluate_split(model, splits.validation, t.eval_batch_size, device, autocast)
            record.update({f"validation_{k}": v for k, v in val.items() if k != "rows"})
            state["history"].append(record)
            improved = val["balanced_accuracy"] > state["best_bac"]
            if improved:
                state.update(best_bac=val["balanced_accuracy"], best_epoch=epoch, bad_epochs=0)
                state["best_weights"] = copy.deepcopy(model.state_dict())
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)
            log.info(
                "epoch %d/%d: train loss %.4f, validation loss %.4f, BAC %.4f%s "
                "(%.1f s, %s titles/s)",
                epoch,
                t.epochs,
                record["train_loss"],
                record["validation_loss"],
                record["validation_balanced_accuracy"],
                " *" if improved else "",
                record["epoch_seconds"],
                f"{record['train_titles_per_second']:,.0f}",
            )
            save_checkpoint(output, _checkpoint(state, model, optimizer, schedule))
    except KeyboardInterrupt:
        tracker.end("KILLED")
        log.warning(
            "interrupted: resume with --resume (checkpoint of epoch %d kept)", state["epoch"]
        )
        raise

    result = _finish(cfg, model, featurizer, splits, state, output, device, autocast, tracker)
    tracker.end("FINISHED")
    return result


STATE_KEYS = (
    "epoch",
    "best_bac",
    "best_epoch",
    "bad_epochs",
    "best_weights",
    "history",
    "run_id",
    "partial",
)


def _initial_state(model: torch.nn.Module) -> dict[str, Any]:
    return {
        "epoch": 0,
        "best_bac": -1.0,
        "best_epoch": 0,
        "bad_epochs": 0,
        "best_weights": copy.deepcopy(model.state_dict()),
        "history": [],
        "run_id": None,
        "partial": None,  # progress inside the epoch after `epoch`, for mid-epoch checkpoints
    }


def _checkpoint(state, model, optimizer, schedule) -> dict[str, Any]:
    return {
        **state,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _restore(checkpoint, model, optimizer, schedule, vocab_size, cfg_patience, output) -> dict:
    shape = checkpoint["model"]["embedder.tokens.weight"].shape[0]
    if shape != vocab_size:
        raise ConfigError(
            f"{output / CHECKPOINT}: the checkpoint's vocabulary has {shape} tokens but the data "
            f"gives {vocab_size}; resume with the same data and data settings"
        )
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"{output / CHECKPOINT}: does not match this model config: {e}") from None
    total_steps = getattr(schedule, "total_steps", None)
    schedule.load_state_dict(checkpoint["schedule"])
    if total_steps is not None:
        schedule.total_steps = total_steps  # a resumed run may have been given more epochs
    torch.set_rng_state(checkpoint["torch_rng"])
    if checkpoint.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
    state = {k: checkpoint[k] for k in STATE_KEYS}
    if cfg_patience and state["bad_epochs"] >= cfg_patience:
        # The run had stopped early; resuming it means: train on anyway.
        state["bad_epochs"] = 0
    log.info(
        "resumed from epoch %d (best BAC %.4f at epoch %d)",
        state["epoch"],
        state["best_bac"],
        state["best_epoch"],
    )
    return state


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


def _train_epoch(parts: _Parts, epoch: int, partial=None, save_partial=None) -> dict[str, float]:
    """One pass over the shuffled training split, from a mid-epoch checkpoint if given.

    Every `training.checkpoint_minutes`, `save_partial` records how far the epoch got; the
    batch order is a function of (seed, epoch), so a resumed epoch skips exactly those batches.
    """
    cfg, model, optimizer, schedule, splits = (
        parts.cfg,
        parts.model,
        parts.optimizer,
        parts.schedule,
        parts.splits,
    )
    device, autocast, class_weights = parts.device, parts.autocast, parts.class_weights
    t = cfg.training
    model.train()
    partial = partial or {"step": 0, "loss_sum": 0.0, "weight_sum": 0.0, "seen": 0, "seconds": 0.0}
    first = partial["step"]
    batches = splits.train.batches(
        t.batch_size,
        shuffle=True,
        seed=t.seed,
        epoch=epoch,
        buffer=cfg.data.shuffle_buffer,
        start=first,
    )
    loss_sum = torch.tensor(partial["loss_sum"], device=device)
    weight_sum = torch.tensor(partial["weight_sum"], device=device)
    seen = partial["seen"]
    started = time.perf_counter() - partial["seconds"]
    last_save = time.perf_counter()
    total = splits.train.num_batches(t.batch_size)
    with progress_bar(t.progress) as bar:
        task = bar.add_task(f"epoch {epoch}/{t.epochs}", total=total, completed=first, info="")
        for step, batch in enumerate(batches, start=first + 1):
            batch = batch.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(batch)
            loss, weight = weighted_loss(logits, batch, class_weights, t.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            (loss / weight.clamp(min=1e-12)).backward()
            if t.grad_clip:
                clip_gradients(model.parameters(), t.grad_clip)
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach()
            weight_sum += weight.detach()
            seen += len(batch)
            if step % 50 == 0 or step == total:
                elapsed = time.perf_counter() - started
                bar.update(
                    task,
                    completed=step,
                    info=(
                        f"loss {float(loss_sum / weight_sum):.4f}  {seen / elapsed:,.0f} titles/s"
                    ),
                )
            if (
                save_partial is not None
                and t.checkpoint_minutes
                and step < total
                and time.perf_counter() - last_save > 60 * t.checkpoint_minutes
            ):
                save_partial(
                    {
                        "step": step,
                        "loss_sum": float(loss_sum),
                        "weight_sum": float(weight_sum),
                        "seen": seen,
                        "seconds": time.perf_counter() - started,
                    }
                )
                last_save = time.perf_counter()
        bar.update(task, completed=total)
    seconds = time.perf_counter() - started
    return {
        "epoch": epoch,
        "train_loss": float(loss_sum / weight_sum.clamp(min=1e-12)),
        "epoch_seconds": seconds,
        "train_titles_per_second": seen / max(seconds, 1e-9),
        "lr": optimizer.param_groups[0]["lr"],
    }


def _log_run_metadata(tracker, cfg: Config, splits: Splits, device: torch.device) -> None:
    tracker.log_params(cfg.flat())
    tags = {
        "device": device_name(device),
        "device_type": device.type,
        "git_commit": git_commit() or "unknown",
        "categories": len(splits.labels),
        "vocabulary": len(splits.vocabulary),
        **{f"data.{role}_file": path for role, path in splits.summary.files.items()},
        **{f"data.{role}_rows": n for role, n in splits.summary.sizes.items()},
        **{f"data.rows_read.{Path(f).name}": n for f, n in splits.summary.rows_read.items()},
        **{f"version.{k}": v for k, v in library_versions().items()},
    }
    tracker.set_tags(tags)


def _finish(
    cfg, model, featurizer, splits, state, output, device, autocast, tracker
) -> TrainResult:
    t = cfg.training
    model.load_state_dict(state["best_weights"])
    history = state["history"]
    best = next((h for h in history if h["epoch"] == state["best_epoch"]), {})
    metrics: dict[str, Any] = {
        "best_epoch": state["best_epoch"],
        "epochs_run": len(history),
        "validation": {
            k.removeprefix("validation_"): v for k, v in best.items() if k.startswith("validation_")
        },
        "train_rows": len(splits.train),
        "train_seconds": sum(h["epoch_seconds"] for h in history),
        "titles_per_second": float(np.mean([h["train_titles_per_second"] for h in history]))
        if history
        else 0.0,
        "device": device_name(device),
    }
    save_model_folder(output, cfg, model, featurizer, splits.labels)
    report_split = splits.test or splits.validation
    scores, y_pred = evaluate_split(model, report_split, t.eval_batch_size, device, autocast)
    if splits.test is not None:
        metrics["test"] = scores
        tracker.log_metrics({f"test_{k}": v for k, v in scores.items()})
    write_category_report(
        report_split.labels, y_pred, splits.labels.names, output / "category_report.csv"
    )
    if history:
        plot_history(history, output)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    tracker.log_metrics(
        {
            "best_validation_balanced_accuracy": state["best_bac"],
            "train_seconds": metrics["train_seconds"],
        }
    )
    for path in sorted(output.iterdir()):
        if path.is_file() and path.name != CHECKPOINT:
            tracker.log_artifact(path, artifact_path="model")
    log.info("saved the model in %s", output)
    return TrainResult(output, metrics, history, state["best_epoch"], state["run_id"], model)

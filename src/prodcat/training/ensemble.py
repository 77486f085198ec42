"""Ensembles: train the members of `model.family: ensemble` through the one loop, or take
model folders already trained, and save one ensemble folder (`models/ensemble.py`).

Weights: non-negative, summing to 1, maximising the validation log-likelihood of the mean of
the members' calibrated probabilities (EM for mixture weights); then temperature scaling on
top, as for any model. `prodcat ensemble` without a validation file keeps equal weights and
no extra temperature (each member is calibrated already).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import shutil
import time
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path

import torch

from prodcat.atomic import write_text_atomic
from prodcat.config import Config, EnsembleConfig
from prodcat.data.dataset import file_split
from prodcat.data.vocab import LabelMap
from prodcat.errors import ConfigError, ProdcatError
from prodcat.evaluation.calibration import Calibration
from prodcat.evaluation.evaluate import calibrate_split, evaluate_split, save_predictions
from prodcat.evaluation.metrics import write_category_report
from prodcat.models.ensemble import (
    MEMBERS_FOLDER,
    EnsembleModel,
    EnsembleSpec,
    EnsembleSplit,
    fit_weights,
    is_ensemble_folder,
    true_class_log_probs,
)
from prodcat.models.folder import load_model_folder, staging_folder
from prodcat.models.manifest import listed_files, write_manifest
from prodcat.training.device import device_name, resolve_device
from prodcat.training.progress import progress_bar
from prodcat.training.result import METRICS_FILE, RunResult, Scores

log = logging.getLogger(__name__)

PARENT_RUN_FILE = "ensemble-run.json"  # the ensemble's MLflow run id, reopened on --resume


def fit_ensemble(
    model: EnsembleModel, validation: EnsembleSplit, batch_size: int, device: torch.device
) -> tuple[Calibration, dict[str, float]]:
    """Set the weights that maximise the validation log-likelihood, then fit a temperature
    on top; return it and the validation metrics under both."""
    weights = fit_weights(true_class_log_probs(model, validation, batch_size, device))
    model.set_weights(weights.tolist())
    autocast = False  # members run in float32 here: a few passes over the validation rows
    return calibrate_split(model, validation, batch_size, device, autocast)


def member_folder(output: Path, index: int) -> Path:
    return output / MEMBERS_FOLDER / str(index)


def load_members(folders: Sequence[Path]) -> tuple[list, LabelMap]:
    """(config, model, featurizer) of each member folder, and their shared labels; folders
    with other label sets are refused."""
    members, labels = [], None
    for folder in folders:
        if is_ensemble_folder(folder):
            raise ConfigError(f"{folder}: is an ensemble; give its members' folders instead")
        cfg, model, featurizer, member_labels = load_model_folder(folder)
        if labels is None:
            labels, first = member_labels, folder
        elif list(member_labels.names) != list(labels.names):
            raise ConfigError(
                f"{folder}: its {len(member_labels)} categories differ from those of {first} "
                f"({len(labels)}): an ensemble's members must share one label set"
            )
        members.append((cfg, model, featurizer))
    assert labels is not None
    return members, labels


def ensemble_model(folders: Sequence[Path]) -> tuple[EnsembleModel, list, LabelMap]:
    """The members of `folders` under equal weights, each with its own temperature."""
    members, labels = load_members(folders)
    temperatures = [Calibration.load(folder).temperature for folder in folders]
    model = EnsembleModel([m for _, m, _ in members], [1.0] * len(members), temperatures)
    return model, members, labels


def write_ensemble_files(
    staging: Path,
    cfg: Config,
    labels: LabelMap,
    spec: EnsembleSpec,
    calibration: Calibration,
    members_in_place: Path | None = None,
) -> None:
    """The ensemble's own files and a manifest over them and its members' files. Members
    are in `staging` already, or (trained in place) under `members_in_place`."""
    (staging / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    labels.save(staging / "labels.txt")
    spec.save(staging)
    calibration.save(staging)
    extra = {}
    if members_in_place is not None:
        for name in spec.members:
            for file in listed_files(members_in_place / name) or []:
                extra[f"{name}/{file}"] = members_in_place / name / file
    write_manifest(staging, extra)


def train_ensemble(
    cfg: Config,
    output: Path,
    *,
    resume: bool = False,
    callbacks: Sequence = (),
    parent_run_id: str | None = None,
) -> RunResult:
    """Train every member of `cfg.model` (an `EnsembleConfig`) into `output/members/I` with
    `run`, fit the weights and a temperature on the validation rows, score the test rows and
    save the ensemble folder in `output`. With `workers` > 1 the members train in processes
    of their own, which `callbacks` do not hear. The result's `train_seconds` is the wall
    time of training the members."""
    from prodcat.tracking.tracker import close_parent_run, log_run_metrics, open_parent_run
    from prodcat.training.ranks import Rank
    from prodcat.training.run import prepare_data, run

    ensemble: EnsembleConfig = cfg.model  # type: ignore[assignment]
    if Rank.from_env().world > 1:
        raise ConfigError("an ensemble trains in one process: run it without torchrun")
    output.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output / "config.yaml", cfg.to_yaml())
    tracking = cfg.tracking
    parent = None
    if tracking.enabled:
        parent = open_parent_run(
            tracking.uri,
            tracking.experiment,
            output / PARENT_RUN_FILE,
            tracking.run_name or f"ensemble-{output.name}",
            {**tracking.tags, "prodcat.family": "ensemble"},
            {"model.family": "ensemble", "members": len(ensemble.members)},
        )
    status = "FAILED"
    try:
        configs = []
        for index in range(len(ensemble.members)):
            member_cfg = ensemble.member_config(cfg, index)
            if tracking.run_name:
                member_cfg.tracking.run_name = f"{tracking.run_name}-member-{index}"
            configs.append(member_cfg)
        started = time.perf_counter()
        if ensemble.workers > 1:
            first = prepare_data(configs[0])  # builds the cache once, before the workers read it
            results = _train_members_at_once(
                configs, output, ensemble.workers, resume, parent or parent_run_id
            )
            splits = [first, *(prepare_data(c) for c in configs[1:])]  # from the cache
        else:
            results, splits = [], []
            for index, member_cfg in enumerate(configs):
                log.info(
                    "ensemble member %d of %d: %s",
                    index + 1,
                    len(configs),
                    member_cfg.model.family,
                )
                member_splits = prepare_data(member_cfg)
                results.append(
                    run(
                        member_cfg,
                        member_folder(output, index),
                        resume=resume,
                        callbacks=callbacks,
                        parent_run_id=parent or parent_run_id,
                        splits=member_splits,
                    )
                )
                splits.append(member_splits)
        seconds = time.perf_counter() - started
        result = _finish_ensemble(cfg, output, results, splits, parent, seconds)
        log_run_metrics(tracking.uri, parent, _final_metrics(result))
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if parent is not None:
            close_parent_run(tracking.uri, parent, status)


def _train_members_at_once(
    configs: list[Config], output: Path, workers: int, resume: bool, parent_run_id: str | None
) -> list[RunResult]:
    """Train the members `workers` at a time in their listed order, in worker processes
    (spawned: no state of this one is shared) that each train one member after another, as
    `workers: 1` trains them all in this process; a worker's start (imports, ~10 s) is paid
    once, not per member.

    A stop here (SIGTERM, Ctrl-C) stops them all, each member keeping its last checkpoint
    for `--resume`; a worker that dies is one error, not a hang. One bar counts the members
    done; the workers draw none, and log as this process does, each line naming its member.
    (By hand, not a process pool: the standard pools queue tasks ahead into their workers,
    and stopping one mid-task can leave it waiting on a task it started.)
    """
    log.info("training %d ensemble members, %d at once", len(configs), workers)
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger("prodcat").getEffectiveLevel()
    waiting = list(range(len(configs)))
    idle: list[tuple] = []  # (process, this end of its duplex pipe)
    busy: dict[int, tuple] = {}  # member index -> (process, pipe)
    results: dict[int, RunResult] = {}
    try:
        with progress_bar(configs[0].training.progress, unit="members") as bar:
            task = bar.add_task("ensemble", total=len(configs), info="")
            while waiting or busy:
                while waiting and len(busy) < workers:
                    for worker in [w for w in idle if not w[0].is_alive()]:
                        idle.remove(worker)  # ended while idle (killed): another starts
                        worker[1].close()
                    if not idle:
                        ours, theirs = context.Pipe()
                        process = context.Process(
                            target=_worker_process,
                            args=(theirs, level),
                            name=f"prodcat-member-worker-{len(busy)}",
                        )
                        process.start()
                        theirs.close()
                        idle.append((process, ours))
                    index = waiting.pop(0)
                    process, pipe = idle.pop()
                    pipe.send(
                        (configs[index], member_folder(output, index), index, resume, parent_run_id)
                    )
                    busy[index] = (process, pipe)
                ready = wait(
                    [x for process, pipe in busy.values() for x in (process.sentinel, pipe)]
                )
                for index, (process, pipe) in list(busy.items()):
                    outcome = None
                    if pipe in ready or process.sentinel in ready:
                        outcome = _receive(pipe)
                    if outcome is None:
                        if process.sentinel not in ready:
                            continue
                        process.join()  # its exit code (the sentinel may come first)
                        # The machine's doing (kill -9, out of memory): exit code 1, not 2.
                        raise ChildProcessError(
                            f"ensemble member {index}'s process died (exit code "
                            f"{process.exitcode}: killed, or out of memory?); the members "
                            "trained and the last checkpoints are kept; continue with "
                            "`prodcat train ... --resume`"
                        )
                    del busy[index]
                    idle.append((process, pipe))
                    done, value = outcome
                    if not done:
                        raise value  # type: ignore[misc]
                    results[index] = value  # type: ignore[assignment]
                    bar.advance(task)
                    log.info(
                        "ensemble member %d of %d (%s): validation BAC %.4f",
                        index + 1,
                        len(configs),
                        configs[index].model.family,
                        results[index].validation.balanced_accuracy,
                    )
        return [results[i] for i in range(len(configs))]
    finally:
        # Stopped early, busy workers stop their member's run as it would stop on its own
        # (SIGTERM), keeping its checkpoint; idle ones have nothing to keep. Closing the
        # pipes ends a worker that has sent its last word.
        for process, pipe in [*busy.values(), *idle]:
            process.terminate()
            pipe.close()
        for process, _ in [*busy.values(), *idle]:
            process.join()


def _receive(pipe) -> tuple[bool, object] | None:
    """A worker's outcome, or None if it has none to give (it ended without a word)."""
    try:
        return pipe.recv() if pipe.poll() else None
    except (EOFError, OSError):
        return None


def _worker_process(pipe, level: int) -> None:
    """A worker: train each member it is sent with `run`, logging as the parent does (each
    line naming the member), and send back (True, result) or (False, the error), until the
    parent closes the pipe or stops the process."""
    from prodcat.training.run import run

    handler = logging.StreamHandler()
    logging.basicConfig(level=level, handlers=[handler], force=True)
    try:
        while True:
            cfg, folder, index, resume, parent_run_id = pipe.recv()
            handler.setFormatter(logging.Formatter(f"%(levelname)s member {index}: %(message)s"))
            cfg.training.progress = False  # one bar per process would garble the terminal
            outcome: tuple[bool, object]
            try:
                result = run(cfg, folder, resume=resume, parent_run_id=parent_run_id)
                result._model = None  # the parent loads the saved folder: not the weights
                outcome = (True, result)
            except KeyboardInterrupt:  # the parent's stop, or Ctrl-C: the run kept its
                outcome = (False, ProdcatError(f"ensemble member {index} was stopped"))
            except Exception as e:
                outcome = (False, e)
            try:
                pipe.send(outcome)
            except Exception as e:  # an error that does not pickle: its message does
                pipe.send((False, ProdcatError(f"ensemble member {index}: {outcome[1] or e}")))
            del outcome
            gc.collect()  # the member's tensors go back before the next one's
    except (EOFError, OSError, KeyboardInterrupt):  # the parent ended, or stopped us idle
        pass
    finally:
        pipe.close()


def _finish_ensemble(
    cfg: Config,
    output: Path,
    results: list[RunResult],
    splits: list,
    run_id: str | None,
    seconds: float,
) -> RunResult:
    t = cfg.training
    device = resolve_device(t.device)
    folders = [member_folder(output, i) for i in range(len(results))]
    model, _, labels = ensemble_model(folders)
    model = model.to(device)
    validation = EnsembleSplit([s.validation for s in splits])
    calibration, validation_scores = fit_ensemble(model, validation, t.eval_batch_size, device)
    log.info(
        "ensemble weights %s, temperature %.3f: validation BAC %.4f (members: %s)",
        ", ".join(f"{w:.3f}" for w in model.weights),
        calibration.temperature,
        validation_scores["balanced_accuracy"],
        ", ".join(f"{r.validation.balanced_accuracy:.4f}" for r in results),
    )
    scored_test = all(s.test is not None for s in splits) and t.score_test
    report_split = EnsembleSplit([s.test if scored_test else s.validation for s in splits])
    scores, predictions = evaluate_split(
        model, report_split, t.eval_batch_size, device, top_k=5, temperature=calibration.temperature
    )
    result = RunResult(
        family="ensemble",
        output_dir=output,
        best_epoch=0,
        epochs_run=sum(r.epochs_run for r in results),
        validation=Scores(**validation_scores),
        test=Scores(**scores) if scored_test else None,
        train_rows=results[0].train_rows,
        train_seconds=seconds,
        titles_per_second=sum(r.titles_per_second * r.train_seconds for r in results)
        / max(sum(r.train_seconds for r in results), 1e-9),
        device=device_name(device),
        device_type=device.type,
        parameters=sum(r.parameters for r in results),
        history=[],
        run_id=run_id,
        temperature=calibration.temperature,
    )
    spec = EnsembleSpec(
        [f"{MEMBERS_FOLDER}/{i}" for i in range(len(results))], model.weights, "validation"
    )
    with staging_folder(output, last=(METRICS_FILE,)) as staging:
        write_ensemble_files(staging, cfg, labels, spec, calibration, members_in_place=output)
        save_predictions(staging, report_split, predictions, labels)  # type: ignore[arg-type]
        write_category_report(
            report_split.labels,
            predictions.top_ids[:, 0],
            labels.names,
            staging / "category_report.csv",
        )
        result.save(staging)
    result._model = model.eval()
    log.info("saved the ensemble in %s", output)
    return result


def _final_metrics(result: RunResult) -> dict[str, float | None]:
    metrics: dict[str, float | None] = {"temperature": result.temperature}
    for split in ("validation", "test"):
        scores = getattr(result, split)
        if scores is not None:
            metrics.update({f"{split}_{k}": v for k, v in scores.model_dump().items()})
    return metrics


def combine_folders(
    folders: Sequence[str | Path],
    output: str | Path,
    validation: str | Path | None = None,
    batch_size: int = 2048,
) -> tuple[EnsembleSpec, Calibration, dict[str, float] | None]:
    """`prodcat ensemble`: one ensemble folder in `output` from trained model folders (they
    are copied into it). With a labelled `validation` file, weights and a temperature are
    fitted on it and its metrics returned; without, equal weights and no extra temperature."""
    folders = [Path(f) for f in folders]
    output = Path(output)
    if len(folders) < 2:
        raise ConfigError("an ensemble needs at least two model folders")
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"{output}: is not empty; give a new folder as --output")
    model, members, labels = ensemble_model(folders)
    scores = None
    calibration = Calibration()
    if validation is not None:
        split = EnsembleSplit(
            [file_split(validation, c.data, f, labels, "validation") for c, _, f in members]
        )
        calibration, scores = fit_ensemble(model, split, batch_size, torch.device("cpu"))
    first_cfg = members[0][0]
    tree = first_cfg.model_dump(mode="json")
    tree["model"] = {
        "family": "ensemble",
        "members": [{"model": c.model.model_dump(mode="json")} for c, _, _ in members],
    }
    cfg = Config.model_validate(tree)
    cfg.tracking.enabled = False  # nothing is tracked: the members' runs were
    spec = EnsembleSpec(
        [f"{MEMBERS_FOLDER}/{i}" for i in range(len(folders))],
        model.weights,
        Path(validation).name if validation is not None else None,
    )
    with staging_folder(output) as staging:
        for name, folder in zip(spec.members, folders):
            for file in listed_files(folder) or _all_files(folder):
                target = staging / name / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / file, target)
        write_ensemble_files(staging, cfg, labels, spec, calibration)
    return spec, calibration, scores


def _all_files(folder: Path) -> list[str]:
    # A folder saved before manifests: all of it but a checkpoint (only training reads it).
    return [
        path.relative_to(folder).as_posix()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(("checkpoint", ".partial"))
    ]

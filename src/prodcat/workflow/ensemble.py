"""Ensembles, above the training of one model: each member of `model.family: ensemble` is
trained like any model (`train_model`), one after another or `workers` at once; then the
ensemble model of the members' folders is calibrated and written by the same finish path as
every model (`prodcat.training.finish`). `prodcat ensemble` combines folders trained already.

The weights are non-negative, sum to 1 and maximise the validation log-likelihood of the
mean of the members' calibrated probabilities (EM for mixture weights); temperature scaling
goes on top (`EnsembleModel.calibrate`). Combined without a validation file, the weights are
equal and no temperature is added (each member is calibrated already).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import pickle
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from prodcat.atomic import write_text_atomic
from prodcat.config import Config
from prodcat.data.vocab import LabelMap
from prodcat.errors import ConfigError, ProdcatError
from prodcat.evaluation.calibration import Calibration
from prodcat.models.ensemble import (
    ENSEMBLE_FILE,
    MEMBERS_FOLDER,
    EnsembleConfig,
    EnsembleModel,
    EnsembleSplit,
    MemberReader,
)
from prodcat.models.folder import ModelFolder, load_model_folder, staging_folder, write_model_files
from prodcat.models.manifest import listed_files
from prodcat.progress import progress_bar
from prodcat.tracking import make_tracker
from prodcat.training.device import device_name, resolve_device
from prodcat.training.finish import score, write_run_folder
from prodcat.training.ranks import Rank
from prodcat.training.result import METRICS_FILE, RunResult, Scores
from prodcat.workflow.train import check_output, prepare_data, terminate_as_interrupt, train_model

log = logging.getLogger(__name__)

PARENT_RUN_FILE = "ensemble-run.json"  # the ensemble's tracked run, reopened on --resume


def member_folder(output: Path, index: int) -> Path:
    return output / MEMBERS_FOLDER / str(index)


def train_ensemble(
    cfg: Config,
    output: Path,
    *,
    resume: bool = False,
    callbacks: Sequence = (),
    parent_run_id: str | None = None,
) -> RunResult:
    """Train every member of `cfg.model` (an `EnsembleConfig`) into `output/members/I`, then
    calibrate the ensemble on the validation rows, score the test rows and write its folder
    in `output`. With `workers` > 1 the members train in processes of their own, which
    `callbacks` do not hear. The result's `train_seconds` is the wall time of the members'
    training. The members' tracked runs nest under the ensemble's."""
    ensemble: EnsembleConfig = cfg.model  # type: ignore[assignment]
    if Rank.from_env().world > 1:
        raise ConfigError("an ensemble trains in one process: run it without torchrun")
    output.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output / "config.yaml", cfg.to_yaml())
    tracking = cfg.tracking
    tracker = make_tracker(tracking)
    parent = tracker.open_parent(
        output / PARENT_RUN_FILE,
        tracking.run_name or f"ensemble-{output.name}",
        {**tracking.tags, "prodcat.family": "ensemble"}
        | ({"mlflow.parentRunId": parent_run_id} if parent_run_id else {}),
        {"model.family": "ensemble", "members": len(ensemble.members)},
    )
    status, metrics = "FAILED", None
    try:
        configs = [ensemble.member_config(cfg, i) for i in range(len(ensemble.members))]
        for index, member_cfg in enumerate(configs):
            if tracking.run_name:
                member_cfg.tracking.run_name = f"{tracking.run_name}-member-{index}"
        started = time.perf_counter()
        if ensemble.workers > 1:
            first = prepare_data(configs[0])  # builds the cache once, before the workers read it
            results = _train_members_at_once(configs, output, ensemble.workers, resume, parent)
            splits = [first, *(prepare_data(c) for c in configs[1:])]  # from the cache
        else:
            results, splits = [], []
            for index, member_cfg in enumerate(configs):
                log.info(
                    "ensemble member %d of %d: %s", index + 1, len(configs), member_cfg.model.family
                )
                folder = member_folder(output, index)
                check_output(member_cfg, folder, resume)
                splits.append(prepare_data(member_cfg))
                results.append(
                    finished(folder, resume)
                    or train_model(
                        member_cfg,
                        folder,
                        resume=resume,
                        callbacks=callbacks,
                        parent_run_id=parent,
                        splits=splits[-1],
                    )  # fmt: skip
                )
        result = _finish(cfg, output, results, splits, parent, time.perf_counter() - started)
        status, metrics = "FINISHED", _final_metrics(result)
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.close_parent(parent, status, metrics)


def finished(folder: Path, resume: bool) -> RunResult | None:
    """A member's result when `--resume` finds it finished (its folder keeps no checkpoint to
    resume from), else None."""
    if resume and (folder / METRICS_FILE).is_file():
        log.info("%s: finished, kept", folder)
        return RunResult.load(folder)
    return None


def _finish(
    cfg: Config, output: Path, results: list[RunResult], splits: list, run_id, seconds: float
) -> RunResult:
    """The ensemble of the members' folders, calibrated (weights and a temperature) and
    scored, its folder written by the path every model's takes."""
    device = resolve_device(cfg.training.device)
    folders = [member_folder(output, i) for i in range(len(results))]
    members = [load_model_folder(folder) for folder in folders]
    labels = _shared_labels(folders, members)
    model = _ensemble_of(members, [f"{MEMBERS_FOLDER}/{i}" for i in range(len(members))]).to(device)
    model.fitted_on = "validation"
    validation = EnsembleSplit([s.validation for s in splits])
    tests = [s.test for s in splits]
    test = EnsembleSplit(tests) if all(t is not None for t in tests) else None
    # The weights are what makes an ensemble: fitted whatever `training.calibrate` says.
    scored = score(cfg, model, validation, test, device, autocast=False, calibrate=True)
    log.info(
        "ensemble weights %s, temperature %.3f: validation BAC %.4f (members: %s)",
        ", ".join(f"{w:.3f}" for w in model.weights),
        scored.temperature or 1.0,
        scored.validation.get("balanced_accuracy", float("nan")),
        ", ".join(f"{r.validation.balanced_accuracy:.4f}" for r in results),
    )
    trained = sum(r.train_seconds for r in results)
    result = RunResult(
        family="ensemble",
        output_dir=output,
        best_epoch=0,
        epochs_run=sum(r.epochs_run for r in results),
        validation=Scores(**scored.validation),
        test=Scores(**scored.scores) if scored.scored_test else None,
        train_rows=results[0].train_rows,
        train_seconds=seconds,
        titles_per_second=sum(r.titles_per_second * r.train_seconds for r in results)
        / max(trained, 1e-9),
        device=device_name(device),
        device_type=device.type,
        parameters=sum(r.parameters for r in results),
        history=[],
        run_id=run_id,
        temperature=scored.temperature,
        members=len(results),
    )
    in_place = {
        f"{name}/{file}": output / name / file
        for name in model.folders
        for file in listed_files(output / name) or []
    }
    write_run_folder(output, cfg, model, None, labels, scored, result, in_place)
    result._model = model.eval()
    return result


def _ensemble_of(members: list[ModelFolder], folders: list[str]) -> EnsembleModel:
    """The members under equal weights, each with its own temperature."""
    return EnsembleModel(
        [m.model for m in members],
        [1.0] * len(members),
        [m.calibration.temperature for m in members],
        folders,
    )


def _shared_labels(folders: Sequence[Path], members: list[ModelFolder]) -> LabelMap:
    """The members' one label set; folders with other label sets are refused."""
    labels = members[0].labels
    for folder, member in zip(folders[1:], members[1:]):
        if list(member.labels.names) != list(labels.names):
            raise ConfigError(
                f"{folder}: its {len(member.labels)} categories differ from those of "
                f"{folders[0]} ({len(labels)}): an ensemble's members must share one label set"
            )
    return labels


def _final_metrics(result: RunResult) -> dict[str, float | None]:
    metrics: dict[str, float | None] = {"temperature": result.temperature}
    for split in ("validation", "test"):
        scores = getattr(result, split)
        if scores is not None:
            metrics.update({f"{split}_{k}": v for k, v in scores.model_dump().items()})
    return metrics


# -- members trained at once ----------------------------------------------------------------


def _train_members_at_once(
    configs: list[Config], output: Path, workers: int, resume: bool, parent_run_id: str | None
) -> list[RunResult]:
    """Train the members `workers` at a time in their listed order, in the worker processes
    of a standard process pool (spawned: no state of this one is shared), each training one
    member after another as `workers: 1` trains them all in this process; a worker's start
    (imports, ~10 s) is paid once, not per member.

    A stop here (SIGTERM, Ctrl-C) stops them all, each member keeping its last checkpoint
    for `--resume`; a worker that dies is one error, not a hang (the pool then ends the
    others). One bar counts the members done; the workers draw none, and log as this process
    does, each line naming its member.
    """
    log.info("training %d ensemble members, %d at once", len(configs), workers)
    level = logging.getLogger("prodcat").getEffectiveLevel()
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(level,),
    )
    processes: dict[int, multiprocessing.process.BaseProcess] = {}
    waiting, running = list(range(len(configs))), {}
    results: dict[int, RunResult] = {}
    try:
        with progress_bar(configs[0].training.progress, unit="members") as bar:
            task = bar.add_task("ensemble", total=len(configs), info="")
            while waiting or running:
                # No more members submitted than there are workers: the pool would queue the
                # next ones into its workers ahead of time, and a stop could then start one.
                while waiting and len(running) < workers:
                    index = waiting.pop(0)
                    folder = member_folder(output, index)
                    args = (configs[index], folder, index, resume, parent_run_id)
                    running[pool.submit(_train_member, *args)] = index
                    processes.update(_worker_processes(pool))
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    index = running.pop(future)
                    results[index] = _result(future, index, pool, processes)
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
        # Stopped early: the members being trained stop as a run stops on its own (SIGTERM),
        # keeping their checkpoints, and the pool waits for them.
        if running:
            for process in _worker_processes(pool).values():
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_processes(pool: ProcessPoolExecutor) -> dict[int, multiprocessing.process.BaseProcess]:
    """The pool's worker processes. By hand, what the standard pool cannot do: stop the
    tasks it runs (Python 3.14's `terminate_workers`) and say how a dead worker ended."""
    return dict(getattr(pool, "_processes", None) or {})


def _result(future: Future, index: int, pool: ProcessPoolExecutor, processes) -> RunResult:
    """A member's result; a worker that died is one `ChildProcessError` naming its exit code
    (the machine's doing, kill -9 or out of memory: exit code 1, not 2)."""
    try:
        return future.result()
    except BrokenProcessPool:
        pool.shutdown(wait=True, cancel_futures=True)  # the pool has ended the other workers
        codes = [p.exitcode for p in processes.values() if p.exitcode not in (0, None, -15)]
        raise ChildProcessError(
            f"an ensemble member's process died (exit code {codes[0] if codes else '?'}: "
            f"killed, or out of memory?) while member {index} trained; the members trained "
            "and the last checkpoints are kept; continue with `prodcat train ... --resume`"
        ) from None


def _start_worker(level: int) -> None:
    """A worker logs as the parent does; Ctrl-C reaches the parent alone, which stops the
    workers' members with SIGTERM (the way a run stops at its batch)."""
    import signal

    logging.basicConfig(level=level, handlers=[logging.StreamHandler()], force=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _train_member(
    cfg: Config, folder: Path, index: int, resume: bool, parent_run_id: str | None
) -> RunResult:
    """In a worker: train member `index` as `workers: 1` would, each log line naming it."""
    handler = logging.getLogger().handlers[0]
    handler.setFormatter(logging.Formatter(f"%(levelname)s member {index}: %(message)s"))
    cfg.training.progress = False  # one bar per process would garble the terminal
    if done := finished(folder, resume):
        return done
    try:
        with terminate_as_interrupt():
            check_output(cfg, folder, resume)
            result = train_model(cfg, folder, resume=resume, parent_run_id=parent_run_id)
    except KeyboardInterrupt:  # the parent's stop: the run kept its checkpoint
        raise ProdcatError(f"ensemble member {index} was stopped") from None
    except Exception as e:
        try:
            pickle.dumps(e)
        except Exception:  # an error that does not pickle: its message does
            raise ProdcatError(f"ensemble member {index}: {e}") from None
        raise
    finally:
        gc.collect()  # the member's tensors go back before the next one's
    result._model = None  # the parent loads the saved folder, not the weights
    return result


# -- folders trained already ----------------------------------------------------------------


def combine_folders(
    folders: Sequence[str | Path],
    output: str | Path,
    validation: str | Path | None = None,
    batch_size: int = 2048,
) -> tuple[EnsembleModel, Calibration, dict[str, float] | None]:
    """`prodcat ensemble`: one ensemble folder in `output` from trained model folders (they
    are copied into it). With a labelled `validation` file, weights and a temperature are
    fitted on it and its metrics returned; without, equal weights and no extra temperature."""
    folders = [Path(f) for f in folders]
    output = Path(output)
    if len(folders) < 2:
        raise ConfigError("an ensemble needs at least two model folders")
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"{output}: is not empty; give a new folder as --output")
    for folder in folders:
        if (folder / ENSEMBLE_FILE).is_file():
            raise ConfigError(f"{folder}: is an ensemble; give its members' folders instead")
    members = [load_model_folder(folder) for folder in folders]
    labels = _shared_labels(folders, members)
    model = _ensemble_of(members, [f"{MEMBERS_FOLDER}/{i}" for i in range(len(members))])
    scores, calibration = None, Calibration()
    if validation is not None:
        split = MemberReader([m.reader for m in members]).split(validation, labels, "validation")
        calibration, scores = model.calibrate(split, batch_size, torch.device("cpu"))
        model.fitted_on = Path(validation).name
    tree = members[0].cfg.model_dump(mode="json")
    tree["model"] = {
        "family": "ensemble",
        "members": [{"model": m.cfg.model.model_dump(mode="json")} for m in members],
    }
    cfg = Config.model_validate(tree)
    cfg.tracking.enabled = False  # nothing is tracked: the members' runs were
    with staging_folder(output) as staging:
        for name, folder in zip(model.folders, folders):
            for file in listed_files(folder) or _all_files(folder):
                target = staging / name / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / file, target)
        write_model_files(staging, cfg, model, None, labels, calibration)
    return model, calibration, scores


def _all_files(folder: Path) -> list[str]:
    # A folder saved before manifests: all of it but a checkpoint (only training reads it).
    return [
        path.relative_to(folder).as_posix()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(("checkpoint", ".partial"))
    ]

"""A study database that several processes or machines share: Optuna's RDB storage.

`prodcat tune` keeps its trials in one, and `prodcat compare --storage` its runs. The database
is the queue: a worker claims the next trial (Optuna takes a waiting trial under a row lock,
so no two workers get the same one), beats a heartbeat while it trains, and a trial whose
worker stopped beating (killed, machine gone) is failed and queued again by whichever worker
looks next. prodcat adds two rules on top, both decided from the database alone:

- a study has a budget (tune's trials, the sweep's runs): a trial claimed beyond it is a
  *surplus* trial, closed as failed before it trains and left out of every count;
- the worker that settles the study's last trial *finishes* it (best.yaml, the report); a
  worker that ran nothing and finds the study done finishes it too (the command run again).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prodcat.errors import ConfigError, ProdcatError
from prodcat.tracking.metadata import redacted

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 60  # a running trial's sign of life; silent 3x as long, it is retried
RETRIES = 2  # times a trial whose worker died is queued again
SURPLUS = "prodcat.surplus"  # user attribute of a trial claimed beyond the budget


class Surplus(Exception):
    """Raised in an objective to close a trial that the budget has no room for."""


def storage_url(url: str) -> str:
    """`url` as SQLAlchemy should read it: a bare `postgresql://` names psycopg 3 (the `team`
    extra's driver), whichever driver the installed SQLAlchemy would default to."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return url


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS):
    """Optuna's RDB storage at `url`, with heartbeats and retries of trials whose worker died.
    Any failure to reach the database is one ConfigError naming it."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=heartbeat,
                    grace_period=3 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=RETRIES
                    ),
                )
        except ModuleNotFoundError as e:
            raise ConfigError(
                f"--storage {redacted(url)}: its driver {e.name} is not installed: "
                "pip install 'prodcat[team]'"
            ) from None
        except (sqlalchemy.exc.SQLAlchemyError, ValueError) as e:
            error = e
            # Workers started together on a new database race to create its tables (SQLite
            # says so as "already exists" or "locked"): the loser finds them on its next try.
            racing = (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)
            if not isinstance(e, racing) and not any(
                word in str(e) for word in ("already exists", "database is locked")
            ):
                break
            time.sleep(0.2 * (attempt + 1))
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    raise ConfigError(f"--storage {redacted(url)}: cannot open the study database: {reason}")


def quiet_trial_errors() -> None:
    """Optuna logs a failed trial's exception with its traceback. A surplus trial is worth
    none, and prodcat says a user's mistake (a `ProdcatError`) or a stop in one line itself."""
    import optuna

    logger = optuna.logging.get_logger("optuna")
    if not any(isinstance(f, _Quiet) for f in logger.filters):
        logger.addFilter(_Quiet())


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        said = (Surplus, ProdcatError, KeyboardInterrupt)
        return not isinstance(error, said) and "Surplus(" not in record.getMessage()


def close_as_surplus(trial, why: str) -> None:
    """Mark `trial` surplus and end it (raises)."""
    trial.set_user_attr(SURPLUS, True)
    raise Surplus(why)


def counted(trials: Iterable) -> list:
    """The trials that count: every one but the surplus."""
    return [t for t in trials if not t.user_attrs.get(SURPLUS)]


@dataclass
class Share:
    """What one worker did in a study."""

    mine: list[int] = field(default_factory=list)  # numbers of the trials it claimed
    came_late: bool = False  # the study was settled before it looked

    def finishes(self, trials: list) -> bool:
        """Whether this worker finishes the study: it settled the study's last trial, or
        came after the study was settled (the command run again)."""
        from optuna.trial import TrialState

        if self.came_late:
            return True
        done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        last = max(done, key=lambda t: (t.datetime_complete, t.number), default=None)
        return last is not None and last.number in self.mine


def work(
    study,
    objective: Callable[[Any], float],
    *,
    settled: Callable[[list], bool],
    claimable: Callable[[list], bool],
    poll: float,
    report: Callable[[list], None] = lambda trials: None,
) -> Share:
    """Claim and run trials until `settled(trials)`.

    `claimable(trials)` says whether asking for a trial may give work (a waiting trial, or
    room in the budget); otherwise the worker waits `poll` seconds for the others, failing
    and queueing again the trials whose worker stopped beating. `report(trials)` hears the
    study's trials each time the worker looks.
    """
    import optuna

    quiet_trial_errors()
    share = Share()

    def run_one(trial) -> float:
        share.mine.append(trial.number)
        return objective(trial)

    first = True
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = counted(study.get_trials(deepcopy=False))
        report(trials)
        if settled(trials):
            share.came_late = first
            return share
        first = False
        if claimable(trials):
            study.optimize(run_one, n_trials=1, catch=(Surplus,), show_progress_bar=False)
        else:
            time.sleep(poll)


def poll_seconds(heartbeat: int) -> float:
    """How often a waiting worker looks at the study again: each look is one query, and a
    look late is the whole study's wall time late."""
    return min(1.0, heartbeat / 4)

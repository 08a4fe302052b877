"""APScheduler, adapted to be the dispatcher's clock and nothing more.

A timer that fires must leave a record in our tables before APScheduler moves it on, and a
failure must not kill APScheduler's loop. Per tick, APScheduler writes each cron's timer with its
own UPDATE: with hundreds of crons due the same second those round trips, one cron after another,
made the loop fall behind. Here the timer updates of one pass are held, the pass's ticks are
recorded in one statement, and the held updates are then written in one more. A crash in
between leaves timers behind their ticks, so the ticks fire again and the unique (cron, tick)
row absorbs them.
"""

from __future__ import annotations

import datetime as dt
import logging
import pickle
import threading
from collections.abc import Callable
from typing import Any

from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.util import datetime_to_utc_timestamp

from scheduler import errors, tuning
from scheduler.storage import db
from scheduler.storage import timers as timer_rows
from scheduler.worker import supervisor

logger = logging.getLogger(__name__)

FIRE_REF = f"{__name__}:fire"
# The jobstore only reads through this engine: autocommit saves the BEGIN and COMMIT round trips.
# No ping per checkout either: SQLAlchemy discards its pool on a disconnect error, and
# GuardedScheduler retries the pass that hit it.
ENGINE_OPTIONS: dict[str, Any] = {
    "isolation_level": "AUTOCOMMIT",
    **tuning.TIMER_ENGINE_POOL,
    "pool_recycle": 1800,
}
# Through a transaction-mode pooler: no named prepared statements (db._session_free).
POOLED_CONNECT_ARGS = {"prepare_threshold": None}


def fire(kind: str, ref: str) -> None:
    """Target of every stored timer; OutboxExecutor acts on submit and never runs it.

    Stored timers name this function by its import path (FIRE_REF): APScheduler deletes every
    stored timer whose function it cannot import, so moving it needs a migration of the stored
    timers.
    """


class OutboxExecutor(BaseExecutor):
    """Acts on a timer synchronously on the scheduler thread, before APScheduler moves it on."""

    def __init__(self, on_fire: Callable[[Job, list[dt.datetime]], None]) -> None:
        super().__init__()
        self._on_fire = on_fire

    def submit_job(self, job: Job, run_times: list[dt.datetime]) -> None:
        self._on_fire(job, run_times)

    def _do_submit_job(self, job: Job, run_times: list[dt.datetime]) -> None:
        raise NotImplementedError("submit_job does the work")


class TimerStore(SQLAlchemyJobStore):
    """SQLAlchemyJobStore whose writes go through `database`, the term's fenced connection
    (a deposed leader's timer writes change nothing), and whose timer updates can be held
    during a pass and written together. Reads stay SQLAlchemy's."""

    def __init__(self, url: str, database: db.Database, pooled: bool = False) -> None:
        options = (
            {**ENGINE_OPTIONS, "connect_args": POOLED_CONNECT_ARGS} if pooled else ENGINE_OPTIONS
        )
        super().__init__(url=url, engine_options=options)
        self._database = database
        self.holding = False
        self._held: dict[str, Job] = {}

    def _row(self, job: Job) -> timer_rows.TimerRow:
        return timer_rows.TimerRow(
            job.id,
            datetime_to_utc_timestamp(job.next_run_time),
            pickle.dumps(job.__getstate__(), self.pickle_protocol),
        )

    def add_job(self, job: Job) -> None:
        try:
            timer_rows.add_timer(self._database, self._row(job))
        except errors.Conflict:
            raise ConflictingIdError(job.id) from None

    def update_job(self, job: Job) -> None:
        if self.holding:
            self._held[job.id] = job
        elif not timer_rows.update_timers(self._database, [self._row(job)]):
            raise JobLookupError(job.id)

    def remove_job(self, job_id: str) -> None:
        if not timer_rows.remove_timer(self._database, job_id):
            raise JobLookupError(job_id)

    def remove_all_jobs(self) -> None:
        timer_rows.remove_all_timers(self._database)

    def write_held(self) -> None:
        held, self._held = self._held, {}
        if held:
            timer_rows.update_timers(self._database, [self._row(job) for job in held.values()])

    def drop_held(self) -> None:
        self._held = {}


class GuardedScheduler(BackgroundScheduler):
    """Runs each pass with its timer updates held until `after_pass` (which records what the
    pass fired) has succeeded; keeps the loop alive through errors (a database blip), retrying
    the pass a second later. Its thread runs under `supervising` as `timers`, until `stopping`."""

    def __init__(
        self,
        store: TimerStore,
        after_pass: Callable[[], None],
        supervising: supervisor.Supervisor | None = None,
        stopping: threading.Event | None = None,
        **options: Any,
    ) -> None:
        super().__init__(jobstores={"default": store}, **options)
        self._timer_store = store
        self._after_pass = after_pass
        self._supervisor = supervising or supervisor.Supervisor()
        self._stopping = stopping

    def _main_loop(self) -> None:
        self._supervisor.run("timers", self._timer_loop, self._stopping)

    def _timer_loop(self) -> None:
        # A restarted loop would otherwise wait for the next change of a timer before a pass.
        self._event.set()
        super()._main_loop()

    def _process_jobs(self) -> float | None:
        # Every jobstore access holds this (reentrant) lock, so nothing else reads or writes a
        # timer between the pass and its held updates.
        with self._jobstores_lock:
            self._timer_store.holding = True
            try:
                wait: float | None = super()._process_jobs()
                self._timer_store.holding = False
                self._after_pass()
                self._timer_store.write_held()
            except errors.TermEnded as exc:
                # The campaign's next renewal steps this term down; until then nothing it
                # writes lands, and its timers stay where they were for the next leader.
                self._timer_store.drop_held()
                logger.warning("timer pass refused: %s", exc, extra={"action": "term_ended"})
                return tuning.LOOP_RETRY_SECONDS
            except Exception:
                self._timer_store.drop_held()
                logger.exception(
                    "timer pass failed; retrying", extra={"action": "timer_pass_failed"}
                )
                return tuning.LOOP_RETRY_SECONDS
            finally:
                self._timer_store.holding = False
        return wait

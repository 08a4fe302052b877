"""The worker process: one elected leader runs APScheduler timers and sends due deliveries.

Our `jobs` and `crons` tables are the truth; APScheduler's jobstore holds timers: one cron
trigger per cron, and one date trigger, `wake`, for the next job due after a quiet spell. A
timer firing never sends anything itself: for jobs it wakes the delivery loop (the job rows
already exist), for a cron it first records the tick as a job row, unique on (cron, tick),
before APScheduler advances its timer. Deliveries are claimed from the table, so a timer lost
in a crash costs a little latency, never a job.

One timer for the next due job, rather than one per job, keeps APScheduler's jobstore writes
independent of how many jobs there are; when jobs come due less than LOCAL_WAIT_SECONDS apart,
the delivery loop waits for the next one itself instead of a jobstore round trip per job.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType
from typing import Any

import psycopg
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.triggers.date import DateTrigger

from scheduler import config, cron, db, dispatch_metrics, errors, jobs, logs, senders, store, timers

logger = logging.getLogger(__name__)

FIRE_REF = "scheduler.dispatcher:fire"
LEADER_LOCK = "scheduler.dispatcher"
STANDBY_RETRY_SECONDS = 1.0
LOCK_PROBE_SECONDS = 2.0
LOOP_RETRY_SECONDS = 1.0
MAX_RECONNECT_SECONDS = 5.0
SKIP_MISSED_AFTER_SECONDS = 2.0
WAKE_TIMER = "wake"
LOCAL_WAIT_SECONDS = 1.0
PRUNE_BATCH = 1000
PRUNE_BATCHES = 20
UTC = dt.UTC


def fire(kind: str, ref: str) -> None:
    """Target of every stored APScheduler timer; OutboxExecutor acts on submit and never runs it.

    Stored timers name this function by its import path: moving or renaming it makes
    APScheduler delete every stored timer it can no longer unpickle.
    """


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


class LeaderSession:
    """Everything the active dispatcher runs, from winning the lock until stop or loss."""

    def __init__(self, settings: config.Settings, lock: store.LeaderLock, epoch: int) -> None:
        self.settings = settings
        self.lock = lock
        self.epoch = epoch
        self._confirmed_at = time.monotonic()
        self._wake_at: dt.datetime | None = None
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.pool = db.open_pool(
            settings.database_url, settings.delivery_threads + 4, name="dispatcher"
        )
        self.store = store.Store(self.pool)
        self.senders = senders.Senders(settings, self.store, self.wake.set, self._job_due)
        self._held_ticks: list[jobs.CronTick] = []
        self.scheduler = timers.GuardedScheduler(
            timers.TimerStore(settings.sqlalchemy_url),
            self._record_held_ticks,
            timezone=UTC,
            executors={"default": timers.OutboxExecutor(self._on_timer)},
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
            jobstore_retry_interval=2,
        )
        self.threads = [
            threading.Thread(target=self._listen_loop, name="listen", daemon=True),
            threading.Thread(target=self._delivery_loop, name="claim", daemon=True),
        ]

    # --- lifecycle -------------------------------------------------------------------------

    def run(self, stop_requested: threading.Event) -> None:
        """Run until asked to stop or until leadership can no longer be confirmed."""
        released = self.store.release_orphaned_deliveries(self.epoch, utcnow())
        if released:
            logger.info("re-queued %d deliveries left in flight by a previous dispatcher", released)
        self.scheduler.start()
        for thread in self.threads:
            thread.start()
        dispatch_metrics.DISPATCHER_ACTIVE.set(1)
        logger.info(
            "dispatcher active (epoch %d)",
            self.epoch,
            extra={"action": "leader_elected", "epoch": self.epoch},
        )
        probe = min(LOCK_PROBE_SECONDS, self.settings.leader_timeout / 5)
        while not stop_requested.wait(probe):
            try:
                confirmed = self.lock.confirm(self.epoch)
            except errors.StoreUnavailable:
                confirmed = False
            if not confirmed:
                logger.error("cannot confirm leadership; stopping", extra={"action": "leader_lost"})
                break
            self._confirmed_at = time.monotonic()

    def is_leader(self) -> bool:
        """Whether leadership was confirmed recently enough to act on; when in doubt, don't.

        Half the leader timeout: the server frees a vanished leader's lock only after about the
        whole timeout, so this process stops firing before a standby can start.
        """
        fresh = time.monotonic() - self._confirmed_at < self.settings.leader_timeout / 2
        return fresh and not self.stopping.is_set()

    def stop(self, grace: float) -> bool:
        """Stop firing, let in-flight deliveries finish within `grace`; True if all did."""
        self.stopping.set()
        dispatch_metrics.DISPATCHER_ACTIVE.set(0)
        # A standby's count would be stale: 0 lets dashboards sum over every dispatcher.
        dispatch_metrics.DUE_JOBS.set(0)
        self.wake.set()
        try:
            self.scheduler.shutdown(wait=False)
        except Exception:
            logger.exception("scheduler shutdown failed")
        finished = self.senders.close(grace)
        for thread in self.threads:
            thread.join(timeout=2)
        self.pool.close(timeout=2)
        return finished

    # --- timers ----------------------------------------------------------------------------

    def _on_timer(self, job: Job, run_times: list[dt.datetime]) -> None:
        if not self.is_leader():
            # A successor catches the tick up; recording it here could not be fenced in time.
            logger.warning("timer %s fired while leadership is unconfirmed; skipped", job.id)
            return
        kind, ref = job.args
        if kind != "cron":
            self.wake.set()
            return
        for run_time in run_times:
            late = (utcnow() - run_time).total_seconds()
            if self.settings.cron_catchup == "skip" and late > SKIP_MISSED_AFTER_SECONDS:
                logger.info("skipped a missed tick of cron revision %s (%.0fs late)", ref, late)
            else:
                self._held_ticks.append(jobs.CronTick(int(ref), jobs.new_job_id(), run_time))

    def _record_held_ticks(self) -> None:
        """Record the ticks of the timer pass that just ended, before its timers move on."""
        ticks, self._held_ticks = self._held_ticks, []
        if not ticks:
            return
        recorded = self.store.record_cron_fires(self.epoch, ticks, self.settings.max_attempts)
        dispatch_metrics.CRON_TICKS.inc(recorded)
        self.wake.set()

    def _set_wake_timer(self, due: dt.datetime) -> None:
        """Have APScheduler wake the delivery loop at `due` (the next job's time)."""
        self.scheduler.add_job(
            FIRE_REF,
            trigger=DateTrigger(run_date=due, timezone=UTC),
            args=("wake", ""),
            id=WAKE_TIMER,
            replace_existing=True,
        )
        self._wake_at = due

    def _remove_timer(self, timer_id: str) -> None:
        with contextlib.suppress(JobLookupError):
            self.scheduler.remove_job(timer_id)

    def _set_cron_timer(self, job: jobs.CronJob) -> None:
        spec = cron.parse_spec(job.spec)
        self.scheduler.add_job(
            FIRE_REF,
            trigger=spec.trigger,
            args=("cron", str(job.revision)),
            id=job.timer_id,
            replace_existing=True,
        )

    # --- reconcile -------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Make timers match the tables and catch up anything missed; cheap enough to repeat."""
        now = utcnow()
        expired = self.store.release_expired_leases(self.epoch, now)
        if expired:
            logger.warning("re-queued %d deliveries whose lease expired", expired)
        self._prune(now)
        for timer_id in self.store.stale_job_timers():
            self._remove_timer(timer_id)
        self.sync_crons(now)
        dispatch_metrics.DUE_JOBS.set(self.store.count_due_jobs(utcnow()))
        self._wake_at = None  # the loop sets the timer afresh
        self.wake.set()

    def _prune(self, now: dt.datetime) -> None:
        finished_before = now - dt.timedelta(seconds=self.settings.retention)
        keys_before = now - dt.timedelta(seconds=self.settings.idempotency_ttl)
        for prune, before in (
            (self.store.prune_finished_jobs, finished_before),
            (self.store.prune_idempotency_keys, keys_before),
        ):
            for _ in range(PRUNE_BATCHES):
                if prune(before, PRUNE_BATCH) < PRUNE_BATCH:
                    break

    def sync_crons(self, now: dt.datetime) -> None:
        for timer_id in self.store.stale_cron_timers():
            self._remove_timer(timer_id)
        for job in self.store.list_crons():
            if not job.paused:
                self._catch_up(job, now)
        for job in self.store.crons_missing_timers():
            self._set_cron_timer(job)

    def _catch_up(self, job: jobs.CronJob, now: dt.datetime) -> None:
        """Record the latest tick missed since the last recorded one (once, coalesced)."""
        if self.settings.cron_catchup == "skip":
            return
        # A redefined or resumed cron starts afresh: nothing before updated_at is owed.
        since = max(job.last_fire_at or job.updated_at, job.updated_at)
        missed = cron.latest_fire_time(cron.parse_spec(job.spec), since, now)
        if missed is None:
            return
        tick = jobs.CronTick(job.revision, jobs.new_job_id(), missed)
        if self.store.record_cron_fires(self.epoch, [tick], self.settings.max_attempts):
            dispatch_metrics.CRON_TICKS.inc()
            logger.info(
                "cron %s caught up on its tick of %s",
                job.id,
                missed.isoformat(),
                extra={"action": "cron_catch_up", "cron_id": job.id},
            )

    # --- notifications ---------------------------------------------------------------------

    def _listen_loop(self) -> None:
        backoff = LOOP_RETRY_SECONDS
        while not self.stopping.is_set():
            try:
                with db.connect(self.settings.database_url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {store.NOTIFY_CHANNEL}")
                    # Notifications sent while we were not listening are gone: reconcile.
                    self.reconcile()
                    backoff = LOOP_RETRY_SECONDS
                    self._consume(conn)
            except (errors.StoreUnavailable, psycopg.Error):
                logger.warning(
                    "listener lost the database; reconnecting in %.0fs",
                    backoff,
                    exc_info=True,
                    extra={"action": "listen_reconnect"},
                )
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_RECONNECT_SECONDS)
            except Exception:
                logger.exception("listener failed; restarting it")
                self.stopping.wait(backoff)

    def _consume(self, conn: psycopg.Connection[Any]) -> None:
        next_reconcile = time.monotonic() + self.settings.reconcile_interval
        while not self.stopping.is_set():
            timeout = max(0.0, min(1.0, next_reconcile - time.monotonic()))
            for notice in conn.notifies(timeout=timeout):
                self._apply(notice.payload)
            if time.monotonic() >= next_reconcile:
                self.reconcile()
                next_reconcile = time.monotonic() + self.settings.reconcile_interval

    def _apply(self, payload: str) -> None:
        kind, _, rest = payload.partition(" ")
        if kind == "j":
            _, _, epoch = rest.partition(" ")
            self._job_due(dt.datetime.fromtimestamp(float(epoch), UTC))
        elif kind == "c":
            self.sync_crons(utcnow())
        elif kind == "b":
            self.wake.set()

    def _job_due(self, due: dt.datetime) -> None:
        """A job became due at `due`: wake the loop if that is sooner than it plans to look."""
        wake_at = self._wake_at
        soon = utcnow() + dt.timedelta(seconds=LOCAL_WAIT_SECONDS)
        if due <= soon or wake_at is None or due < wake_at:
            self.wake.set()

    # --- deliveries ------------------------------------------------------------------------

    def _delivery_loop(self) -> None:
        timeout = 0.0
        while not self.stopping.is_set():
            self.wake.wait(timeout)
            self.wake.clear()
            try:
                drained = self._claim_and_send()
                timeout = self._plan_next_look() if drained else self.settings.poll_interval
            except errors.StoreUnavailable:
                logger.warning("cannot claim deliveries: database unavailable")
                self.stopping.wait(LOOP_RETRY_SECONDS)
            except Exception:
                logger.exception("claim loop failed")
                self.stopping.wait(LOOP_RETRY_SECONDS)

    def _plan_next_look(self) -> float:
        """Seconds until the loop should look again; sets APScheduler's wake timer when the next
        job is further away than LOCAL_WAIT_SECONDS."""
        now = utcnow()
        next_due = self.store.next_due_time()
        if next_due is None:
            return self.settings.poll_interval
        wait = (next_due - now).total_seconds()
        if wait <= LOCAL_WAIT_SECONDS:
            return max(0.0, wait)
        wake_at = self._wake_at
        if wake_at is None or wake_at <= now or next_due < wake_at:
            self._set_wake_timer(next_due)
        return self.settings.poll_interval

    def _claim_and_send(self) -> bool:
        """Claim and hand out due deliveries; True when none is left (False: no free sender)."""
        lease = dt.timedelta(seconds=senders.lease_seconds(self.settings))
        while not self.stopping.is_set():
            free = self.senders.free()
            if free == 0 or not self.is_leader():
                return False
            now = utcnow()
            claimed = self.store.claim_due_jobs(self.epoch, now, now + lease, free)
            self.senders.submit(claimed)
            if len(claimed) < free:
                return True
        return False


class Dispatcher:
    """Waits as a standby until it holds the leader lock, then runs a LeaderSession."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.stop_requested = threading.Event()
        self.identity = f"{socket.gethostname()}:{os.getpid()}"

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        logger.info("received signal %d; stopping", signum)
        self.stop_requested.set()

    def run(self) -> int:
        clean = True
        while not self.stop_requested.is_set():
            lock = store.LeaderLock(self.settings.database_url, self.settings.leader_timeout)
            try:
                epoch = self._wait_for_leadership(lock)
                if epoch is None:
                    break
                session = LeaderSession(self.settings, lock, epoch)
                try:
                    session.run(self.stop_requested)
                finally:
                    clean = session.stop(self.settings.shutdown_grace)
            finally:
                lock.close()
        return 0 if clean else 1

    def _wait_for_leadership(self, lock: store.LeaderLock) -> int | None:
        announced = False
        retry = min(STANDBY_RETRY_SECONDS, self.settings.leader_timeout / 10)
        while not self.stop_requested.is_set():
            try:
                epoch = lock.try_acquire(self.identity)
            except errors.StoreUnavailable as exc:
                logger.warning("database unavailable (%s); retrying", exc)
                lock.close()
                self.stop_requested.wait(STANDBY_RETRY_SECONDS)
                continue
            if epoch is not None:
                return epoch
            if not announced:
                logger.info("another dispatcher is active; standing by")
                announced = True
            self.stop_requested.wait(retry)
        return None


def main(settings: config.Settings | None = None) -> None:
    """Entry point of `scheduler-dispatch`."""
    try:
        settings = settings or config.Settings.from_env()
    except errors.ConfigError as exc:
        print(f"scheduler-dispatch: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.configure_logging(settings.log_level, settings.log_format)
    dispatch_metrics.serve(settings.metrics_port, settings.secrets, settings.metrics_public)
    dispatcher = Dispatcher(settings)
    signal.signal(signal.SIGTERM, dispatcher.request_stop)
    signal.signal(signal.SIGINT, dispatcher.request_stop)
    sys.exit(dispatcher.run())

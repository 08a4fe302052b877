"""What the elected leader runs for one term: the APScheduler timers and the maintenance.

Our `jobs` and `crons` tables are the truth; APScheduler's jobstore holds timers: one cron
trigger per cron, and one date trigger, `wake`, for the next job due after a quiet spell. A
timer firing never sends anything itself: the wake timer has every dispatcher look for due
deliveries (the job rows already exist); a cron timer records its tick as a job row, unique on
(cron, tick), before APScheduler advances the timer, and any dispatcher sends it. Every leader
write carries the term's epoch, so a deposed leader's late writes change nothing.

Maintenance, every heartbeat interval: re-queue what dispatchers that stopped heartbeating hold
and what outlived its lease, and prune history past its retention for at most half the interval,
so it keeps up with any delivery rate; at each reconcile also resynchronise cron timers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.triggers.date import DateTrigger

from scheduler import config, cron, errors, jobs, tuning
from scheduler.storage import cluster, crons, db, endpoints, notices
from scheduler.storage import jobs as job_rows
from scheduler.worker import maintenance, membership, metrics, supervisor, timers

logger = logging.getLogger(__name__)

WAKE_TIMER = "wake"
WAKE_TOLERANCE = dt.timedelta(seconds=tuning.WAKE_TOLERANCE_SECONDS)
UTC = dt.UTC


class LeaderTerm:
    """One term of leadership under `epoch`; `is_current()` says whether it may still act."""

    def __init__(
        self,
        settings: config.Settings,
        database: db.Database,
        epoch: int,
        is_current: Callable[[], bool],
        wake_local: Callable[[], None],
        supervising: supervisor.Supervisor | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.epoch = epoch
        self.is_current = is_current
        self._wake_local = wake_local
        self._wake_at: dt.datetime | None = None
        self._held_ticks: list[jobs.CronTick] = []
        self._sync_lock = threading.Lock()
        self.stopping = threading.Event()
        self._supervisor = supervising or supervisor.Supervisor()
        self._timer_store = timers.TimerStore(settings.sqlalchemy_url)
        self.scheduler = timers.GuardedScheduler(
            self._timer_store,
            self._record_held_ticks,
            self._supervisor,
            self.stopping,
            timezone=UTC,
            executors={"default": timers.OutboxExecutor(self._on_timer)},
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
            jobstore_retry_interval=tuning.JOBSTORE_RETRY_SECONDS,
        )
        self._maintenance: threading.Thread | None = None

    def start(self) -> None:
        self.reconcile()
        self.scheduler.start()
        self._maintenance = self._supervisor.start(
            "maintenance", self._maintenance_loop, self.stopping
        )

    def stop(self) -> None:
        self.stopping.set()
        # Ends a wait to restart a thread of this term.
        self._supervisor.poke()
        try:
            self.scheduler.shutdown(wait=False)
        except Exception:
            logger.exception("scheduler shutdown failed")
        if self._maintenance is not None:
            self._maintenance.join(timeout=tuning.JOIN_SECONDS)
        self._timer_store.engine.dispose()
        # A member's count would be stale: 0 lets dashboards sum over every dispatcher.
        metrics.DUE_JOBS.set(0)

    # --- timers ----------------------------------------------------------------------------

    def _on_timer(self, job: Job, run_times: list[dt.datetime]) -> None:
        if not self.is_current():
            # A successor catches the tick up; recording it here could not be fenced in time.
            logger.warning("timer %s fired while leadership is unconfirmed; skipped", job.id)
            return
        kind, ref = job.args
        if kind != "cron":
            self._wake_at = None
            self._wake_local()
            notices.notify_jobs_due(self.database)
            return
        for run_time in run_times:
            late = (dt.datetime.now(UTC) - run_time).total_seconds()
            if self.settings.cron_catchup == "skip" and late > tuning.SKIP_MISSED_AFTER_SECONDS:
                logger.info("skipped a missed tick of cron revision %s (%.0fs late)", ref, late)
            else:
                self._held_ticks.append(jobs.CronTick(int(ref), jobs.new_job_id(), run_time))

    def _record_held_ticks(self) -> None:
        """Record the ticks of the timer pass that just ended, before its timers move on."""
        ticks, self._held_ticks = self._held_ticks, []
        if not ticks:
            return
        counts = crons.record_cron_fires(
            self.database, self.epoch, ticks, self.settings.max_attempts
        )
        metrics.CRON_TICKS.inc(counts.recorded)
        metrics.CRON_TICKS_SKIPPED.inc(counts.skipped)
        if counts.recorded > counts.skipped:
            notices.notify_jobs_due(self.database)

    def set_wake_timer(self, due_in: float) -> None:
        """Have every dispatcher look again in `due_in` seconds, unless an earlier wake is set."""
        if self.stopping.is_set():
            return
        now = dt.datetime.now(UTC)
        due = now + dt.timedelta(seconds=due_in)
        wake_at = self._wake_at
        if wake_at is not None and now < wake_at <= due + WAKE_TOLERANCE:
            return
        self.scheduler.add_job(
            timers.FIRE_REF,
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
            timers.FIRE_REF,
            trigger=spec.trigger,
            args=("cron", str(job.revision)),
            id=job.timer_id,
            replace_existing=True,
        )

    # --- maintenance -----------------------------------------------------------------------

    def _maintenance_loop(self) -> None:
        """Run by the supervisor, which logs and restarts it after an unexpected error."""
        interval = membership.heartbeat_interval(self.settings)
        ticks_per_reconcile = max(1, round(self.settings.reconcile_interval / interval))
        tick = 0
        while not self.stopping.wait(interval):
            tick += 1
            try:
                if tick % ticks_per_reconcile == 0:
                    self.reconcile()
                else:
                    self.rescue()
                self.prune()
            except errors.StoreUnavailable:
                logger.warning("maintenance skipped: database unavailable")

    def rescue(self) -> None:
        """Re-queue what dispatchers without a live heartbeat hold, and expired leases."""
        if not self.is_current():
            return
        rescued = maintenance.rescue_claims(self.database, self.epoch, self.settings)
        if rescued:
            metrics.RESCUED.inc(rescued)
            self._wake_local()
            notices.notify_jobs_due(self.database)

    def prune(self) -> None:
        """Delete history past its retention, for at most maintenance.prune_budget."""
        if not self.is_current():
            return
        maintenance.prune(self.database, self.settings, cluster.database_now(self.database))

    def reconcile(self) -> None:
        """Make timers match the tables and catch up anything missed; cheap enough to repeat."""
        if not self.is_current():
            return
        self.rescue()
        self.sync_crons()
        metrics.DUE_JOBS.set(job_rows.count_due(self.database))
        for figures in endpoints.endpoint_figures(self.database, list(self.settings.endpoints)):
            metrics.ENDPOINT_IN_FLIGHT.labels(figures.state.name).set(figures.in_flight)
            metrics.ENDPOINT_DUE.labels(figures.state.name).set(figures.due)
        self._wake_at = None  # the claim loops set the timer afresh

    def sync_crons(self) -> None:
        """Timers for exactly the running crons, and the latest missed tick of each recorded."""
        if not self.is_current():
            return
        with self._sync_lock:
            now = cluster.database_now(self.database)
            for timer_id in crons.stale_cron_timers(self.database):
                self._remove_timer(timer_id)
            for job in crons.list_crons(self.database):
                if not job.paused:
                    self._catch_up(job, now)
            for job in crons.crons_missing_timers(self.database):
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
        counts = crons.record_cron_fires(
            self.database, self.epoch, [tick], self.settings.max_attempts
        )
        if counts.recorded:
            metrics.CRON_TICKS.inc()
            metrics.CRON_TICKS_SKIPPED.inc(counts.skipped)
            notices.notify_jobs_due(self.database)
            logger.info(
                "cron %s caught up on its tick of %s%s",
                job.id,
                missed.isoformat(),
                " (skipped: an earlier run is unfinished)" if counts.skipped else "",
                extra={"action": "cron_catch_up", "cron_id": job.id},
            )

"""What the elected leader runs for one term: the APScheduler timers and the maintenance.

Our `jobs` and `crons` tables are the truth; APScheduler's jobstore holds timers: one cron
trigger per distinct schedule (spec), shared by every running cron with it, and one date
trigger, `wake`, for the next job due after a quiet spell. A timer firing never sends anything
itself: the wake timer has every dispatcher look for due deliveries (the job rows already
exist); a schedule's timer records, in one statement, a job row for each tick owed to each of its
crons, unique on (cron, tick), before APScheduler advances the timer, and any dispatcher sends
them. What is owed is the crons' own: every tick after a cron's latest recorded one (last_fire_at)
and after the start of its current schedule. So a timer that coalesced ticks, a pass that failed
or a term without a leader leaves nothing unrecorded: the next record catches up, each tick once,
`missed` when older than the cron's catch-up window. Every leader write runs through the term's
fenced connection (cluster.TermDatabase), so a deposed leader's late writes change nothing.

Maintenance, every heartbeat interval: re-queue what dispatchers that stopped heartbeating hold
and what outlived its lease, and prune history past its retention for at most half the interval,
so it keeps up with any delivery rate; at each reconcile also resynchronise the schedules' timers
and record what they owe.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping

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
_JUST_AFTER = dt.timedelta(microseconds=1)


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
        self.database = cluster.TermDatabase(database.pool, epoch)
        self.epoch = epoch
        self.is_current = is_current
        self._wake_local = wake_local
        self._wake_at: dt.datetime | None = None
        # The schedules a timer pass fired, each with its latest tick, to record after the pass.
        self._fired: dict[str, dt.datetime] = {}
        self._tick_policy = crons.TickPolicy(
            settings.cron_catchup_window,
            tuning.TICK_LATENESS_TOLERATED_SECONDS,
            settings.max_attempts,
        )
        self._sync_lock = threading.Lock()
        self.stopping = threading.Event()
        self._supervisor = supervising or supervisor.Supervisor()
        self._timer_store = timers.TimerStore(
            settings.sqlalchemy_url, self.database, settings.transaction_pooled
        )
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
        kind, ref = job.args
        if kind == "schedule":
            latest = max(run_times)
            self._fired[ref] = max(latest, self._fired.get(ref, latest))
        elif kind == "wake":
            self._wake_at = None
            self._wake_local()
            notices.notify_jobs_due(self.database)
        # Any other kind is a timer of old (one per cron), which the next sync removes.

    def _record_held_ticks(self) -> None:
        """Record what the schedules of the timer pass that just ended owe, before their timers
        move on; raising leaves them where they were, to fire again."""
        fired, self._fired = self._fired, {}
        if fired:
            self.record_owed(fired)

    def record_owed(self, until: Mapping[str, dt.datetime]) -> None:
        """Record every tick owed to the running crons of each spec up to its moment in
        `until`, in statements of at most tuning.TICK_ROWS_PER_STATEMENT rows."""
        pending = dict(until)
        while pending:
            behind: dict[str, dt.datetime] = {}
            batch: list[tuple[str, dt.datetime]] = []
            rows = 0
            for spec, start in crons.schedule_starts(self.database, list(pending)).items():
                most = max(1, tuning.TICK_ROWS_PER_STATEMENT // start.crons)
                times = cron.fire_times_between(
                    cron.parse_spec(spec),
                    start.since + _JUST_AFTER,
                    pending[spec] + _JUST_AFTER,
                    most,
                )
                if len(times) > most:
                    times, behind[spec] = times[:most], pending[spec]
                if batch and rows + len(times) * start.crons > tuning.TICK_ROWS_PER_STATEMENT:
                    self._record(batch, rows)
                    batch, rows = [], 0
                batch.extend((spec, moment) for moment in times)
                rows += len(times) * start.crons
            left_over = self._record(batch, rows)
            if left_over:
                # Crons added since their schedules were read: the next record owes them.
                behind.update((spec, pending[spec]) for spec, _ in batch)
            pending = behind

    def _record(self, ticks: list[tuple[str, dt.datetime]], rows: int) -> int:
        """Record one statement's ticks; how many owed ticks it left over."""
        if not ticks:
            return 0
        job_ids = [jobs.new_job_id() for _ in range(rows)]
        counts = crons.record_ticks(self.database, ticks, job_ids, self._tick_policy)
        metrics.CRON_TICKS.inc(counts.recorded)
        metrics.CRON_TICKS_SKIPPED.inc(counts.skipped)
        metrics.CRON_TICKS_MISSED.inc(counts.missed)
        if counts.missed:
            logger.warning(
                "recorded %d cron ticks as missed: older than their catch-up window",
                counts.missed,
                extra={"action": "cron_ticks_missed", "count": counts.missed},
            )
        if counts.recorded > counts.skipped + counts.missed:
            notices.notify_jobs_due(self.database)
        if counts.ended:
            self._retire_ended()
        return counts.left_over

    def _retire_ended(self) -> None:
        for cron_id in crons.retire_ended_crons(self.database):
            logger.info(
                "cron %s ended and was removed (delete_after_end)",
                cron_id,
                extra={"action": "cron_retired", "cron_id": cron_id},
            )

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

    def _set_schedule_timer(self, spec: str) -> None:
        self.scheduler.add_job(
            timers.FIRE_REF,
            trigger=cron.parse_spec(spec).trigger,
            args=("schedule", spec),
            id=jobs.schedule_timer_id(spec),
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
                    if self.settings.listen_url is None:
                        # No notice says the crons changed: look at each tick instead.
                        self.sync_crons()
                self.prune()
            except errors.StoreUnavailable:
                logger.warning("maintenance skipped: database unavailable")
            except errors.TermEnded as exc:
                # The campaign's next renewal steps this term down.
                logger.warning("maintenance refused: %s", exc, extra={"action": "term_ended"})

    def rescue(self) -> None:
        """Re-queue what dispatchers without a live heartbeat hold, and expired leases."""
        if not self.is_current():
            return
        rescued = maintenance.rescue_claims(self.database, self.settings)
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
        """A timer for exactly each schedule of the running crons, every tick they owe up to now
        recorded (catch-up: after an outage, a failover, a resume or a new cron), and the crons
        past their end_at ended."""
        if not self.is_current():
            return
        with self._sync_lock:
            for timer_id in crons.stale_schedule_timers(self.database):
                self._remove_timer(timer_id)
            for spec in crons.schedules_missing_timers(self.database):
                self._set_schedule_timer(spec)
            now = cluster.database_now(self.database)
            self.record_owed(dict.fromkeys(crons.running_schedules(self.database), now))
            # Every tick up to now is recorded: those past their end_at may end.
            if crons.end_past_crons(self.database, now):
                self._retire_ended()

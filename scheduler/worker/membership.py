"""This dispatcher's row in `dispatchers`: its heartbeat, and whether it may still act.

A dispatcher is live while its heartbeat is younger than SCHEDULER_LEADER_TIMEOUT; past that
the leader re-queues what it holds. So a dispatcher that cannot renew its heartbeat for half
that time stops claiming and starting deliveries on its own, before anyone hands them on.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable

from scheduler import config, errors, jobs, tuning
from scheduler.storage import cluster, db
from scheduler.worker import metrics

logger = logging.getLogger(__name__)


def heartbeat_interval(settings: config.Settings) -> float:
    return min(tuning.HEARTBEAT_SECONDS, settings.leader_timeout / 5)


class Membership:
    """Registers this dispatcher and renews its heartbeat; `counts` gives (in flight,
    delivered) for each beat and `threads_down` the threads not running (supervisor.py), `clock`
    is monotonic and injectable."""

    def __init__(
        self,
        settings: config.Settings,
        database: db.Database,
        counts: Callable[[], tuple[int, int]],
        metrics_port: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        threads_down: Callable[[], dict[str, str]] = dict,
    ) -> None:
        self.settings = settings
        self.database = database
        self.id = jobs.new_job_id()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.metrics_port = metrics_port
        self._counts = counts
        self._threads_down = threads_down
        self._clock = clock
        self._confirmed_at: float | None = None
        self._skew_warned = False

    def beat(self) -> bool:
        """Renew the heartbeat once; False when the database did not take it."""
        counts = self._counts()
        sent_at = dt.datetime.now(dt.UTC)
        started = self._clock()
        try:
            database_now = cluster.beat_dispatcher(
                self.database,
                self.id,
                self.host,
                self.pid,
                counts,
                self.metrics_port,
                list(self.settings.endpoints),
                self.settings.unknown_endpoint_grace,
                self._threads_down(),
            )
        except errors.StoreUnavailable as exc:
            logger.warning("heartbeat failed: %s", exc, extra={"action": "heartbeat_failed"})
            return False
        # The database's clock read mid-way through the round trip, against ours.
        round_trip = self._clock() - started
        self._measure_skew(sent_at + dt.timedelta(seconds=round_trip / 2), database_now)
        self._confirmed_at = started
        return True

    def is_live(self) -> bool:
        """Whether the last heartbeat the database took is recent enough to act on."""
        return self._clock() < self.vouched_until()

    def vouched_until(self) -> float:
        """Until when (on its clock) the last heartbeat the database took lets this dispatcher
        act: half the leader timeout after it was sent, while the leader hands on what a
        dispatcher holds only after the whole timeout."""
        confirmed = self._confirmed_at
        if confirmed is None:
            return -math.inf
        return confirmed + self.settings.leader_timeout / 2

    def run(self, stopping: threading.Event) -> None:
        interval = heartbeat_interval(self.settings)
        while not stopping.wait(interval):
            self.beat()

    def leave(self) -> None:
        """Remove this dispatcher's row, so it leaves the list at once."""
        try:
            cluster.remove_dispatcher(self.database, self.id)
        except errors.StoreUnavailable:
            logger.warning("could not remove this dispatcher's row; it expires on its own")

    def _measure_skew(self, ours: dt.datetime, database_now: dt.datetime) -> None:
        skew = (ours - database_now).total_seconds()
        metrics.CLOCK_SKEW.set(skew)
        off = abs(skew) > tuning.SKEW_WARNING_SECONDS
        if off and not self._skew_warned:
            logger.warning(
                "this host's clock is %.1fs %s the database's; cron ticks follow the leader's",
                abs(skew),
                "ahead of" if skew > 0 else "behind",
                extra={"action": "clock_skew", "skew_seconds": round(skew, 3)},
            )
        self._skew_warned = off

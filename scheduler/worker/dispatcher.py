"""One dispatcher process: a member that claims and sends, and a candidate for leader.

Any number run against one database. Each registers a heartbeat, claims due deliveries with
SKIP LOCKED and sends them; the one elected leader also runs the timers and the maintenance
(leader.py). Threads: the claim loop, the listener, the heartbeat, the campaign, and while
leading APScheduler's and the maintenance thread; plus the senders' pool, recorder and watchdog.
Every one runs under one supervisor (supervisor.py), whose report each heartbeat stores.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

from scheduler import config, errors, tuning
from scheduler.storage import db, endpoints, notices
from scheduler.worker import (
    claims,
    leader,
    leadership,
    membership,
    notifications,
    routes,
    senders,
    supervisor,
)

logger = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        settings: config.Settings,
        metrics_port: int | None = None,
        supervising: supervisor.Supervisor | None = None,
    ) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.supervisor = supervising or supervisor.Supervisor()
        self.pool = db.open_pool(
            settings.database_url,
            settings.dispatcher_pool_size,
            name="dispatcher",
            pooled=settings.transaction_pooled,
        )
        self.database = db.Database(self.pool)
        self.delivery_pool = db.open_pool(
            settings.database_url,
            tuning.DELIVERY_POOL_SIZE,
            name="deliveries",
            durable=False,
            pooled=settings.transaction_pooled,
        )
        # Claims and outcomes commit with synchronous_commit off (open_pool's `durable`); through
        # a transaction-mode pooler each transaction sets it itself.
        self.delivery_database = (
            db.UnsyncedDatabase(self.delivery_pool)
            if settings.transaction_pooled
            else db.Database(self.delivery_pool)
        )
        # The heartbeat reads the senders' counts only once started.
        self.membership = membership.Membership(
            settings,
            self.database,
            lambda: (self.senders.in_flight(), self.senders.delivered),
            metrics_port,
            threads_down=self.supervisor.threads_down,
        )
        self.id = self.membership.id
        self.supervisor.on_change = self._threads_changed
        self.senders = senders.Senders(
            settings,
            self.delivery_database,
            on_room=self._room_freed,
            on_retry=self._job_due_in,
            may_send=self._may_act,
            dispatcher_id=self.id,
            supervising=self.supervisor,
            vouched_until=self.membership.vouched_until,
        )
        self.leadership = leadership.Leadership(settings, self.id, self.database, self._make_term)
        self.routes = routes.EndpointRoutes(settings, self.database)
        self.claims = claims.ClaimLoop(
            settings,
            self.delivery_database,
            self.senders,
            self.id,
            may_claim=self._may_act,
            on_quiet=self._set_wake_timer,
            endpoint_routes=self.routes,
        )
        listen_url = settings.listen_url
        self.listener = (
            None
            if listen_url is None
            else notifications.Listener(listen_url, self._on_notice, self._on_listening)
        )
        self.loops: dict[str, Callable[[threading.Event], None]] = {
            "claim": self.claims.run,
            "heartbeat": self.membership.run,
            "campaign": self.leadership.run,
        }
        if self.listener is not None:
            self.loops["listen"] = self.listener.run
        self.threads: list[threading.Thread] = []
        self._registered = False

    def start(self) -> None:
        """Register, campaign once (a lone dispatcher leads from its first moment), and start
        claiming."""
        self.membership.beat()
        self._registered = True
        self._warn_of_unknown_endpoints()
        self.leadership.campaign_once()
        if self.listener is None:
            logger.warning(
                "DATABASE_URL is a transaction-mode pooler and DATABASE_DIRECT_URL is not set: "
                "no notices reach this dispatcher, so it looks for due deliveries every %.1f s "
                "and, while leading, for changed crons every %.1f s",
                self.settings.look_interval,
                membership.heartbeat_interval(self.settings),
                extra={"action": "polling_without_notices"},
            )
        self.threads = [
            self.supervisor.start(name, functools.partial(loop, self.stopping), self.stopping)
            for name, loop in self.loops.items()
        ]
        logger.info(
            "dispatcher active (id %s, pid %d)",
            self.id,
            self.membership.pid,
            extra={"action": "dispatcher_started", "dispatcher_id": self.id},
        )

    def stop(self, grace: float) -> bool:
        """Stop claiming and leading, let in-flight deliveries finish within `grace`, leave the
        list; True if every claimed delivery was settled. After a thread that cannot be
        restarted failed, the row stays instead, with that thread dead, until it is stale: what
        this dispatcher still holds is handed on then, as for one that vanished."""
        self.stopping.set()
        self.supervisor.stop()
        self.claims.wake()
        self.leadership.stop()
        # A claim in flight must reach the senders before they close, to be sent or given back
        # with the rest: it would otherwise stay claimed until the leader rescued it.
        for thread in self.threads:
            if thread.name == "claim":
                thread.join(timeout=tuning.JOIN_SECONDS)
        finished = self.senders.close(grace)
        for thread in self.threads:
            thread.join(timeout=tuning.JOIN_SECONDS)
        if self.supervisor.failed.is_set():
            self.membership.beat()
        else:
            self.membership.leave()
        self.pool.close(timeout=2)
        self.delivery_pool.close(timeout=2)
        return finished

    def _warn_of_unknown_endpoints(self) -> None:
        try:
            unknown = endpoints.unknown_endpoints(self.database, list(self.settings.endpoints))
        except errors.StoreUnavailable:
            return
        if unknown:
            logger.warning(
                "jobs or crons name endpoints this dispatcher does not know: %s; it leaves their "
                "jobs to dispatchers that know them, and they fail unsent once none has for "
                "%.0f s (SCHEDULER_UNKNOWN_ENDPOINT_GRACE)",
                ", ".join(unknown),
                self.settings.unknown_endpoint_grace,
                extra={"action": "unknown_endpoints"},
            )

    def _threads_changed(self) -> None:
        # Beat now rather than at the next interval, so the row shows the change at once. Not
        # before start() registers (with the state as it is then), and not once stopping, when a
        # beat could bring back the row leave() removed.
        if self._registered and not self.stopping.is_set():
            self.membership.beat()

    def _may_act(self) -> bool:
        return self.membership.is_live() and not self.stopping.is_set()

    def _wake(self) -> None:
        self.claims.wake()

    def _room_freed(self) -> None:
        self.claims.room_freed()

    def _job_due_in(self, seconds: float) -> None:
        self.claims.job_due_in(seconds)

    def _make_term(self, epoch: int, is_current: Callable[[], bool]) -> leader.LeaderTerm:
        return leader.LeaderTerm(
            self.settings, self.database, epoch, is_current, self._wake, self.supervisor
        )

    def _set_wake_timer(self, due_in: float) -> None:
        term = self.leadership.term
        if term is not None and term.is_current():
            term.set_wake_timer(due_in)

    def _on_notice(self, notice: notices.Notice) -> None:
        if notice.kind == notices.JOB_DUE and notice.due_in is not None:
            self.claims.job_due_in(notice.due_in)
        elif notice.kind == notices.CRONS_CHANGED:
            self._sync_crons()
        elif notice.kind == notices.ENDPOINTS_CHANGED:
            self.routes.invalidate()
            self.claims.wake()
        else:
            self.claims.wake()

    def _on_listening(self) -> None:
        # Notifications sent while we were not listening are gone: look, and resynchronise.
        self.claims.wake()
        self._sync_crons()

    def _sync_crons(self) -> None:
        term = self.leadership.term
        if term is None:
            return
        try:
            term.sync_crons()
        except errors.TermEnded as exc:
            # The campaign's next renewal steps the term down; the next leader syncs.
            logger.warning("cron sync refused: %s", exc, extra={"action": "term_ended"})

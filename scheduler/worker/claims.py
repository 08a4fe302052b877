"""The claim loop: look for due deliveries when there is room to send them, and plan the next look.

Every dispatcher runs one. Due-ness is the database's to judge (the claim compares with its
`now()`), and the next look is planned from how many seconds the database says the next job is
away, counted on this host's monotonic clock: a host whose wall clock is wrong neither sends
early nor spins.

Jobs of endpoints that are paused or limited (routes.py) are claimed apart, one endpoint at a
time under its row lock (deliveries.claim_endpoint_jobs), and only as many as there are idle sending
threads, so that a claim is a start: what the limit counts is when deliveries start. Due rows
such a claim leaves behind do not make the loop spin: it looks again when the endpoint's next
token comes, or soon when its in-flight limit held them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from scheduler import config, errors, tuning
from scheduler.storage import db, deliveries
from scheduler.worker import metrics, routes, senders

logger = logging.getLogger(__name__)


class ClaimLoop:
    """Claims for `sending` while `may_claim()`; tells `on_quiet` how far away the next job is
    when that is beyond the poll interval (the leader sets its wake timer)."""

    def __init__(
        self,
        settings: config.Settings,
        database: db.Database,
        sending: senders.Senders,
        dispatcher_id: str,
        may_claim: Callable[[], bool],
        on_quiet: Callable[[float], None] = lambda due_in: None,
        clock: Callable[[], float] = time.monotonic,
        endpoint_routes: routes.EndpointRoutes | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.senders = sending
        self.dispatcher_id = dispatcher_id
        self.routes = endpoint_routes or routes.EndpointRoutes(settings, database, clock)
        self.known = list(settings.endpoints)
        self._held_retry: float | None = None
        self.lease = senders.lease_seconds(settings)
        self.claims = 0
        self._may_claim = may_claim
        self._on_quiet = on_quiet
        self._clock = clock
        self._wake = threading.Event()
        self._next_look = 0.0

    def wake(self) -> None:
        """Look for due deliveries now."""
        self._wake.set()

    def job_due_in(self, seconds: float) -> None:
        """A job becomes due in `seconds`: look just before then if that is sooner than
        planned."""
        if self._clock() + seconds - tuning.LOOK_BEFORE_DUE_SECONDS < self._next_look:
            self._wake.set()

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                drained = self.claim_and_send(stopping)
                timeout = self.plan_next_look() if drained else self.settings.poll_interval
            except errors.StoreUnavailable:
                logger.warning("cannot claim deliveries: database unavailable")
                timeout = tuning.LOOP_RETRY_SECONDS
            except Exception:
                logger.exception("claim loop failed")
                timeout = tuning.LOOP_RETRY_SECONDS
            self._next_look = self._clock() + timeout
            self._wake.wait(timeout)
            self._wake.clear()

    def claim_and_send(self, stopping: threading.Event) -> bool:
        """Claim and hand out due deliveries; True when none is left (False: no room, or this
        dispatcher may not claim now). With no free slot it does not query at all."""
        held = self.routes.held()
        while not stopping.is_set():
            free = self.senders.free()
            if free == 0 or not self._may_claim():
                return False
            claimed = deliveries.claim_due_jobs(
                self.database,
                self.dispatcher_id,
                self.lease,
                free,
                held,
                self.known,
                tuning.CLAIM_AHEAD_SECONDS,
                self.settings.unknown_endpoint_grace,
            )
            self._count_claim()
            self.senders.submit(claimed)
            if len(claimed) < free:
                return self._claim_held(held)
        return False

    def _claim_held(self, held: list[str]) -> bool:
        """Claim for each paused or limited endpoint in turn; False if the room ran out."""
        self._held_retry = None
        for endpoint in held:
            idle = self.senders.idle()
            if idle == 0 or not self._may_claim():
                return False
            claim = deliveries.claim_endpoint_jobs(
                self.database, self.dispatcher_id, self.lease, idle, endpoint, self.routes.defaults
            )
            self._count_claim()
            self.senders.submit(claim.claimed)
            if claim.retry_in is not None:
                if claim.retry_in > 0:
                    metrics.THROTTLED_CLAIMS.labels(endpoint).inc()
                if self._held_retry is None or claim.retry_in < self._held_retry:
                    self._held_retry = claim.retry_in
        return True

    def _count_claim(self) -> None:
        self.claims += 1
        metrics.CLAIM_QUERIES.inc()

    def plan_next_look(self) -> float:
        """Seconds until the next look: just before the next job is due (LOOK_BEFORE_DUE_SECONDS)
        if that is within the poll interval, else the poll interval (and the leader's wake timer
        covers the job); sooner when a paused or limited endpoint can take more then."""
        look = self.settings.poll_interval
        due_in = deliveries.next_due_in(
            self.database, self.routes.held(), self.known, self.settings.unknown_endpoint_grace
        )
        if due_in is not None and due_in <= self.settings.poll_interval:
            look = max(0.0, due_in - tuning.LOOK_BEFORE_DUE_SECONDS)
        elif due_in is not None:
            self._on_quiet(due_in)
        if self._held_retry is not None:
            look = min(look, self._held_retry)
        return look

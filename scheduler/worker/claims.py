"""The claim loop: look for due deliveries when there is room to send them, and plan the next look.

Every dispatcher runs one. Due-ness is the database's to judge (the claim compares with its
`now()`), and the next look is planned from how many seconds the database says the next job is
away, counted on this host's monotonic clock: a host whose wall clock is wrong neither sends
early nor spins.

Jobs of endpoints that are paused, limited or keyed (routes.py) are claimed apart, one endpoint at
a time under its row lock (deliveries.claim_endpoint_jobs, which shares a keyed endpoint's claim
between its flow keys in turn), first, and as many as the slot planner
(planner.py) gives each room: idle sending threads only, so that a claim is a start (what the
limit counts is when deliveries start), and while one has due work the shared claim keeps to its
share of the threads. The loop looks again when a recorded delivery frees room it ran short of,
when an endpoint's next token or job comes, on a notice, and at the poll interval at the latest.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from scheduler import config, errors, jobs, tuning
from scheduler.storage import db, deliveries
from scheduler.worker import metrics, planner, routes, senders

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
        # When each paused or limited endpoint's claim could take more (this host's monotonic
        # clock), which of them had due work at their last claim, and which are claimed apart.
        self._held_retry: dict[str, float] = {}
        self._waiting: set[str] = set()
        # Those whose last claim took all it asked for (threads, not their limits, held them).
        self._hungry: set[str] = set()
        self._claimed_apart: set[str] = set()
        self._fresh = True
        # Endpoints at their share of the threads at the last look (planner.shares).
        self._at_share: list[str] = []
        # The last look ran short of room: the next recorded delivery wakes the loop.
        self._short_of_room = False
        self.lease = senders.lease_seconds(settings)
        self.claims = 0
        self._may_claim = may_claim
        self._on_quiet = on_quiet
        self._clock = clock
        self._wake = threading.Event()
        self._next_look = 0.0

    def wake(self) -> None:
        """Look for due deliveries now, for every endpoint."""
        self._fresh = True
        self._wake.set()

    def room_freed(self) -> None:
        """Recorded deliveries freed slots: claim again if the last look ran short of room."""
        if self._short_of_room:
            self._wake.set()

    def job_due_in(self, seconds: float) -> None:
        """A job becomes due in `seconds`: look just before then if that is sooner than
        planned."""
        if self._clock() + seconds - tuning.LOOK_BEFORE_DUE_SECONDS < self._next_look:
            self.wake()

    def run(self, stopping: threading.Event) -> None:
        """Look until `stopping`; an unexpected error is the supervisor's, which logs it with
        its stack, counts it and restarts the loop (which then looks at once)."""
        self._fresh = True
        while not stopping.is_set():
            try:
                drained = self.claim_and_send(stopping)
                # Short of room, a recorded delivery wakes the loop; a token may come sooner.
                timeout = self.plan_next_look() if drained else self._next_held_retry()
            except errors.StoreUnavailable:
                logger.warning("cannot claim deliveries: database unavailable")
                timeout = tuning.LOOP_RETRY_SECONDS
            self._next_look = self._clock() + timeout
            if not self._wake.wait(timeout):
                self._fresh = True
            self._wake.clear()

    def claim_and_send(self, stopping: threading.Event) -> bool:
        """Claim and hand out due deliveries, as much as the planner gives each flow room for;
        True when none is left that room allowed (False: no room, or this dispatcher may not
        claim now). With no room at all it does not query."""
        held = self.routes.held()
        self._note_waiting(held)
        # Set before the room is read, so that a slot freed meanwhile still wakes the loop.
        self._short_of_room = True
        while not stopping.is_set():
            if not self._may_claim():
                return False
            room = self.senders.planner.room(
                held, self._waiting, self.routes.weights(), self._hungry
            )
            if not room.any:
                return False
            # Paused and limited endpoints first: their claims take idle threads, a start each.
            self._claim_held(held, room)
            if room.shared == 0:
                # The shared flow waits for its slots: a recorded delivery wakes the loop.
                return False
            shares = self.senders.planner.shares(self.routes.weights(), room.shared_threads)
            started = time.perf_counter()
            claimed = deliveries.claim_due_jobs(
                self.database,
                self.dispatcher_id,
                self.lease,
                room.shared,
                held,
                self.known,
                tuning.CLAIM_AHEAD_SECONDS,
                self.settings.unknown_endpoint_grace,
                shares,
                self.senders.planner.holding_by_endpoint(),
            )
            self._count_claim(started)
            self.senders.planner.saw_due({item.endpoint for item in claimed})
            self.senders.submit(claimed)
            if len(claimed) < room.shared and not _took_a_whole_share(claimed, shares):
                # Nothing more is due for the shared flow but what endpoints at their share
                # hold back; those, and an endpoint still waiting for an idle thread, want the
                # next freed slot, and the next look is planned without the former.
                self._at_share = [name for name, left in shares[0].items() if left == 0]
                self._short_of_room = bool(self._waiting or self._at_share)
                return not self._waiting
        return False

    def _note_waiting(self, held: list[str]) -> None:
        """Which paused or limited endpoints this look claims for: every one on a fresh look (a
        notice, a wake, the poll interval); after a freed slot, those that had due work, and
        those whose next token or job has come."""
        now = self._clock()
        if self._fresh:
            self._waiting, self._fresh = set(held), False
            self._hungry |= set(held) - self._claimed_apart
        else:
            came = {name for name, at in self._held_retry.items() if at <= now}
            self._waiting = (self._waiting | came | (set(held) - self._claimed_apart)) & set(held)
            self._hungry |= set(held) - self._claimed_apart
        self._claimed_apart = set(held)

    def _claim_held(self, held: list[str], room: planner.Room) -> None:
        """Claim for each paused or limited endpoint the planner gives room; note which still
        have due work, and when each could take more."""
        for endpoint in held:
            asked = room.held.get(endpoint, 0)
            if asked == 0:
                continue
            started = time.perf_counter()
            claim = deliveries.claim_endpoint_jobs(
                self.database,
                self.dispatcher_id,
                self.lease,
                asked,
                endpoint,
                self.routes.defaults,
                self.routes.keyed(endpoint),
                self.senders.ended_unrecorded(endpoint),
            )
            self._count_claim(started)
            self.senders.submit(claim.claimed, endpoint)
            self._held_retry.pop(endpoint, None)
            if len(claim.claimed) == asked:
                self._hungry.add(endpoint)
            elif claim.left_due:
                # Its own limits, not threads, hold it back. (One with nothing due yet, as a
                # look just before its jobs' time finds it, says nothing of what it needs.)
                self._hungry.discard(endpoint)
            if claim.retry_in is not None:
                if claim.retry_in > 0:
                    metrics.THROTTLED_CLAIMS.labels(endpoint).inc()
                self._held_retry[endpoint] = self._clock() + claim.retry_in
            # More may be due: it took all it asked for, or its next is due (or a token, or room
            # under max_in_flight) soon. Waiting, it is claimed for again as soon as a recorded
            # delivery frees room: one of its own may be what it waits for.
            if len(claim.claimed) == asked or (
                claim.retry_in is not None and claim.retry_in <= tuning.IN_FLIGHT_RECHECK_SECONDS
            ):
                self._waiting.add(endpoint)
            else:
                self._waiting.discard(endpoint)

    def _count_claim(self, started: float) -> None:
        self.claims += 1
        metrics.CLAIM_QUERIES.inc()
        metrics.CLAIM_SECONDS.inc(time.perf_counter() - started)

    def _next_held_retry(self) -> float:
        """Seconds until a paused or limited endpoint's claim could take more (a token back, a
        job due), within the poll interval."""
        now = self._clock()
        soonest = min(self._held_retry.values(), default=now + self.settings.look_interval)
        return min(self.settings.look_interval, max(0.0, soonest - now))

    def plan_next_look(self) -> float:
        """Seconds until the next look: just before the next job is due (LOOK_BEFORE_DUE_SECONDS)
        if that is within the poll interval, else the poll interval (and the leader's wake timer
        covers the job); sooner when a paused or limited endpoint can take more then."""
        look = self.settings.look_interval
        due_in = deliveries.next_due_in(
            self.database,
            [*self.routes.held(), *self._at_share],
            self.known,
            self.settings.unknown_endpoint_grace,
        )
        if due_in is not None and due_in <= self.settings.look_interval:
            look = max(0.0, due_in - tuning.LOOK_BEFORE_DUE_SECONDS)
        elif due_in is not None:
            self._on_quiet(due_in)
        now = self._clock()
        for endpoint, at in list(self._held_retry.items()):
            if endpoint not in self._claimed_apart:
                del self._held_retry[endpoint]
                continue
            look = min(look, max(0.0, at - now))
        return look


def _took_a_whole_share(claimed: list[jobs.Delivery], shares: tuple[dict[str, int], int]) -> bool:
    """Whether the claim took all that its share let some endpoint take: it may have more due,
    and the next claim, with shares that count what it holds now, finds out."""
    rooms, newcomer = shares
    taken = collections.Counter(item.endpoint for item in claimed)
    return any(count >= rooms.get(name, newcomer) for name, count in taken.items())

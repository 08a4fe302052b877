"""How many deliveries each look may claim, flow by flow, so that limited endpoints get threads.

A dispatcher's sending threads serve flows: the shared one (every endpoint claimed together, by
one statement) and each paused or limited endpoint, claimed apart under its row lock. A limited
endpoint's claim must be a start (its limit counts starts), so it takes only threads that are
idle now; the shared flow may also queue a second delivery per thread (claiming ahead keeps the
threads busy). While a limited endpoint has due work, the shared flow keeps to its share of the
threads instead, so that a busy shared backlog cannot take every thread from it. Shares follow
the endpoints' weights (equal by default): threads * weight / the sum of the weights of those with
work, at least 1; a flow alone may use every thread. The shared flow counts as one flow against
the paused or limited endpoints, weighing as much as the heaviest endpoint it holds deliveries
for (the default when none), so that equal weights split the threads equally between flows. The
planner reads no clock and no database: the claim loop tells it what its claims found and the
endpoints' weights, the senders what they hold.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence

from scheduler import config, tuning

# The flow of every endpoint that is neither paused nor limited.
SHARED = ""
# A share this close below a whole number is that number: float error is far smaller.
_ROUNDING = 1e-9


@dataclasses.dataclass(frozen=True)
class Room:
    """What a look may claim: `shared` for the shared claim, `held[name]` for each paused or
    limited endpoint's."""

    shared: int
    held: dict[str, int]
    # The threads the shared flow may keep busy, which its endpoints share (SlotPlanner.shares);
    # None: all of them.
    shared_threads: int | None = None

    @property
    def any(self) -> bool:
        return self.shared > 0 or any(self.held.values())


class SlotPlanner:
    """Counts the deliveries this dispatcher holds per flow (claimed, not yet recorded), and
    splits its threads between the flows that have work. Thread-safe."""

    def __init__(self, threads: int, slots_per_thread: int = tuning.SLOTS_PER_THREAD) -> None:
        self.threads = threads
        self.slots = threads * slots_per_thread
        self._lock = threading.Lock()
        self._holding: dict[str, int] = {}
        # The shared flow's deliveries by endpoint, for the endpoints' shares within it.
        self._by_endpoint: dict[str, int] = {}
        # Deliveries claimed whose attempt has not ended: what keeps threads busy. (A delivery
        # whose outcome waits for the recorder holds a slot, not a thread.)
        self._sending: dict[str, int] = {}
        # The endpoints the last shared claim took deliveries for: they had due work then, and
        # count as active even while their deliveries are all recorded.
        self._last_claimed: frozenset[str] = frozenset()

    def claimed(self, flow: str, endpoints: Sequence[str]) -> None:
        """Deliveries claimed for `flow`, to these endpoints (one name per delivery)."""
        with self._lock:
            _add(self._holding, flow, len(endpoints))
            _add(self._sending, flow, len(endpoints))
            if flow == SHARED:
                for endpoint in endpoints:
                    _add(self._by_endpoint, endpoint, 1)

    def released(self, flow: str, endpoints: Sequence[str]) -> None:
        """Deliveries of `flow` recorded (or given back), to these endpoints."""
        with self._lock:
            _add(self._holding, flow, -len(endpoints))
            if flow == SHARED:
                for endpoint in endpoints:
                    _add(self._by_endpoint, endpoint, -1)

    def idle_threads(self) -> int:
        """Sending threads with no claimed delivery to send."""
        with self._lock:
            return max(0, self.threads - sum(self._sending.values()))

    def attempt_ended(self, flow: str = SHARED) -> None:
        """A delivery of `flow` ended its attempt (or was given back): its thread is free,
        though its slot stays held until its outcome is recorded."""
        with self._lock:
            _add(self._sending, flow, -1)

    def saw_due(self, endpoints: Iterable[str]) -> None:
        """The shared claim just took deliveries for these endpoints (they have due work)."""
        with self._lock:
            self._last_claimed = frozenset(endpoints)

    def holding_by_endpoint(self) -> dict[str, int]:
        """The shared flow's deliveries in hand, by endpoint."""
        with self._lock:
            return dict(self._by_endpoint)

    def shares(
        self, weights: Mapping[str, float] | None = None, threads: int | None = None
    ) -> tuple[dict[str, int], int]:
        """How many more of the shared flow's deliveries each endpoint holding some may take,
        and how many one holding none may: while several endpoints have deliveries in hand (or
        had due work at the last claim, saw_due), each keeps to its share of the threads (in
        proportion to its weight, default 1 for those not in `weights`), so that a slow one
        cannot hold them all and an endpoint whose job comes due finds a thread. An endpoint of
        another weight holding none is named too, with the share it would have. `threads` is
        how many the shared flow may use (Room.shared_threads), all when None."""
        weights = weights or {}
        with self._lock:
            holding = dict(self._by_endpoint)
            # An endpoint whose deliveries all came back between two claims (a fast one with a
            # backlog) still has due work: a slow one must not count as alone meanwhile.
            active = set(holding) | self._last_claimed
        if not active:
            # The first claim may find several endpoints due at once, each taking turns up to
            # this: half the threads, so that no one of them (a slow one) can take them all
            # before its share is known; the next claim, a moment later, knows who is active.
            return {}, self._share(config.DEFAULT_WEIGHT, 2 * config.DEFAULT_WEIGHT, threads)
        total = sum(_weight(weights, name) for name in active)
        if len(active) == 1:
            rooms = {name: max(0, self.slots - holding.get(name, 0)) for name in active}
        else:
            rooms = {
                name: max(
                    0, self._share(_weight(weights, name), total, threads) - holding.get(name, 0)
                )
                for name in active
            }
        for name in weights:
            weight = _weight(weights, name)
            if name not in active and weight != config.DEFAULT_WEIGHT:
                rooms[name] = self._share(weight, total + weight, threads)
        default = config.DEFAULT_WEIGHT
        return rooms, self._share(default, total + default, threads)

    def holding(self, flow: str | None = None) -> int:
        """Deliveries held by `flow`, or by every flow when None."""
        with self._lock:
            if flow is None:
                return sum(self._holding.values())
            return self._holding.get(flow, 0)

    def record_linger(self) -> float:
        """How long the recorder may wait for more outcomes (tuning.RECORD_LINGER_SECONDS): a
        claim waits for what recording frees when a paused, limited or keyed endpoint holds
        deliveries (its in-flight count drops only once they are recorded) or every slot is
        held."""
        with self._lock:
            if any(n for flow, n in self._holding.items() if flow):
                return tuning.RECORD_LINGER_WHEN_HELD_SECONDS
            if sum(self._holding.values()) >= self.slots:
                return tuning.RECORD_LINGER_WHEN_FULL_SECONDS
            return tuning.RECORD_LINGER_SECONDS

    def room(
        self,
        held: Sequence[str],
        waiting: Collection[str],
        weights: Mapping[str, float] | None = None,
        hungry: Collection[str] | None = None,
    ) -> Room:
        """What each flow may claim now. `held` are the paused or limited endpoints, `waiting`
        those of them that had due work at their last claim (or were never claimed), `weights`
        the endpoints' weights (default 1 for those not named), `hungry` those of them whose
        last claim took all the room it had (all `waiting` when None): one that its own limits
        held back keeps only one thread more than it holds from the shared flow, not its whole
        share, so threads it cannot use are not left idle."""
        weights = weights or {}
        with self._lock:
            holding = dict(self._holding)
            # A paused or limited endpoint's share is of threads: what it is sending counts,
            # not what waits for the recorder.
            sending = dict(self._sending)
            shared_weight = max(
                (_weight(weights, name) for name in self._by_endpoint),
                default=config.DEFAULT_WEIGHT,
            )
        active = [name for name in held if name in waiting or holding.get(name, 0) > 0]
        wanting = waiting if hungry is None else hungry
        # One that its own limits hold back keeps a thread beyond what it sends; the others
        # with work share the rest with the shared flow.
        sated = {name: sending.get(name, 0) + 1 for name in active if name not in wanting}
        total = sum((_weight(weights, name) for name in active if name not in sated), shared_weight)
        left = max(1, self.threads - sum(sated.values()))
        shares = {
            name: sated.get(name) or self._share(_weight(weights, name), total, left)
            for name in active
        }
        idle = self.idle_threads()
        rooms: dict[str, int] = {}
        for name in held:
            room = 0
            if name in waiting:
                room = max(0, min(shares[name] - sending.get(name, 0), idle))
                if len(active) == 1 and not holding.get(SHARED, 0):
                    # Alone with work: every idle thread is its.
                    room = idle
            rooms[name] = room
            idle -= room
        # The shared flow may claim ahead (a second slot per thread) only while no limited
        # endpoint has work; then it keeps to the threads the others' shares leave it.
        reserved = sum(shares.values())
        if not active:
            return Room(max(0, self.slots - holding.get(SHARED, 0)), rooms)
        cap = max(0, self.threads - reserved)
        return Room(max(0, cap - holding.get(SHARED, 0)), rooms, cap)

    def _share(self, weight: float, total: float, threads: int | None = None) -> int:
        """Threads (all when None) * weight / total, rounded down, at least 1."""
        threads = self.threads if threads is None else threads
        # Within rounding of a whole number counts as it: 3 * 0.2 / (0.1 + 0.2) is 2, not 1.
        return max(1, math.floor(threads * weight / total + _ROUNDING))


def _weight(weights: Mapping[str, float], name: str) -> float:
    return weights.get(name, config.DEFAULT_WEIGHT)


def _add(counts: dict[str, int], key: str, change: int) -> None:
    left = counts.get(key, 0) + change
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)

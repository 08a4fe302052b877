"""How many deliveries each look may claim, flow by flow, so that limited endpoints get threads.

A dispatcher's sending threads serve flows: the shared one (every endpoint claimed together, by
one statement) and each paused or limited endpoint, claimed apart under its row lock. A limited
endpoint's claim must be a start (its limit counts starts), so it takes only threads that are
idle now; the shared flow may also queue a second delivery per thread (claiming ahead keeps the
threads busy). While a limited endpoint has due work, the shared flow keeps to its share of the
threads instead, so that a busy shared backlog cannot take every thread from it. Shares are equal,
and a flow alone may use every thread. The planner reads no clock and no database: the claim loop
tells it what its claims found, the senders what they hold.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection, Sequence

from scheduler import tuning

# The flow of every endpoint that is neither paused nor limited.
SHARED = ""


@dataclasses.dataclass(frozen=True)
class Room:
    """What a look may claim: `shared` for the shared claim, `held[name]` for each paused or
    limited endpoint's."""

    shared: int
    held: dict[str, int]

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

    def claimed(self, flow: str, count: int) -> None:
        with self._lock:
            self._holding[flow] = self._holding.get(flow, 0) + count

    def released(self, flow: str, count: int) -> None:
        with self._lock:
            left = self._holding.get(flow, 0) - count
            if left > 0:
                self._holding[flow] = left
            else:
                self._holding.pop(flow, None)

    def holding(self, flow: str | None = None) -> int:
        """Deliveries held by `flow`, or by every flow when None."""
        with self._lock:
            if flow is None:
                return sum(self._holding.values())
            return self._holding.get(flow, 0)

    def pressed(self) -> bool:
        """A claim waits for slots that recording frees: every slot is held, or a paused or
        limited endpoint holds some (its next claim waits for its own to be recorded)."""
        with self._lock:
            total = sum(self._holding.values())
            return total >= self.slots or any(n for flow, n in self._holding.items() if flow)

    def room(self, held: Sequence[str], waiting: Collection[str]) -> Room:
        """What each flow may claim now. `held` are the paused or limited endpoints, `waiting`
        those of them that had due work at their last claim (or were never claimed)."""
        with self._lock:
            holding = dict(self._holding)
        active = [name for name in held if name in waiting or holding.get(name, 0) > 0]
        share = max(1, self.threads // (len(active) + 1))
        total = sum(holding.values())
        idle = max(0, self.threads - total)
        rooms: dict[str, int] = {}
        for name in held:
            room = 0
            if name in waiting:
                room = max(0, min(share - holding.get(name, 0), idle))
                if len(active) == 1 and not holding.get(SHARED, 0):
                    # Alone with work: every idle thread is its.
                    room = idle
            rooms[name] = room
            idle -= room
        # The shared flow may claim ahead (a second slot per thread) only while no limited
        # endpoint has work; then it keeps to the threads the others' shares leave it.
        cap = self.slots if not active else self.threads - share * len(active)
        return Room(max(0, cap - holding.get(SHARED, 0)), rooms)

"""Which endpoints a dispatcher claims one at a time (those paused or limited, and those with
keyed jobs waiting, whose flow keys' limits are kept under the endpoint's row lock), and their
weights.

Every other endpoint's jobs are claimed together by one statement that takes no lock. The set
comes from the `endpoints` table (run-time pauses and limits) and the environment's default
limits; it is reloaded when a notification says it changed, and at least every second, so a
change made on one dispatcher holds on all of them within a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from scheduler import config, tuning
from scheduler.storage import db, endpoints, flows


class EndpointRoutes:
    def __init__(
        self,
        settings: config.Settings,
        database: db.Database,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.database = database
        self.defaults = endpoints.EndpointLimits(settings.rate_limit, settings.max_in_flight)
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._held: list[str] = []
        self._keyed: frozenset[str] = frozenset()
        self._weights: dict[str, float] = {}

    def held(self) -> list[str]:
        """The configured endpoints that are paused, limited or keyed, reloaded when stale."""
        with self._lock:
            now = self._clock()
            if self._loaded_at is None or now - self._loaded_at >= tuning.ENDPOINT_RELOAD_SECONDS:
                self._held, self._keyed = self._load()
                self._loaded_at = now
            return self._held

    def keyed(self, endpoint: str) -> bool:
        """Whether `endpoint` had keyed jobs waiting when the set was last loaded."""
        with self._lock:
            return endpoint in self._keyed

    def weights(self) -> dict[str, float]:
        """The configured endpoints' weights other than the default, reloaded with `held`."""
        self.held()
        with self._lock:
            return self._weights

    def invalidate(self) -> None:
        """Reload at the next look (a notification said pauses, limits or weights changed)."""
        with self._lock:
            self._loaded_at = None

    def _load(self) -> tuple[list[str], frozenset[str]]:
        states = {state.name: state for state in endpoints.endpoint_states(self.database)}
        keyed = frozenset(flows.keyed_endpoints(self.database)) & set(self.settings.endpoints)
        held = []
        self._weights = {}
        for name in self.settings.endpoints:
            state = states.get(name, endpoints.EndpointState(name))
            limits = state.limits(self.defaults.rate_limit, self.defaults.max_in_flight)
            if state.paused or limits.any or name in keyed:
                held.append(name)
            if state.weight is not None:
                self._weights[name] = state.weight
        return held, keyed

"""Every long-lived thread of the dispatcher runs here, so that none dies silently.

An unexpected exception is logged with its stack. A thread whose loop can simply run again is then
restarted, in the same thread, after a backoff (tuning.THREAD_RESTART_FIRST_SECONDS, doubling up to
THREAD_RESTART_MAX_SECONDS); any other is marked dead and `failed` is set, on which the entry point
stops the dispatcher and exits non-zero so that the Procfile's manager starts a fresh one. A thread
that fails while its process or term is stopping is not restarted. What is not running (restarting
or dead) is in `threads_down()`, which each heartbeat stores, and in the `scheduler_thread_down`
gauge; `on_change` is called whenever it changes, so the heartbeat row says so at once.

Restarted, because running the loop again is what it does anyway:
- claim: each look is its own transaction; running again is looking again.
- listen: it reconnects and has the claim loop look and the leader resynchronise, as after a lost
  connection; notices missed meanwhile only cost latency.
- heartbeat: each beat is one statement. While it is down no beat renews the row, so after half
  the leader timeout this dispatcher stops claiming and sending (membership.is_live) before the
  leader hands on what it holds.
- campaign: it first steps down (leadership.Leadership.run): releasing the lease frees it at
  once, so a term half-started or a lease in doubt is never kept, and the next campaign (this
  dispatcher's or another's) starts a new epoch.
- timers: APScheduler's loop reads the due timers from the jobstore on every pass, and a pass that
  failed already leaves its timers where they were (timers.GuardedScheduler).
- maintenance: rescue, pruning and reconcile are each repeatable and fenced by the epoch.
- watchdog: its state is the set of armed deadlines, kept under its lock; run again, it looks at
  every one. The backoff's cap keeps an expired attempt within its claim's lease.
- metrics: serving again on the same socket; scrapes meanwhile fail and Prometheus says so.

End the process, because what the failure leaves behind cannot be trusted:
- record: the batch it held would be lost with the slots of its deliveries, which the planner
  would then count in flight for ever (and the limits with them). Their leases hand them on.
- deliver (each task of the senders' pool): the attempt itself never raises (a failure is an
  Outcome), so an exception here left a delivery neither recorded nor given back and its slot
  held. concurrent.futures would keep it in a Future nobody reads.

The planner has no thread of its own: it runs on the claim loop's and the senders' threads. The web
process has no long-lived thread of ours: gunicorn's master replaces a worker that dies, and group
commit runs on the request threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from scheduler import tuning
from scheduler.worker import metrics

logger = logging.getLogger(__name__)

RESTART = "restart"
EXIT = "exit"
POLICIES = {
    "claim": RESTART,
    "listen": RESTART,
    "heartbeat": RESTART,
    "campaign": RESTART,
    "timers": RESTART,
    "maintenance": RESTART,
    "watchdog": RESTART,
    "metrics": RESTART,
    "record": EXIT,
    "deliver": EXIT,
}
RESTARTING = "restarting"
DEAD = "dead"


class Supervisor:
    """Runs threads by their name in POLICIES. `clock` is monotonic and injectable, as is `fault`,
    called with the name before each run of a thread or task (tests raise from it)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        fault: Callable[[str], None] | None = None,
    ) -> None:
        self.stopping = threading.Event()
        self.failed = threading.Event()
        self.on_change: Callable[[], None] = lambda: None
        self.on_failure: Callable[[], None] = lambda: None
        self._clock = clock
        self._fault = fault
        self._down: dict[str, str] = {}
        self._changed = threading.Condition()
        for name in POLICIES:
            # Exported from the start, so that a rate over them is 0 rather than absent.
            metrics.THREAD_RESTARTS.labels(name)
            metrics.THREAD_DOWN.labels(name)

    def start(
        self, name: str, target: Callable[[], None], stopping: threading.Event | None = None
    ) -> threading.Thread:
        """Start a daemon thread that runs `target` under `name`'s policy; `stopping` (the
        supervisor's own when None) is set when the thread is meant to end."""
        thread = threading.Thread(
            target=self.run, args=(name, target, stopping), name=name, daemon=True
        )
        thread.start()
        return thread

    def run(
        self, name: str, target: Callable[[], None], stopping: threading.Event | None = None
    ) -> None:
        """Run `target` in this thread until it returns, restarting it after each failure if its
        policy allows."""
        stopping = stopping or self.stopping
        backoff = tuning.THREAD_RESTART_FIRST_SECONDS
        while True:
            started = self._clock()
            try:
                if self._fault is not None:
                    self._fault(name)
                target()
                return
            except Exception:
                logger.exception(
                    "thread %s failed", name, extra={"action": "thread_failed", "thread_name": name}
                )
            if POLICIES[name] == EXIT:
                self._die(name)
                return
            if stopping.is_set():
                return
            if self._clock() - started >= tuning.THREAD_HEALTHY_SECONDS:
                backoff = tuning.THREAD_RESTART_FIRST_SECONDS
            metrics.THREAD_RESTARTS.labels(name).inc()
            logger.warning(
                "restarting thread %s in %.0fs",
                name,
                backoff,
                extra={"action": "thread_restart", "thread_name": name},
            )
            # The restart's moment is fixed before the thread shows as restarting, so that what
            # sees it restarting (a test moving the injected clock) moves it from there.
            until = self._clock() + backoff
            self._set(name, RESTARTING)
            self._wait_until(until, stopping)
            backoff = min(backoff * 2, tuning.THREAD_RESTART_MAX_SECONDS)
            self._set(name, None)
            if stopping.is_set():
                return

    def call(self, name: str, target: Callable[..., None], *args: Any) -> None:
        """Run one task of a pool's thread: the pool goes on with its next task, so a failure is
        never restarted, and ends the process (the policy of every pool here is EXIT)."""
        try:
            if self._fault is not None:
                self._fault(name)
            target(*args)
        except Exception:
            logger.exception(
                "a %s task failed", name, extra={"action": "thread_failed", "thread_name": name}
            )
            self._die(name)

    def threads_down(self) -> dict[str, str]:
        """The threads not running now, by name: RESTARTING or DEAD."""
        with self._changed:
            return dict(self._down)

    def poke(self) -> None:
        """Have threads waiting out a backoff look again: their stopping event was set, or the
        injected clock moved."""
        with self._changed:
            self._changed.notify_all()

    def stop(self) -> None:
        """Restart nothing more; threads waiting to restart end."""
        self.stopping.set()
        self.poke()

    def _wait_until(self, until: float, stopping: threading.Event) -> None:
        with self._changed:
            while not stopping.is_set():
                left = until - self._clock()
                if left <= 0:
                    return
                self._changed.wait(left)

    def _die(self, name: str) -> None:
        logger.error(
            "thread %s cannot be restarted safely; stopping the dispatcher",
            name,
            extra={"action": "thread_dead", "thread_name": name},
        )
        self._set(name, DEAD)
        self.failed.set()
        self.on_failure()

    def _set(self, name: str, state: str | None) -> None:
        with self._changed:
            if state is None:
                self._down.pop(name, None)
            else:
                self._down[name] = state
        metrics.THREAD_DOWN.labels(name).set(0 if state is None else 1)
        try:
            self.on_change()
        except Exception:
            # Reporting must not stop the supervision it reports on.
            logger.exception("could not report the state of thread %s", name)

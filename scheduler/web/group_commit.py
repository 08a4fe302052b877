"""Group commit: single-job inserts from concurrent requests share one transaction.

A web process answers many POST /insert requests at once, one per thread. Written one by one, each
would pay a psycopg round trip and a PostgreSQL commit of its own. Instead the first request to
arrive writes its job at once; requests that arrive while that write is in flight queue up, and
when it ends the first of them writes the whole queue in one transaction. Nothing waits on a
timer, so a lone request is written as soon as it comes, and a request is answered only after the
transaction holding its row has committed.
"""

from __future__ import annotations

import threading

from scheduler import errors, jobs
from scheduler.storage import db
from scheduler.storage import jobs as job_rows


class _Waiting:
    """One request's job, and what became of it."""

    __slots__ = ("done", "error", "job", "turn")

    def __init__(self, job: jobs.NewJob) -> None:
        self.job = job
        # Set when the request must wait (a write was in flight), so a lone one makes none.
        self.turn: threading.Event | None = None
        self.done = False
        self.error: BaseException | None = None


class GroupCommit:
    """Writes single jobs for many threads, in groups that form while a write is in flight."""

    def __init__(self, database: db.Database, announce_within: float) -> None:
        self._database = database
        self._announce_within = announce_within
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._writing = False

    @property
    def queued(self) -> int:
        """Jobs waiting for the write in flight to end."""
        with self._lock:
            return len(self._queue)

    def insert(self, job: jobs.NewJob) -> None:
        """Store `job`; returns once its transaction committed, raises what that write raised."""
        waiting = _Waiting(job)
        with self._lock:
            self._queue.append(waiting)
            if self._writing:
                waiting.turn = threading.Event()
            self._writing = True
        if waiting.turn is not None:
            waiting.turn.wait()
        if not waiting.done:
            # Either nothing was in flight, or the previous writer handed over: this thread's
            # job heads the queue, and it writes everything queued so far.
            self._write_queue()
        if waiting.error is not None:
            raise waiting.error

    def _write_queue(self) -> None:
        with self._lock:
            group, self._queue = self._queue, []
        written = False
        try:
            self._write(group)
            written = True
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._writing = False
            for waiting in group:
                if not written and waiting.error is None:
                    # This thread was interrupted mid-write; the others must not report success.
                    waiting.error = errors.StoreUnavailable("the write was interrupted")
                waiting.done = True
                if waiting.turn is not None:
                    waiting.turn.set()
            if successor is not None and successor.turn is not None:
                successor.turn.set()

    def _write(self, group: list[_Waiting]) -> None:
        # Jobs due sooner than the dispatchers' next look are announced to them (see
        # Settings.announce_within).
        horizon = self._announce_within
        try:
            job_rows.insert_jobs(self._database, [w.job for w in group], announce_within=horizon)
        except errors.StoreUnavailable as exc:
            # An instance per request: one raised in several threads would have its traceback
            # rewritten by each.
            for waiting in group:
                waiting.error = errors.StoreUnavailable(*exc.args)
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
                return
            # One job the database refuses must not fail the others: write them one by one.
            for waiting in group:
                try:
                    job_rows.insert_jobs(self._database, [waiting.job], announce_within=horizon)
                except Exception as single:
                    waiting.error = single

"""Sends claimed deliveries from a thread pool and records their outcomes in batches.

A transaction per outcome made PostgreSQL round trips, not HTTP, the limit of a burst: one
recorder thread writes every outcome that has piled up in a single transaction instead. A claimed
delivery holds a slot until its outcome is recorded, and there are twice as many slots as
sending threads, so the next deliveries are already in hand when a thread comes free while the
claim loop never holds more than it can send within one lease.

A delivery whose dispatcher can no longer vouch for its own heartbeat is given back unsent
rather than started: the leader may already have declared this dispatcher dead and handed the
delivery to another.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from scheduler import callbacks, config, errors, jobs, policy, tuning
from scheduler.storage import db, deliveries, outcomes
from scheduler.worker import attempt, metrics, planner, supervisor, watchdog

logger = logging.getLogger(__name__)


def lease_seconds(settings: config.Settings) -> float:
    """How long a claim is held: a delivery may wait for one full attempt before its own. A job
    with its own timeout holds it that much longer (deliveries.sql `claim`)."""
    return tuning.SLOTS_PER_THREAD * settings.attempt_deadline + tuning.LEASE_MARGIN_SECONDS


def granted_lease(settings: config.Settings, delivery: jobs.Delivery) -> float:
    """The lease its claim gave `delivery`, as deliveries.sql `claim` computes it."""
    options = delivery.http_options
    own = options.timeout if options is not None and options.timeout is not None else 0.0
    return lease_seconds(settings) + own


def lease_needed(settings: config.Settings, delivery: jobs.Delivery, waited: float) -> float | None:
    """Seconds of lease from now that `delivery`'s attempt needs (its deadline, then the
    recording of its outcome) when what is left of the lease its claim granted, `waited`
    seconds ago, is shorter; None when that lease covers it."""
    needed = attempt.deadline(settings, delivery) + tuning.LEASE_MARGIN_SECONDS
    return None if granted_lease(settings, delivery) - waited >= needed else needed


class Senders:
    """The sending threads, their slots and the recorder.

    `on_room` is called whenever recorded deliveries free their slots; `on_retry` with the
    seconds until each retry scheduled is due; `may_send` is asked before each delivery starts.
    Outcomes count in the per-minute rollup under `dispatcher_id` (a new id when None).
    """

    def __init__(
        self,
        settings: config.Settings,
        database: db.Database,
        on_room: Callable[[], None],
        on_retry: Callable[[float], None],
        may_send: Callable[[], bool] = lambda: True,
        dispatcher_id: str | None = None,
        slot_planner: planner.SlotPlanner | None = None,
        supervising: supervisor.Supervisor | None = None,
        vouched_until: Callable[[], float] = lambda: math.inf,
    ) -> None:
        self.settings = settings
        self.database = database
        self.dispatcher_id = dispatcher_id or jobs.new_job_id()
        self.planner = slot_planner or planner.SlotPlanner(settings.delivery_threads)
        self.delivered = 0
        self.attempted = 0
        self._on_room = on_room
        self._on_retry = on_retry
        self._may_send = may_send
        self._supervisor = supervising or supervisor.Supervisor()
        self._guard = watchdog.Watchdog(supervising=self._supervisor, vouched_until=vouched_until)
        attempt.prepare(settings)
        self._notices = (
            outcomes.FailureNotices(settings.failure_endpoint, settings.max_attempts)
            if settings.failure_endpoint
            else None
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(
            settings.delivery_threads, thread_name_prefix="deliver"
        )
        self._results: queue.Queue[tuple[jobs.Delivery, attempt.Outcome | None] | None] = (
            queue.Queue()
        )
        self._lock = threading.Lock()
        self._all_recorded = threading.Condition(self._lock)
        # The flow each delivery was claimed for, by (job id, claim token), until recorded.
        self._flows: dict[tuple[str, int], str] = {}
        # Deliveries whose attempt ended, by endpoint, until recorded (ended_unrecorded).
        self._ended: dict[str, set[str]] = {}
        self._closing = threading.Event()
        self._recorder = self._supervisor.start("record", self._record_loop)

    def in_flight(self) -> int:
        """Deliveries claimed and not yet recorded."""
        return self.planner.holding()

    def ended_unrecorded(self, endpoint: str) -> list[str]:
        """The jobs of `endpoint` whose attempts ended here and whose outcomes are not recorded
        yet: their rows still say `delivering`, but no request of theirs is at the endpoint, so
        its max_in_flight need not wait for the recorder to count them out."""
        with self._lock:
            return list(self._ended.get(endpoint, ()))

    def submit(
        self,
        claimed: list[jobs.Delivery],
        flow: str = planner.SHARED,
        answered_at: float | None = None,
    ) -> None:
        """Send each delivery claimed for `flow`, none before its `starts_in` has passed on this
        host's monotonic clock, counted from `answered_at`, when its claim was answered (now when
        None)."""
        with self._lock:
            for item in claimed:
                self._flows[(item.id, item.claim_token)] = flow
        # Those beyond the idle threads wait for a busy one to finish (claimed ahead).
        idle = self.planner.idle_threads()
        self.planner.claimed(flow, [item.endpoint for item in claimed])
        metrics.IN_FLIGHT.set(self.planner.holding())
        now = time.monotonic() if answered_at is None else answered_at
        for n, item in enumerate(claimed):
            self._pool.submit(
                self._supervisor.call,
                "deliver",
                self._send,
                item,
                now,
                now + item.starts_in,
                n >= idle,
            )

    def close(self, grace: float) -> bool:
        """Send nothing new, give back what was not started, let the rest finish within
        `grace`; True if every claimed delivery was settled."""
        self._closing.set()
        with self._all_recorded:
            finished = self._all_recorded.wait_for(
                lambda: self.planner.holding() == 0, timeout=grace
            )
        self._pool.shutdown(wait=finished, cancel_futures=True)
        self._results.put(None)
        self._recorder.join(timeout=tuning.JOIN_SECONDS)
        self._guard.stop()
        return finished

    def _send(self, item: jobs.Delivery, claimed: float, start: float, queued: bool) -> None:
        wait = start - time.monotonic()
        # Closing while a delivery waits for its time gives it back unsent.
        if wait > 0:
            self._closing.wait(wait)
        if (
            self._closing.is_set()
            or not self._may_send()
            or (queued and self._cancelled_while_queued(item, claimed))
            or not self._lease_covers(item, claimed)
        ):
            self._attempt_ended(item)
            self._results.put((item, None))
            return
        try:
            outcome = attempt.deliver(self.settings, item, self._guard)
        except Exception as exc:
            # A failed attempt like any other, so a delivery that always breaks ends as failed
            # after its retries instead of looping.
            logger.exception("delivery of %s failed unexpectedly", item.id)
            outcome = attempt.Outcome(
                dt.datetime.now(dt.UTC),
                0,
                None,
                f"internal error: {type(exc).__name__}",
                None,
                error_kind="internal",
            )
        self._attempt_ended(item)
        self._results.put((item, outcome))
        with self._lock:
            self.attempted += 1

    def _attempt_ended(self, item: jobs.Delivery) -> None:
        """The thread is free before the outcome is recorded: a paused or limited endpoint may
        claim it (its own limits count the delivery until then)."""
        with self._lock:
            flow = self._flows.get((item.id, item.claim_token), planner.SHARED)
            self._ended.setdefault(item.endpoint, set()).add(item.id)
        self.planner.attempt_ended(flow)
        self._on_room()

    def _lease_covers(self, item: jobs.Delivery, claimed: float) -> bool:
        """Whether its lease outlasts the attempt about to start, and the recording of its
        outcome: a delivery that waited behind a long attempt (a job's own timeout) has it
        renewed first, or is not started when its claim is gone or a cancel came meanwhile, so
        that it is never re-sent by another dispatcher while this attempt runs. (The claim's
        lease began a round trip before `claimed`, its answer's arrival: the margin covers it.)"""
        needed = lease_needed(self.settings, item, time.monotonic() - claimed)
        if needed is None:
            return True
        try:
            asked = deliveries.renew_lease(self.database, item.id, item.claim_token, needed)
        except errors.StoreUnavailable:
            return False  # unable to renew: not started, and due again after the lease
        return asked is False

    def _cancelled_while_queued(self, item: jobs.Delivery, claimed: float) -> bool:
        """A delivery claimed ahead into a busy thread's second slot starts only if no cancel
        came while it waited: a cancel wins over every attempt but one claimed at most the
        claim-ahead window before it starts. (Checked only past that window: a burst's queued
        deliveries wait a few milliseconds, and a check each would cost a round trip.)"""
        if time.monotonic() - claimed <= tuning.CLAIM_AHEAD_SECONDS:
            return False
        try:
            return deliveries.cancel_asked(self.database, item.id, item.claim_token)
        except errors.StoreUnavailable:
            # Unable to tell, so not started: the give-back or the lease makes it due again.
            return True

    # --- recording -------------------------------------------------------------------------

    def _record_loop(self) -> None:
        while True:
            first = self._results.get()
            if first is None:
                return
            batch = [first]
            self._linger(time.monotonic())
            while len(batch) < tuning.RECORD_BATCH:
                try:
                    more = self._results.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._results.put(None)
                    break
                batch.append(more)
            try:
                self._record(batch)
            except Exception:
                logger.exception("recording %d outcomes failed", len(batch))
            finally:
                self._release([item for item, _ in batch])

    def _linger(self, started: float) -> None:
        """Let more outcomes join a batch's transaction. The recorder sleeps through the linger
        rather than waking for each outcome that arrives (a thread hand-off per delivery), and
        looks every RECORD_LINGER_WHEN_FULL_SECONDS whether the claim loop now waits for the
        slots it frees (the shorter linger then) or a whole batch is waiting; closing ends it."""
        while self._results.qsize() < tuning.RECORD_BATCH:
            left = started + self.planner.record_linger() - time.monotonic()
            if left <= 0 or self._closing.wait(min(left, tuning.RECORD_LINGER_WHEN_FULL_SECONDS)):
                return

    def _release(self, recorded: list[jobs.Delivery]) -> None:
        """Free the slots of recorded deliveries and have the claim loop look again."""
        by_flow: dict[str, list[str]] = {}
        with self._lock:
            for item in recorded:
                flow = self._flows.pop((item.id, item.claim_token), planner.SHARED)
                by_flow.setdefault(flow, []).append(item.endpoint)
                ended = self._ended.get(item.endpoint)
                if ended is not None:
                    ended.discard(item.id)
                    if not ended:
                        del self._ended[item.endpoint]
        for flow, endpoints in by_flow.items():
            self.planner.released(flow, endpoints)
        metrics.IN_FLIGHT.set(self.planner.holding())
        with self._lock:
            self._all_recorded.notify_all()
        self._on_room()

    def _record(self, batch: list[tuple[jobs.Delivery, attempt.Outcome | None]]) -> None:
        unsent = [item for item, outcome in batch if outcome is None]
        settled = [
            (item, outcome, self._settle(item, outcome))
            for item, outcome in batch
            if outcome is not None
        ]
        for tries in range(tuning.RECORD_RETRIES):
            try:
                outcomes.settle_deliveries(
                    self.database,
                    [settlement for _, _, settlement in settled],
                    [(item.id, item.claim_token) for item in unsent],
                    self._notices,
                    self.dispatcher_id,
                    callback_attempts=self.settings.max_attempts,
                )
                break
            except errors.StoreUnavailable:
                # The lease makes these due again later if this never succeeds.
                time.sleep(min(2**tries, 10))
        else:
            logger.error("could not record %d outcomes; they will be re-sent", len(settled))
            return
        if unsent:
            logger.info("gave back %d deliveries not yet started", len(unsent))
        self.delivered += sum(1 for *_, settlement in settled if settlement.state == "delivered")
        for item, outcome, settlement in settled:
            self._report(item, outcome, settlement)

    def _settle(self, item: jobs.Delivery, outcome: attempt.Outcome) -> outcomes.Settlement:
        record = outcomes.AttemptRecord(
            job_id=item.id,
            attempt=item.attempts,
            started_at=outcome.started_at,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            error=outcome.error,
            response_excerpt=outcome.response_excerpt,
            error_kind=outcome.error_kind,
        )
        late = outcome.lateness
        if outcome.ok:
            return self._finished(item, outcome, record, "delivered", lateness=late)
        if not outcome.attempted:
            return self._finished(item, outcome, record, "failed", attempted=False)
        base, cap = self.settings.retry_base, self.settings.retry_cap
        options = item.http_options
        if options is not None and options.retry_base is not None and options.retry_cap:
            base, cap = options.retry_base, options.retry_cap
        delay = policy.next_try_in(
            item.attempts, item.max_attempts, base, cap, outcome.retry_after, random.uniform
        )
        if delay is None:
            return self._finished(item, outcome, record, "failed", lateness=late)
        return outcomes.Settlement(record, item.claim_token, "scheduled", delay, lateness=late)

    def _finished(
        self,
        item: jobs.Delivery,
        outcome: attempt.Outcome,
        record: outcomes.AttemptRecord,
        state: str,
        **more: Any,
    ) -> outcomes.Settlement:
        """The settlement of a job that ends `state`; with its callback when it has one (a
        notification or a callback has none)."""
        if item.callback is None or item.event is not None:
            return outcomes.Settlement(record, item.claim_token, state, **more)
        finished = callbacks.Finished(
            id=item.id,
            cron_id=item.cron_id,
            endpoint=item.endpoint,
            state=state,
            attempts=item.attempts if outcome.attempted else item.attempts - 1,
            last_status=outcome.status_code,
            last_error=outcome.error,
            last_error_kind=outcome.error_kind,
        )
        response = callbacks.response_of(outcome.answer, finished, self.settings.max_body_bytes)
        return outcomes.Settlement(
            record,
            item.claim_token,
            state,
            callback_id=jobs.new_job_id(),
            response=response,
            **more,
        )

    def _report(
        self, item: jobs.Delivery, outcome: attempt.Outcome, settlement: outcomes.Settlement
    ) -> None:
        if settlement.state == "delivered":
            metrics.DELIVERIES_BY_OUTCOME["delivered"].inc()
            # DEBUG, as an insert is: the attempt's row records it, and at a burst's rate a line
            # each cost a seventh of the dispatcher's CPU. Retries and failures stay above.
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "delivered %s (attempt %d, HTTP %s, %d ms)",
                    item.id,
                    item.attempts,
                    outcome.status_code,
                    outcome.duration_ms,
                    extra=_log_fields(item, outcome),
                )
        elif settlement.state == "failed":
            metrics.DELIVERIES_BY_OUTCOME["failed"].inc()
            logger.warning(
                "%s failed after %d attempts: %s",
                item.id,
                item.attempts,
                outcome.error,
                extra=_log_fields(item, outcome),
            )
        else:
            assert settlement.retry_in is not None
            metrics.DELIVERIES_BY_OUTCOME["retry"].inc()
            logger.info(
                "attempt %d of %s failed (%s); will retry",
                item.attempts,
                item.id,
                outcome.error,
                extra=_log_fields(item, outcome),
            )
            self._on_retry(settlement.retry_in)


def _log_fields(item: jobs.Delivery, outcome: attempt.Outcome) -> dict[str, Any]:
    """The structured fields of an attempt's log line (docs/observability.md)."""
    return {
        "action": "deliver",
        "job_id": item.id,
        "cron_id": item.cron_id,
        "attempt": item.attempts,
        "status": outcome.status_code,
        "duration_ms": outcome.duration_ms,
        "error_kind": outcome.error_kind,
    }

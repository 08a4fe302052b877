"""Leader election among the dispatchers: a lease in database time, fenced by an epoch.

Every dispatcher campaigns; the one holding the lease runs a LeaderTerm and renews the lease
every probe, for the leader timeout from the renewal. It acts only while its last renewal was
sent less than half the timeout ago: a leader cut off or frozen stops acting well before its
lease can run out and a successor take it. Whatever it still sends after that is refused by
the database (cluster.TermDatabase), which is what fences a term, not this clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from scheduler import config, errors, tuning
from scheduler.storage import cluster, db
from scheduler.worker import leader, metrics

logger = logging.getLogger(__name__)


class Leadership:
    """Campaigns for the lease as `dispatcher_id`, through `database`; `make_term(epoch,
    is_current)` builds the term to run while leading. `clock` is monotonic and injectable."""

    def __init__(
        self,
        settings: config.Settings,
        dispatcher_id: str,
        database: db.Database,
        make_term: Callable[[int, Callable[[], bool]], leader.LeaderTerm],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.dispatcher_id = dispatcher_id
        self._make_term = make_term
        self._clock = clock
        self._lease = cluster.LeaderLease(database, settings.leader_timeout)
        self._confirmed_at: float | None = None
        self.term: leader.LeaderTerm | None = None
        self._announced_standby = False
        self._stopped = False
        # The campaign thread and stop() must not start and stop a term at the same time.
        self._turn = threading.RLock()

    def is_current(self) -> bool:
        """Whether the lease was renewed recently enough to act on; when in doubt, don't."""
        confirmed = self._confirmed_at
        fresh = (
            confirmed is not None and self._clock() - confirmed < self.settings.leader_timeout / 2
        )
        return fresh and self.term is not None and not self.term.stopping.is_set()

    def campaign_once(self) -> bool:
        """Try for the lease once and start a term if won; True while leading."""
        with self._turn:
            if self._stopped:
                return False
            if self.term is not None:
                return True
            return self._campaign()

    def _campaign(self) -> bool:
        sent_at = self._clock()
        try:
            epoch = self._lease.try_acquire(self.dispatcher_id)
        except errors.StoreUnavailable as exc:
            logger.warning("cannot campaign for leadership: %s", exc)
            return False
        if epoch is None:
            if not self._announced_standby:
                logger.info("another dispatcher leads; delivering as a member")
                self._announced_standby = True
            return False
        self._confirmed_at = sent_at
        term = self._make_term(epoch, self.is_current)
        self.term = term
        try:
            term.start()
        except Exception:
            logger.exception("could not start leading; stepping down")
            self._step_down()
            return False
        metrics.LEADER.set(1)
        self._announced_standby = False
        logger.info("leading (epoch %d)", epoch, extra={"action": "leader_elected", "epoch": epoch})
        return True

    def probe(self) -> bool:
        """Renew the lease; step down once it cannot be. True while leading."""
        with self._turn:
            return self._probe()

    def _probe(self) -> bool:
        if self.term is None:
            return False
        # Measured before the renewal is sent: the lease runs from the database's clock when it
        # arrives, which is later.
        sent_at = self._clock()
        try:
            renewed = self._lease.renew(self.term.epoch)
        except errors.StoreUnavailable as exc:
            if self.is_current():
                # The lease still runs: a blip need not cost the term.
                logger.warning("cannot renew the leader's lease yet: %s", exc)
                return True
            renewed = False
        if renewed:
            self._confirmed_at = sent_at
            return True
        logger.error("lost the leader's lease; stepping down", extra={"action": "leader_lost"})
        self._step_down()
        return False

    def run(self, stopping: threading.Event) -> None:
        """Campaign while a member, probe while leading, until `stopping`. An unexpected error
        steps down before it is raised to the supervisor, which restarts the campaign."""
        probe = min(tuning.PROBE_SECONDS, self.settings.leader_timeout / 5)
        campaign = min(tuning.CAMPAIGN_SECONDS, self.settings.leader_timeout / 10)
        try:
            while not stopping.wait(probe if self.term is not None else campaign):
                if self.term is None:
                    self.campaign_once()
                else:
                    self.probe()
        except Exception:
            # Nothing would renew the lease until the restart, and what failed may have left
            # the term half-started: releasing the lease lets another dispatcher lead meanwhile,
            # and whoever leads next starts a new epoch.
            logger.error("campaign failed; stepping down", extra={"action": "leader_lost"})
            with self._turn:
                self._step_down()
            raise

    def stop(self) -> None:
        """Step down (if leading), which frees the lease at once; no campaign after this."""
        with self._turn:
            self._stopped = True
            self._step_down()

    def _step_down(self) -> None:
        term, self.term = self.term, None
        self._confirmed_at = None
        metrics.LEADER.set(0)
        if term is None:
            return
        try:
            term.stop()
        finally:
            # After the term's threads stopped, so none of them writes after another leads.
            try:
                self._lease.release(term.epoch)
            except errors.StoreUnavailable:
                logger.warning("could not release the leader's lease; it runs out by itself")

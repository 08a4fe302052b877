"""Leader election among the dispatchers: a session advisory lock, fenced by an epoch.

Every dispatcher campaigns; the one holding the lock runs a LeaderTerm and confirms the lock
every probe. It acts only while its last confirmation is younger than half the leader timeout:
the server frees a vanished leader's lock only after about the whole timeout, so a leader cut
off stops firing before a successor can start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from scheduler import config, errors, tuning
from scheduler.storage import cluster
from scheduler.worker import leader, metrics

logger = logging.getLogger(__name__)


class Leadership:
    """Campaigns for the lock as `dispatcher_id`; `make_term(epoch, is_current)` builds the
    term to run while leading. `clock` is monotonic and injectable."""

    def __init__(
        self,
        settings: config.Settings,
        dispatcher_id: str,
        make_term: Callable[[int, Callable[[], bool]], leader.LeaderTerm],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.dispatcher_id = dispatcher_id
        self._make_term = make_term
        self._clock = clock
        self._lock = cluster.LeaderLock(settings.database_url, settings.leader_timeout)
        self._confirmed_at: float | None = None
        self.term: leader.LeaderTerm | None = None
        self._announced_standby = False
        self._stopped = False
        # The campaign thread and stop() must not start and stop a term at the same time.
        self._turn = threading.RLock()

    def is_current(self) -> bool:
        """Whether leadership was confirmed recently enough to act on; when in doubt, don't."""
        confirmed = self._confirmed_at
        fresh = (
            confirmed is not None and self._clock() - confirmed < self.settings.leader_timeout / 2
        )
        return fresh and self.term is not None and not self.term.stopping.is_set()

    def campaign_once(self) -> bool:
        """Try for the lock once and start a term if won; True while leading."""
        with self._turn:
            if self._stopped:
                return False
            if self.term is not None:
                return True
            return self._campaign()

    def _campaign(self) -> bool:
        try:
            epoch = self._lock.try_acquire(self.dispatcher_id)
        except errors.StoreUnavailable as exc:
            logger.warning("cannot campaign for leadership: %s", exc)
            self._lock.close()
            return False
        if epoch is None:
            if not self._announced_standby:
                logger.info("another dispatcher leads; delivering as a member")
                self._announced_standby = True
            return False
        self._confirmed_at = self._clock()
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
        """Confirm the lock and the epoch; step down when they cannot be. True while leading."""
        with self._turn:
            return self._probe()

    def _probe(self) -> bool:
        if self.term is None:
            return False
        try:
            confirmed = self._lock.confirm(self.term.epoch)
        except errors.StoreUnavailable:
            confirmed = False
        if confirmed:
            self._confirmed_at = self._clock()
            return True
        # The lock lives and dies with its connection: after an error it may already be
        # another's, so step down and campaign afresh.
        logger.error("cannot confirm leadership; stepping down", extra={"action": "leader_lost"})
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
            # Nothing would confirm the lock until the restart, and what failed may have left
            # the term half-started: closing the lock's connection frees it at once, for
            # another dispatcher to lead meanwhile, and whoever leads next starts a new epoch.
            logger.error("campaign failed; stepping down", extra={"action": "leader_lost"})
            with self._turn:
                self._step_down()
            raise

    def stop(self) -> None:
        """Step down (if leading) and close the lock's connection, which frees it at once; no
        campaign after this."""
        with self._turn:
            self._stopped = True
            self._step_down()

    def _step_down(self) -> None:
        term, self.term = self.term, None
        self._confirmed_at = None
        metrics.LEADER.set(0)
        try:
            if term is not None:
                term.stop()
        finally:
            self._lock.close()

"""LISTEN on the scheduler's channel: notifications make a dispatcher look sooner.

They only ever save latency: every dispatcher also looks at least every poll interval, so a
notification lost while the connection was down costs nothing but a little time, and on every
reconnect the dispatcher looks at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from scheduler import errors, tuning
from scheduler.storage import db, notices

logger = logging.getLogger(__name__)


class Listener:
    """Hands each notice to `on_notice`; calls `on_connected` after each (re)connect."""

    def __init__(
        self,
        database_url: str,
        on_notice: Callable[[notices.Notice], None],
        on_connected: Callable[[], None],
    ) -> None:
        self.database_url = database_url
        self._on_notice = on_notice
        self._on_connected = on_connected

    def run(self, stopping: threading.Event) -> None:
        """Listen until `stopping`; an unexpected error is the supervisor's, which logs it and
        restarts the listener."""
        backoff = tuning.LOOP_RETRY_SECONDS
        while not stopping.is_set():
            try:
                with db.connect(self.database_url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {notices.CHANNEL}")
                    backoff = tuning.LOOP_RETRY_SECONDS
                    self._on_connected()
                    self._consume(conn, stopping)
            except (errors.StoreUnavailable, psycopg.Error):
                logger.warning(
                    "listener lost the database; reconnecting in %.0fs",
                    backoff,
                    exc_info=True,
                    extra={"action": "listen_reconnect"},
                )
                stopping.wait(backoff)
                backoff = min(backoff * 2, tuning.LISTEN_MAX_RETRY_SECONDS)

    def _consume(self, conn: psycopg.Connection[Any], stopping: threading.Event) -> None:
        while not stopping.is_set():
            for notification in conn.notifies(timeout=tuning.LISTEN_WAIT_SECONDS):
                self._on_notice(notices.parse_notice(notification.payload))

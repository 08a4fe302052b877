"""Entry point of `scheduler-dispatch`: configuration, logging, metrics, signals."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from scheduler import config, errors, logs, tuning
from scheduler.worker import dispatcher, metrics

logger = logging.getLogger(__name__)


def main(settings: config.Settings | None = None) -> None:
    """Run one dispatcher until SIGTERM or SIGINT; exit 1 if deliveries were left unsettled."""
    try:
        settings = settings or config.Settings.from_env()
    except errors.ConfigError as exc:
        print(f"scheduler-dispatch: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.configure_logging(settings.log_level, settings.log_format)
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        logger.info("received signal %d; stopping", signum)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server = metrics.serve(settings.metrics_port, settings.secrets, settings.metrics_public)
    running = dispatcher.Dispatcher(settings, server.server_port if server else None)
    running.start()
    while not stop_requested.wait(tuning.SIGNAL_CHECK_SECONDS):
        pass
    sys.exit(0 if running.stop(settings.shutdown_grace) else 1)

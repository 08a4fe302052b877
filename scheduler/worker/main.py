"""Entry point of `scheduler-dispatch`: configuration, logging, metrics, signals."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from scheduler import config, errors, logs, tuning
from scheduler.worker import dispatcher, metrics, supervisor

logger = logging.getLogger(__name__)

# The exit status after a thread that cannot be restarted failed (supervisor.py): 1 says
# deliveries were left unsettled, 2 a configuration error.
THREAD_FAILED = 3


def main(settings: config.Settings | None = None) -> None:
    """Run one dispatcher until SIGTERM or SIGINT; exit 1 if deliveries were left unsettled, 3
    if a thread that cannot be restarted failed."""
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
    sys.exit(run(settings, stop_requested))


def run(
    settings: config.Settings,
    stop_requested: threading.Event,
    supervising: supervisor.Supervisor | None = None,
) -> int:
    """Serve the metrics and run one dispatcher until `stop_requested` is set or a thread that
    cannot be restarted fails; the exit status."""
    supervising = supervising or supervisor.Supervisor()
    supervising.on_failure = stop_requested.set
    server = metrics.serve(
        settings.metrics_port, settings.secrets, settings.metrics_public, supervising.start
    )
    running = dispatcher.Dispatcher(settings, server.server_port if server else None, supervising)
    running.start()
    while not stop_requested.wait(tuning.SIGNAL_CHECK_SECONDS):
        pass
    finished = running.stop(settings.shutdown_grace)
    if supervising.failed.is_set():
        return THREAD_FAILED
    return 0 if finished else 1

"""Gunicorn settings for the `web` process: gthread workers that hand threads whole requests,
bound to 0.0.0.0:$PORT, gunicorn's own log lines in our format, and prometheus_client's
multiprocess mode for GET /metrics."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from gunicorn import glogging
from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

# Gunicorn reads every module-level name as a setting, and `config` is one of them.
from scheduler import config as scheduler_config
from scheduler import errors, tuning
from scheduler import logs as scheduler_logs
from scheduler.web import buffering

try:
    _settings = scheduler_config.Settings.from_env()
except errors.ConfigError as exc:
    # One clear line instead of a worker boot traceback per process.
    print(f"scheduler web: configuration error: {exc}", file=sys.stderr)
    sys.exit(2)

# prometheus_client decides where samples live when it is first imported, and the workers import
# it after the fork: the variable has to be in this (the master's) environment first. It is
# prometheus_client's own variable, hence read here and not in config. A fresh directory per
# master keeps a previous run's counts out of this one's.
_MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_own_metrics_dir: str | None = None
if not os.environ.get(_MULTIPROC_VARIABLE):
    _own_metrics_dir = tempfile.mkdtemp(prefix="scheduler-metrics-")
    os.environ[_MULTIPROC_VARIABLE] = _own_metrics_dir

from prometheus_client import multiprocess  # noqa: E402 (only once the variable is set)

bind = f"0.0.0.0:{_settings.port}"
# Each worker listens on a socket of its own and the kernel spreads new connections across them.
# On one shared socket the worker that wakes first accepts most of a burst of connections, and
# keep-alive clients then stay on it: we measured all 8 of a load generator's connections on one
# of two workers, which halved the rate (gunicorn PR 2938; Heroku enables it too).
reuse_port = True
# gthread, except that a thread only gets a request once all of it arrived, so that slow
# clients cannot take the threads (web/buffering.py). The threads are as many as requests
# served at once, whatever the database pool: a request beyond the pool waits for a connection.
worker_class = buffering.worker_class(_settings.max_body_bytes)
workers = _settings.web_workers
threads = _settings.web_threads
worker_connections = tuning.WEB_CONNECTIONS_PER_WORKER
# The worker's heartbeat: its event loop never blocks, so a silent worker is a stuck one and is
# replaced. Requests are single short transactions.
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = None
# The app's own middleware (scheduler.web.proxies) alone decides what X-Forwarded-For and
# X-Forwarded-Proto mean, from SCHEDULER_TRUSTED_PROXIES. Gunicorn would otherwise take the scheme
# from X-Forwarded-Proto (and SCRIPT_NAME or PATH_INFO from headers) of any peer in its
# forwarded_allow_ips: 127.0.0.1 and ::1, or FORWARDED_ALLOW_IPS, by default.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}
forwarder_headers = ""


class Logger(glogging.Logger):
    """gunicorn's logger without its access log. Any logconfig_dict turns that log on, and
    gunicorn would then build the fields of a line for every request only for our logging
    configuration to drop it; request counts and timings are in the metrics instead."""

    def access(self, resp: object, req: object, environ: object, request_time: object) -> None:
        pass


logger_class = Logger
# One fixed control socket path per user would make two instances on a host collide.
control_socket_disable = True
logconfig_dict = scheduler_logs.gunicorn_logconfig(_settings.log_level, _settings.log_format)


def when_ready(server: Arbiter) -> None:
    # With reuse_port the master holds no socket, so gunicorn's own "Listening at" names none.
    server.log.info("Workers listen at http://%s (a socket each, SO_REUSEPORT)", bind)


def child_exit(server: Arbiter, worker: Worker) -> None:
    """Drop a dead worker's live-gauge files; its counters stay in the totals, as they should."""
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Arbiter) -> None:
    # After a USR2 re-exec the new master and its workers still write to the directory.
    if _own_metrics_dir is not None and not server.reexec_pid:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)

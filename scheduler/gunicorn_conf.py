"""Gunicorn settings for the `web` process: gthread workers bound to 0.0.0.0:$PORT."""

from __future__ import annotations

import sys

# Gunicorn reads every module-level name as a setting, and `config` is one of them.
from scheduler import config as scheduler_config
from scheduler import errors

try:
    _settings = scheduler_config.Settings.from_env()
except errors.ConfigError as exc:
    # One clear line instead of a worker boot traceback per process.
    print(f"scheduler web: configuration error: {exc}", file=sys.stderr)
    sys.exit(2)

bind = f"0.0.0.0:{_settings.port}"
worker_class = "gthread"
workers = _settings.web_workers
threads = _settings.db_pool_size
# Requests are single short transactions; a stuck worker is replaced rather than waited on.
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = None
# One fixed control socket path per user would make two instances on a host collide.
control_socket_disable = True

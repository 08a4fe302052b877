"""The stable `python:scheduler.gunicorn_conf` path that existing deployments' Procfiles name."""

from __future__ import annotations

# Gunicorn takes every module-level name of this module as a setting, so all of them come along.
from scheduler.web.gunicorn_conf import *  # noqa: F403

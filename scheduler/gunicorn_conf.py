"""The old `python:scheduler.gunicorn_conf` path of Procfiles written before `scheduler.web`."""

from __future__ import annotations

# One of the two aliases kept for such Procfiles (with app); release 0.2.0 drops them
# (docs/operations.md). New Procfiles name scheduler.web.gunicorn_conf. Gunicorn takes every
# module-level name of this module as a setting, so all of them come along.
from scheduler.web.gunicorn_conf import *  # noqa: F403

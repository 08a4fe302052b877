"""The old `scheduler.app:create_app()` path that Procfiles written before `scheduler.web` name."""

from __future__ import annotations

# One of the two aliases kept for such Procfiles (with gunicorn_conf); release 0.2.0 drops them
# (docs/operations.md). New Procfiles name scheduler.web.app.
from scheduler.web.app import create_app

__all__ = ["create_app"]

"""The stable `scheduler.app:create_app()` path that existing deployments' Procfiles name."""

from __future__ import annotations

from scheduler.web.app import create_app

__all__ = ["create_app"]

"""The dashboard under /ui/: server-rendered pages to see and steer jobs, crons, endpoints and
dispatchers from a browser, behind a login with the secret."""

from __future__ import annotations

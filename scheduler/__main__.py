"""`python -m scheduler` runs the CLI."""

from __future__ import annotations

from scheduler import cli

cli.main()

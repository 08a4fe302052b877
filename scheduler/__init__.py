"""A self-hosted HTTP callback scheduler backed by PostgreSQL."""

from __future__ import annotations

__version__ = "0.1.0"

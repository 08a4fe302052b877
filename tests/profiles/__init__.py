"""Instruction-count profiles of one process, for docs/profiles.md."""

from __future__ import annotations

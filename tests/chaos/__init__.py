"""`python -m tests.chaos`: the chaos soak, faults at random under load, then the invariants."""

from __future__ import annotations

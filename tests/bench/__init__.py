"""`python -m tests.bench`: the Procfile's processes under load, written up as docs/benchmarks.md."""

from __future__ import annotations

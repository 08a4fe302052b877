"""`python -m tests.bench [--quick] [--output docs/benchmarks.md]`."""

from __future__ import annotations

import sys

from tests.bench import run

sys.exit(run.main())

"""`python -m tests.chaos [--seed N] [--duration S] [--output docs/reliability.md]`."""

from __future__ import annotations

import sys

from tests.chaos import runner

sys.exit(runner.main())

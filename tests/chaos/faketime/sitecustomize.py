"""Loaded only into a dispatcher the soak runs under libfaketime, by putting this directory first
on its PYTHONPATH: time.sleep on a threading wait.

libfaketime 0.9.10 (Debian's) with FAKETIME_DONT_FAKE_MONOTONIC=1 fails every time.sleep with
EINVAL (CPython sleeps with clock_nanosleep on an absolute monotonic deadline, which it
mistranslates), and without that variable a threading wait never returns. Lock waits work with
it, so sleeping on one keeps the process's behaviour and only moves its clock, as meant.
"""

from __future__ import annotations

import threading
import time

_NEVER = threading.Event()


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    _NEVER.wait(seconds)


time.sleep = _sleep

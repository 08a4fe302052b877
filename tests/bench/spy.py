"""`py-spy record` around part of a scenario (`--profile DIR`); does nothing without a directory.

Stacks are written in py-spy's raw (collapsed) format, one file per process, with thread ids, so
they can be summed by function or fed to any flame graph tool. Sampling pauses the process it
reads, so a profiled run's numbers are not the benchmark's.
"""

from __future__ import annotations

import contextlib
import pathlib
import signal
import subprocess
from collections.abc import Callable, Iterator

# --gil: only the thread holding the GIL is sampled, so the stacks show where Python spends CPU.
# Without it, threads blocked on a lock or a socket are sampled too: py-spy does not tell every
# such wait from work, and the profile fills with waiting senders.
COMMAND = ("py-spy", "record", "--format", "raw", "--threads", "--gil", "--rate", "200")


class Profiler:
    def __init__(self, directory: pathlib.Path | None) -> None:
        self.directory = directory

    @contextlib.contextmanager
    def record(self, name: str, pids: Callable[[], list[int]]) -> Iterator[None]:
        if self.directory is None:
            yield
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        spies = [
            subprocess.Popen(
                [*COMMAND, "--pid", str(pid), "-o", str(self.directory / f"{name}-{pid}.txt")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in pids()
        ]
        try:
            yield
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                try:
                    spy.wait(60)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()

"""The scheduler's domain objects; pure data, no I/O."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time
from typing import Any

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_job_id() -> str:
    """A 26-character id that sorts by creation time (48-bit milliseconds + 80 random bits)."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


@dataclasses.dataclass(frozen=True)
class NewJob:
    id: str
    body: Any
    run_at: dt.datetime
    max_attempts: int


@dataclasses.dataclass(frozen=True)
class CronDefinition:
    id: str
    spec: str
    timezone: str


@dataclasses.dataclass(frozen=True)
class CronJob:
    id: str
    spec: str
    timezone: str
    revision: int
    last_fire_at: dt.datetime | None
    created_at: dt.datetime | None
    updated_at: dt.datetime

    @property
    def timer_id(self) -> str:
        """The APScheduler job id of this revision's timer."""
        return cron_timer_id(self.revision)


def cron_timer_id(revision: int) -> str:
    return f"cron:{revision}"


@dataclasses.dataclass(frozen=True)
class Delivery:
    """A claimed job, ready to send; `body` is the stored JSON text."""

    id: str
    cron_id: str | None
    body: str | None
    run_at: dt.datetime
    attempts: int
    max_attempts: int

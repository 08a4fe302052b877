"""Domain errors, the class docstring being the default message, and the JSON body of an HTTP
error, which both processes answer with."""

from __future__ import annotations

import json
from typing import Any


def http_body(code: str, message: str, fields: dict[Any, Any] | None = None) -> str:
    """The one JSON body of every non-2xx answer, from the API and from both metrics endpoints."""
    error: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        error["fields"] = fields
    return json.dumps({"error": error})


class SchedulerError(Exception):
    """Scheduler error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(SchedulerError):
    """Invalid configuration."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class InvalidCronSpec(SchedulerError):
    """Invalid cron spec."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(f"invalid cron spec {spec!r}: {reason}")


class JobNotFound(SchedulerError):
    """No such job."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}")


class TermEnded(SchedulerError):
    """This dispatcher's term as leader is over: another took the lease, or it ran out."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        super().__init__(f"the term of epoch {epoch} is over; nothing was written")


class CronNotFound(SchedulerError):
    """No such cron."""

    def __init__(self, cron_id: str) -> None:
        self.cron_id = cron_id
        super().__init__(f"no cron with id {cron_id!r}")


class EndpointNotFound(SchedulerError):
    """No endpoint of that name is configured."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no endpoint named {name!r} is configured (SCHEDULER_ENDPOINTS)")


class Conflict(SchedulerError):
    """The request conflicts with the current state."""

    # The field of the request the conflict is about, if one is, and what to say of it there.
    field: str | None = None
    field_message: str = ""


class AttemptsSpent(Conflict):
    """A job's new attempt budget would leave it no attempt."""

    field = "max_attempts"

    def __init__(self, job_id: str, attempts: int) -> None:
        self.job_id = job_id
        self.attempts = attempts
        self.field_message = f"Must be more than the {attempts} attempts the job has made."
        super().__init__(
            f"job {job_id} has made {attempts} attempts: max_attempts must be more than that"
        )


class IdempotencyConflict(Conflict):
    """An idempotency key was reused for a different request."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"idempotency key {key!r} was already used for a different request")


class InvalidValue(SchedulerError):
    """PostgreSQL refused a value of the request."""


class BodyTooLarge(SchedulerError):
    """A body is too large as stored."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{size} bytes as stored, over the limit of {limit}")


class StoreUnavailable(SchedulerError):
    """The database is unreachable."""


class MigrationError(SchedulerError):
    """The schema cannot be migrated."""

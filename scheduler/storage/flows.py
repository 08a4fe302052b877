"""Flow-control keys: the limits each key was given last, and what each has waiting.

A key lives within its endpoint. The claims that honour its limits are deliveries.py's (a keyed
endpoint is claimed apart, key by key, under its row lock); this module makes and forgets keys
and reads their figures.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from scheduler import jobs
from scheduler.storage import db, notices, queries

QUERIES = queries.load(__name__)


@dataclasses.dataclass(frozen=True)
class FlowFigures:
    key: str
    rate_limit: float | None
    max_in_flight: int | None
    due: int
    in_flight: int
    used_at: dt.datetime


def use_flows(cur: Any, named: Sequence[tuple[str, jobs.Flow]], announce: bool = False) -> None:
    """Make or refresh the keys named, each with its endpoint, in the caller's transaction:
    within one request, the limits of the last naming a key win. With `announce` (keyed jobs
    are stored in this transaction), an endpoint with no keyed job waiting until now has every
    dispatcher claim it apart from the commit on, not from its next reload of the routes."""
    latest = {(endpoint, flow.key): flow for endpoint, flow in named}
    names = sorted(latest)
    if announce:
        _announce_newly_keyed(cur, [endpoint for endpoint, _ in names])
    cur.execute(
        QUERIES["use_flows"],
        {
            "endpoints": [endpoint for endpoint, _ in names],
            "keys": [key for _, key in names],
            "rates": [latest[name].rate_limit for name in names],
            "max_in_flights": [latest[name].max_in_flight for name in names],
        },
    )


def carry_flow(cur: Any, key: str, former: str, endpoint: str) -> None:
    """Move a job's key from endpoint `former` to `endpoint` in the caller's transaction (an edit
    that changes only its endpoint): made there with its limits on `former` unless `endpoint`
    has the key already. An endpoint with no keyed job waiting until now is announced, as by
    use_flows."""
    _announce_newly_keyed(cur, [endpoint])
    cur.execute(QUERIES["carry_flow"], {"key": key, "former": former, "endpoint": endpoint})


def _announce_newly_keyed(cur: Any, endpoints: Sequence[str]) -> None:
    cur.execute(QUERIES["newly_keyed"], {"endpoints": sorted(set(endpoints))})
    if cur.fetchall():
        cur.execute(notices.QUERIES["notify_endpoints_changed"])


def announce_keyed(database: db.Database) -> None:
    """Keyed jobs were stored: have every dispatcher reload which endpoints it claims apart."""
    database.run(notices.QUERIES["notify_endpoints_changed"])


def flow_limits(database: db.Database, endpoint: str, key: str) -> jobs.Flow | None:
    """The key with the limits it has now; None when the endpoint has no such key."""
    found = database.rows(QUERIES["flow_limits"], {"endpoint": endpoint, "key": key})
    return jobs.Flow(key, **found[0]) if found else None


def keyed_endpoints(database: db.Database) -> list[str]:
    """Endpoints with keyed jobs waiting."""
    return [row["endpoint"] for row in database.rows(QUERIES["keyed_endpoints"])]


def flow_figures(
    database: db.Database, endpoint: str, limit: int, due_cap: int
) -> list[FlowFigures]:
    """An endpoint's keys with the most jobs due now (counted up to `due_cap`), at most `limit`."""
    params = {"endpoint": endpoint, "limit": limit, "due_cap": due_cap}
    return [FlowFigures(**row) for row in database.rows(QUERIES["key_figures"], params)]


def forget_idle_flows(database: db.Database, idle_seconds: float) -> int:
    """Forget keys unused for `idle_seconds` with nothing waiting, in flight or in a cron; how
    many."""
    return len(database.rows(QUERIES["forget_idle_flows"], {"idle": idle_seconds}))

"""Endpoints' run-time state: pauses, limits and weights set through the API, and what each has
in hand."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from scheduler import config
from scheduler.storage import db, notices, queries

QUERIES = queries.load(__name__)


@dataclasses.dataclass(frozen=True)
class EndpointLimits:
    rate_limit: float | None
    max_in_flight: int | None

    @property
    def any(self) -> bool:
        return self.rate_limit is not None or self.max_in_flight is not None


@dataclasses.dataclass(frozen=True)
class EndpointState:
    """An endpoint's run-time state: paused, the limits set at run time (`*_set`; None set
    means unlimited) that win over the environment's, and its weight (None: the default)."""

    name: str
    paused: bool = False
    rate_limit: float | None = None
    rate_limit_set: bool = False
    max_in_flight: int | None = None
    max_in_flight_set: bool = False
    weight: float | None = None

    @property
    def weight_in_force(self) -> float:
        return config.DEFAULT_WEIGHT if self.weight is None else self.weight

    def limits(self, rate_limit: float | None, max_in_flight: int | None) -> EndpointLimits:
        """The limits in force, given the environment's defaults."""
        return EndpointLimits(
            self.rate_limit if self.rate_limit_set else rate_limit,
            self.max_in_flight if self.max_in_flight_set else max_in_flight,
        )


@dataclasses.dataclass(frozen=True)
class EndpointFigures:
    state: EndpointState
    in_flight: int
    due: int


def endpoint_states(database: db.Database) -> list[EndpointState]:
    return [EndpointState(**row) for row in database.rows(QUERIES["endpoint_states"])]


def endpoint_figures(
    database: db.Database, names: Sequence[str], due_cap: int | None = None
) -> list[EndpointFigures]:
    """Each named endpoint's state, in flight and due (counted up to `due_cap`, if given), in
    the order given."""
    figures = []
    params = {"names": list(names), "due_cap": due_cap}
    for row in database.rows(QUERIES["endpoint_figures"], params):
        in_flight, due = int(row.pop("in_flight")), int(row.pop("due"))
        figures.append(EndpointFigures(EndpointState(**row), in_flight, due))
    return figures


def set_endpoint_limits(
    database: db.Database, endpoint: str, limits: dict[str, float | int | None]
) -> None:
    """Override the settings named in `limits` (rate_limit, max_in_flight, None: unlimited;
    weight, None: the default), leaving the others as they are, and tell every dispatcher."""
    params = {
        "endpoint": endpoint,
        "rate_limit": limits.get("rate_limit"),
        "set_rate_limit": "rate_limit" in limits,
        "max_in_flight": limits.get("max_in_flight"),
        "set_max_in_flight": "max_in_flight" in limits,
        "weight": limits.get("weight"),
        "set_weight": "weight" in limits,
    }
    _change(database, QUERIES["set_endpoint_limits"], params)


def reset_endpoint_limits(database: db.Database, endpoint: str) -> None:
    """Back to the environment's limits."""
    _change(database, QUERIES["reset_endpoint_limits"], {"endpoint": endpoint})


def set_endpoint_paused(database: db.Database, endpoint: str, paused: bool) -> None:
    _change(database, QUERIES["set_endpoint_paused"], {"endpoint": endpoint, "paused": paused})


def _change(database: db.Database, query: str, params: dict[str, Any]) -> None:
    """Run one change and tell every dispatcher, in one transaction."""
    with database.transaction() as cur:
        cur.execute(query, params)
        cur.execute(notices.QUERIES["notify_endpoints_changed"])


def unknown_endpoints(database: db.Database, names: Sequence[str]) -> list[str]:
    """Endpoint names that waiting jobs or crons use and `names` lacks."""
    rows = database.rows(QUERIES["unknown_endpoints"], {"names": list(names)})
    return sorted(row["endpoint"] for row in rows)

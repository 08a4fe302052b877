"""Claiming due deliveries (together, or one paused or limited endpoint at a time), and rescue.

A claim marks a job `delivering` under a new claim token and a lease; its outcome is written by
outcomes.settle_deliveries, and only while that token is still the job's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from scheduler import jobs, policy
from scheduler.storage import db, endpoints, queries

QUERIES = queries.load(__name__)
# While an endpoint is paused only jobs an operator asked to run go (claim_endpoint_jobs).
_ASKED_ONLY = {False: "", True: "AND run_requested"}
CLAIM_ENDPOINT_JOBS = {
    paused: queries.variant(QUERIES["claim_endpoint_jobs"], asked_only=literal)
    for paused, literal in _ASKED_ONLY.items()
}
ENDPOINT_DUE_IN = {
    paused: queries.variant(QUERIES["endpoint_due_in"], asked_only=literal)
    for paused, literal in _ASKED_ONLY.items()
}


@dataclasses.dataclass(frozen=True)
class EndpointClaim:
    """What one claim for a paused or limited endpoint took, and in how many seconds it could
    take more (None: not before it is woken, or its next job is due)."""

    claimed: list[jobs.Delivery]
    retry_in: float | None


def claim_due_jobs(
    database: db.Database,
    dispatcher_id: str,
    lease_seconds: float,
    limit: int,
    held: Sequence[str] = (),
    known: Sequence[str] = (),
    ahead: float = 0.0,
    grace: float = 0.0,
    shares: tuple[Mapping[str, int], int] | None = None,
    holding: Mapping[str, int] | None = None,
) -> list[jobs.Delivery]:
    """Claim up to `limit` deliveries due by the database's clock within `ahead` seconds,
    each under a new token, leaving out the `held` endpoints' (paused or limited:
    claim_endpoint_jobs), those of `known` endpoints paused or limited at run time since `held`
    was read, and those of endpoints not `known` here until no dispatcher has known them for
    `grace` seconds. `shares` caps each endpoint: what is left of its share for those named,
    the second figure for any other (planner.SlotPlanner.shares); all may take `limit` when
    None. Endpoints take turns, those `holding` fewer deliveries first."""
    rooms, newcomer = shares if shares is not None else ({}, limit)
    busy = dict(holding or {})
    names = sorted(set(rooms) | set(busy))
    params = {
        "dispatcher_id": dispatcher_id,
        "lease_seconds": lease_seconds,
        "limit": limit,
        "held": list(held),
        "known": list(known),
        "ahead": ahead,
        "grace": grace,
        "shared": names,
        "rooms": [rooms.get(name) for name in names],
        "holding": [busy.get(name, 0) for name in names],
        "newcomer": newcomer,
    }
    return [jobs.Delivery(**row) for row in database.rows(QUERIES["claim_due_jobs"], params)]


def claim_endpoint_jobs(
    database: db.Database,
    dispatcher_id: str,
    lease_seconds: float,
    limit: int,
    endpoint: str,
    defaults: endpoints.EndpointLimits,
) -> EndpointClaim:
    """Claim up to `limit` of one endpoint's due deliveries within its pause and limits, with
    its row locked so that every dispatcher draws on the same token bucket and in-flight count
    (policy.TokenBucket decides how many may start)."""
    with database.transaction() as cur:
        cur.execute(QUERIES["lock_endpoint"], {"endpoint": endpoint})
        row = cur.fetchone()
        assert row is not None
        tokens, since_refill = row.pop("tokens"), row.pop("since_refill")
        locked_at = row.pop("locked_at")
        state = endpoints.EndpointState(endpoint, **row)
        limits = state.limits(defaults.rate_limit, defaults.max_in_flight)
        level: float | None = None
        if limits.rate_limit is not None:
            level = policy.TokenBucket(limits.rate_limit).level(tokens, since_refill)
        in_flight = 0
        if limits.max_in_flight is not None:
            cur.execute(QUERIES["count_in_flight"], {"endpoint": endpoint})
            counted = cur.fetchone()
            assert counted is not None
            in_flight = int(counted["in_flight"])
        allowance = policy.claim_allowance(limit, level, limits.max_in_flight, in_flight)
        claimed: list[jobs.Delivery] = []
        if allowance > 0:
            params = {
                "dispatcher_id": dispatcher_id,
                "lease_seconds": lease_seconds,
                "limit": allowance,
                "endpoint": endpoint,
            }
            cur.execute(CLAIM_ENDPOINT_JOBS[state.paused], params)
            claimed = [jobs.Delivery(**found) for found in cur.fetchall()]
        if level is not None:
            level -= len(claimed)
            cur.execute(
                QUERIES["save_tokens"],
                {"endpoint": endpoint, "tokens": level, "refilled_at": locked_at},
            )
        if len(claimed) == limit:
            # No room left here: the senders wake the claim loop when there is.
            return EndpointClaim(claimed, None)
        cur.execute(ENDPOINT_DUE_IN[state.paused], {"endpoint": endpoint})
        due = cur.fetchone()
        due_in: float | None = due["due_in"] if due else None
    room_left = len(claimed) < allowance
    retry_in = policy.next_claim_in(
        due_in, level, limits.rate_limit, limits.max_in_flight, room_left
    )
    return EndpointClaim(claimed, retry_in)


def next_due_in(
    database: db.Database,
    held: Sequence[str] = (),
    known: Sequence[str] = (),
    grace: float = 0.0,
) -> float | None:
    """Seconds until claim_due_jobs (given the same `held`, `known` and `grace`) could claim
    the next waiting job, by the database's clock; None if none waits."""
    params = {"held": list(held), "known": list(known), "grace": grace}
    due_in = database.rows(QUERIES["next_due_in"], params)[0]["due_in"]
    return None if due_in is None else float(due_in)


def release_dead_claims(database: db.Database, epoch: int, live_seconds: float) -> int:
    """Re-queue what dispatchers without a heartbeat in `live_seconds` hold, and expired
    leases, if `epoch` is still the leader's; how many."""
    params = {"epoch": epoch, "live_seconds": live_seconds}
    return len(database.rows(QUERIES["release_dead_claims"], params))


def cancel_asked(database: db.Database, job_id: str, claim_token: int) -> bool:
    """Whether a cancel was asked for this claimed delivery (or its claim is no longer held)."""
    rows = database.rows(QUERIES["cancel_asked"], {"id": job_id, "claim_token": claim_token})
    return not rows or bool(rows[0]["asked"])

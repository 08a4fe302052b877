"""Claiming due deliveries (together, or one paused or limited endpoint at a time), and rescue.

A claim marks a job `delivering` under a new claim token and a lease; its outcome is written by
outcomes.settle_deliveries, and only while that token is still the job's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from scheduler import jobs, policy, tuning
from scheduler.storage import db, endpoints, flows, queries

QUERIES = queries.load(__name__)
# While an endpoint is paused only jobs an operator asked to run go (claim_endpoint_jobs).
_ASKED_ONLY = {False: "", True: "AND run_requested"}


def _by_pause(query: str) -> dict[bool, str]:
    """`query` for a running endpoint (False) and for a paused one (True)."""
    return {
        paused: queries.variant(query, asked_only=literal)
        for paused, literal in _ASKED_ONLY.items()
    }


CLAIM_ENDPOINT_JOBS = _by_pause(QUERIES["claim_endpoint_jobs"])
ENDPOINT_DUE_IN = _by_pause(QUERIES["endpoint_due_in"])
KEY_TURNS = _by_pause(QUERIES["key_turns"])
CLAIM_KEY_JOBS = _by_pause(QUERIES["claim_key_jobs"])
UNKEYED_DUE = _by_pause(QUERIES["unkeyed_due"])


def delivery(row: dict[str, Any]) -> jobs.Delivery:
    """A claimed_delivery row as a jobs.Delivery."""
    options = row["http_options"]
    if options is not None:
        row["http_options"] = jobs.HttpOptions.from_json(options)
    return jobs.Delivery(**row)


@dataclasses.dataclass(frozen=True)
class EndpointClaim:
    """What one claim for a paused or limited endpoint took, and in how many seconds it could
    take more (None: not before it is woken, or its next job is due); `left_due`: it left due
    jobs behind, which its own limits (not the room it was given) held back."""

    claimed: list[jobs.Delivery]
    retry_in: float | None
    left_due: bool = False


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
    return [delivery(row) for row in database.rows(QUERIES["claim_due_jobs"], params)]


def claim_endpoint_jobs(
    database: db.Database,
    dispatcher_id: str,
    lease_seconds: float,
    limit: int,
    endpoint: str,
    defaults: endpoints.EndpointLimits,
    keyed: bool = False,
    ended: Sequence[str] = (),
) -> EndpointClaim:
    """Claim up to `limit` of one endpoint's due deliveries within its pause and limits, with
    its row locked so that every dispatcher draws on the same token bucket and in-flight count
    (policy.TokenBucket decides how many may start). A `keyed` endpoint's flow keys take turns
    within that, each within its own limits (_claim_by_key). The jobs `ended` name deliveries
    whose attempts have ended and whose outcomes are not recorded yet: not in flight."""
    with database.transaction() as cur:
        cur.execute(QUERIES["lock_endpoint"], {"endpoint": endpoint})
        row = cur.fetchone()
        assert row is not None
        tokens, since_refill = row.pop("tokens"), row.pop("since_refill")
        locked_at, cursor = row.pop("locked_at"), row.pop("flow_cursor")
        state = endpoints.EndpointState(endpoint, **row)
        limits = state.limits(defaults.rate_limit, defaults.max_in_flight)
        level: float | None = None
        if limits.rate_limit is not None:
            level = policy.TokenBucket(limits.rate_limit).level(tokens, since_refill)
        in_flight = 0
        if limits.max_in_flight is not None:
            cur.execute(QUERIES["count_in_flight"], {"endpoint": endpoint, "ended": list(ended)})
            counted = cur.fetchone()
            assert counted is not None
            in_flight = int(counted["in_flight"])
        allowance = policy.claim_allowance(limit, level, limits.max_in_flight, in_flight)
        claimed: list[jobs.Delivery] = []
        params = {
            "dispatcher_id": dispatcher_id,
            "lease_seconds": lease_seconds,
            "limit": allowance,
            "endpoint": endpoint,
        }
        keys_wait: float | None = None
        if keyed and allowance == 0:
            # Its own limits hold it back: when a token or room comes, keys may be due.
            keys_wait = 0.0
        elif keyed:
            claimed, keys_wait = _claim_by_key(cur, params, state.paused, cursor, locked_at)
        elif allowance > 0:
            cur.execute(CLAIM_ENDPOINT_JOBS[state.paused], params)
            claimed = [delivery(found) for found in cur.fetchall()]
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
    if keyed:
        due_in = min((d for d in (due_in, keys_wait) if d is not None), default=None)
    room_left = len(claimed) < allowance
    retry_in = policy.next_claim_in(
        due_in, level, limits.rate_limit, limits.max_in_flight, room_left
    )
    return EndpointClaim(claimed, retry_in, due_in is not None and due_in <= 0)


def _claim_by_key(
    cur: Any, params: dict[str, Any], paused: bool, cursor: str | None, locked_at: dt.datetime
) -> tuple[list[jobs.Delivery], float | None]:
    """A keyed endpoint's claim (its row locked): the endpoint's `limit` shared out in turns
    between its jobs without a key and its keys, from the key after `cursor` on, each key within
    its own bucket and in-flight limit; with when it could take more (policy.next_key_claim_in)."""
    endpoint, allowance = params["endpoint"], params["limit"]
    cap = max(allowance, 1)
    cur.execute(UNKEYED_DUE[paused], {"endpoint": endpoint, "cap": cap})
    unkeyed = cur.fetchone()["due"]
    rows, more_keys = _key_turns(cur, endpoint, paused, cursor or "", cap, unkeyed > 0)
    levels = [row["level"] for row in rows]
    counts = policy.take_turns(allowance, [unkeyed, *(row["room"] for row in rows)])
    claimed: list[jobs.Delivery] = []
    if counts[0]:
        cur.execute(CLAIM_ENDPOINT_JOBS[paused], {**params, "limit": counts[0]})
        claimed += [delivery(found) for found in cur.fetchall()]
    given = [(row, count) for row, count in zip(rows, counts[1:], strict=True) if count]
    if given:
        keys = {"keys": [row["key"] for row, _ in given], "counts": [n for _, n in given]}
        cur.execute(CLAIM_KEY_JOBS[paused], {**params, **keys})
        claimed += [delivery(found) for found in cur.fetchall()]
    limited = [
        (row["key"], level - count)
        for row, level, count in zip(rows, levels, counts[1:], strict=True)
        if level is not None and count
    ]
    # The turns go on after the last key given any when the endpoint's limit ran out, else after
    # the last key looked at.
    last = given[-1][0] if given and sum(counts) >= allowance else (rows[-1] if rows else None)
    cur.execute(
        flows.QUERIES["save_key_buckets"],
        {
            "endpoint": endpoint,
            "keys": [key for key, _ in limited],
            "tokens": [tokens for _, tokens in limited],
            "refilled_at": locked_at,
            "cursor": cursor if last is None else last["key"],
        },
    )
    turns = [
        policy.KeyTurn(
            level,
            row["rate_limit"],
            row["max_in_flight"],
            row["in_flight"],
            row["due"],
            count,
            row["next_in"],
        )
        for row, level, count in zip(rows, levels, counts[1:], strict=True)
    ]
    return claimed, policy.next_key_claim_in(turns, more_keys)


def _key_turns(
    cur: Any, endpoint: str, paused: bool, after: str, cap: int, unkeyed_due: bool
) -> tuple[list[dict[str, Any]], bool]:
    """key_turns from the key after `after`, going round to the first keys when the last is
    reached first, each key once: as many keys as the claim may start deliveries, then twice as
    many again each time while fewer than that of the keys looked at (and the endpoint's jobs
    without a key) could take one, up to _keys_to_look_at; with whether keys were left unlooked
    at. So a claim reads about a key for each delivery it starts when its keys have room, however
    many keys there are."""
    budget = _keys_to_look_at(cap)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    could_start = 1 if unkeyed_due else 0
    start, wrapped, batch = after, not after, cap
    while len(rows) < budget:
        probes = min(batch, budget - len(rows))
        cur.execute(
            KEY_TURNS[paused], {"endpoint": endpoint, "after": start, "probes": probes, "cap": cap}
        )
        found: list[dict[str, Any]] = cur.fetchall()
        fresh = [_with_room(row) for row in found if row["key"] not in seen]
        rows += fresh
        seen.update(row["key"] for row in fresh)
        could_start += sum(1 for row in fresh if row["room"] > 0)
        if len(fresh) < len(found) or (len(found) < probes and wrapped):
            return rows, False  # every key was looked at
        if could_start >= cap:
            return rows, True
        start, wrapped = ("", True) if len(found) < probes else (found[-1]["key"], wrapped)
        batch *= 2
    return rows, True


def _with_room(row: dict[str, Any]) -> dict[str, Any]:
    """A key_turns row with its bucket's `level` (None: no rate limit) and its `room`: how many
    deliveries it may start now."""
    level = None
    if row["rate_limit"] is not None:
        level = policy.TokenBucket(row["rate_limit"]).level(row["tokens"], row["since_refill"])
    room = policy.claim_allowance(row["due"], level, row["max_in_flight"], row["in_flight"])
    return {**row, "level": level, "room": room}


def _keys_to_look_at(allowance: int) -> int:
    per_start = allowance * tuning.FLOW_KEYS_PER_START
    return min(tuning.FLOW_KEYS_PER_LOOK, max(tuning.FLOW_KEYS_MIN_LOOK, per_start))


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


def release_dead_claims(database: db.Database, live_seconds: float) -> int:
    """Re-queue what dispatchers without a heartbeat in `live_seconds` hold, and expired
    leases; how many. Called through the leader's fenced connection (cluster.TermDatabase)."""
    params = {"live_seconds": live_seconds}
    return len(database.rows(QUERIES["release_dead_claims"], params))


def cancel_asked(database: db.Database, job_id: str, claim_token: int) -> bool:
    """Whether a cancel was asked for this claimed delivery (or its claim is no longer held)."""
    rows = database.rows(QUERIES["cancel_asked"], {"id": job_id, "claim_token": claim_token})
    return not rows or bool(rows[0]["asked"])


def renew_lease(
    database: db.Database, job_id: str, claim_token: int, lease_seconds: float
) -> bool | None:
    """Hold a claimed delivery's lease `lease_seconds` from now (never less than it had); None
    when the claim is no longer held, else whether a cancel was asked for it."""
    params = {"id": job_id, "claim_token": claim_token, "lease_seconds": lease_seconds}
    rows = database.rows(QUERIES["renew_lease"], params)
    return bool(rows[0]["asked"]) if rows else None

"""Scenario 8: endpoints with and without limits delivering at once, and scenario 9: what flow
keys cost the claim.

Every endpoint is a path of its own on the receiver (SCHEDULER_ENDPOINTS), so that each can answer
at its own pace; the receiver records when each request arrived and when it was answered, from
which `limits` computes how well each limit was used and whether it was kept. Flow keys (a job's
`"flow": {"key", "rate", "max_in_flight"}`) are measured only when the server takes the field:
one insert probes it, and a server that refuses it (400) has the flow parts skipped, saying so.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any

from tests.bench import limits, stats
from tests.bench.receiver import ReceiverProcess
from tests.bench.scenarios import (
    FAR_FUTURE,
    METRICS_CATCH_UP,
    Collector,
    Plan,
    due_after,
    wait_for,
)
from tests.bench.system import System, rfc3339

BULK, RATED, SLOTS, SLOW, QUIET, FLOWS = "bulk", "rated", "slots", "slow", "quiet", "flows"
ENDPOINTS = (BULK, RATED, SLOTS, SLOW, QUIET, FLOWS)
# What the receiver sees of a start may lag the dispatcher's by this much (see limits).
SLACK = 0.05
# The flows endpoint answers after this long, so that two requests of one key would be seen
# overlapping at the receiver.
FLOW_ANSWER_SECONDS = 0.01
# A rate no flow key of the cost check reaches: the keys are there to be claimed, not to hold back.
COST_RATE = 1000.0
# The cost check's endpoint: the receiver's /hook, answered at once.
COST_ENDPOINT = "default"
BATCH = 1000


def env(receiver: ReceiverProcess, plan: Plan) -> dict[str, str]:
    """SCHEDULER_ENDPOINTS naming a receiver path for each endpoint of the scenario."""
    delays = {SLOTS: plan.mixed_slot_seconds, SLOW: plan.mixed_slow_seconds}
    delays[FLOWS] = FLOW_ANSWER_SECONDS
    pairs = [f"{name}={receiver.hook(name, delays.get(name, 0.0))}" for name in ENDPOINTS]
    return {"SCHEDULER_ENDPOINTS": " ".join(pairs)}


def patch_limits(system: System, name: str, **values: float | int | None) -> None:
    response = system.session.patch(f"{system.url}/endpoints/{name}", json=values, timeout=30)
    response.raise_for_status()


def probe_flow(system: System, endpoint: str) -> str | None:
    """None when the server takes a job's `flow` field, else why not (its 400's message)."""
    item = {"timestamp": FAR_FUTURE, "endpoint": endpoint, "flow": {"key": "probe", "rate": 1}}
    response = system.session.post(system.url + "/insert", json=item, timeout=30)
    if response.status_code == 400:
        error = response.json().get("error", {})
        fields = error.get("fields") or {}
        return f"the server refuses the `flow` field (400: {fields.get('flow') or error})"
    response.raise_for_status()
    system.session.post(system.url + "/delete", json={"id": response.json()["id"]}, timeout=30)
    return None


def insert(system: System, items: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(items), BATCH):
        ids += system.insert_batch(items[start : start + BATCH])
    return ids


def key_name(number: int) -> str:
    return f"k{number:04d}"


def _flow_items(plan: Plan, due: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Jobs of `mixed_flow_keys` keys, each key's jobs together; every fourth key also has
    max_in_flight 1. Their keys, in the same order."""
    items, keys = [], []
    for number in range(plan.mixed_flow_keys):
        flow: dict[str, Any] = {"key": key_name(number), "rate": plan.mixed_flow_rate}
        if number % 4 == 0:
            flow["max_in_flight"] = 1
        for _ in range(plan.mixed_flow_jobs):
            items.append(
                {"timestamp": rfc3339(due), "endpoint": FLOWS, "flow": flow, "body": {"k": number}}
            )
            keys.append(key_name(number))
    return items, keys


def measure(system: System, collector: Collector, plan: Plan, dispatchers: int) -> dict[str, Any]:
    """Every endpoint's backlog due at one instant, the quiet endpoint's jobs one by one through
    the run, with `dispatchers` dispatchers (started here when fewer run)."""
    while len(system.workers) < dispatchers:
        system.add_worker()
    active = system.wait_workers_active(5.0)
    patch_limits(system, RATED, rate_limit=plan.mixed_rate)
    patch_limits(system, SLOTS, max_in_flight=plan.mixed_slots)
    skipped = probe_flow(system, FLOWS)
    collector.reset()
    start = due_after(plan.mixed_lead)
    moment = rfc3339(start)
    backlog = {
        BULK: plan.mixed_bulk,
        RATED: plan.mixed_rated_jobs,
        SLOTS: plan.mixed_slot_jobs,
        SLOW: plan.mixed_slow_jobs,
    }
    items: list[dict[str, Any]] = [
        {"timestamp": moment, "endpoint": name, "body": {"n": n}}
        for name, count in backlog.items()
        for n in range(count)
    ]
    quiet_dues = [
        start + n * plan.mixed_quiet_interval
        for n in range(round(plan.mixed_quiet_seconds / plan.mixed_quiet_interval))
    ]
    items += [
        {"timestamp": rfc3339(due), "endpoint": QUIET, "body": {"n": 0}} for due in quiet_dues
    ]
    dues = [start] * (len(items) - len(quiet_dues)) + quiet_dues
    flow_keys: list[str] = []
    if skipped is None:
        flow_items, flow_keys = _flow_items(plan, start)
        items += flow_items
        dues += [start] * len(flow_items)
    endpoints = [item["endpoint"] for item in items]
    began = time.time()
    ids = insert(system, items)
    inserted = time.time()
    job = {
        job_id: (endpoint, due) for job_id, endpoint, due in zip(ids, endpoints, dues, strict=True)
    }
    keys = dict(zip(ids[len(ids) - len(flow_keys) :], flow_keys, strict=True)) if flow_keys else {}
    meter = system.cpu_meter()
    time.sleep(max(0.0, start - time.time()))
    before = meter.read()
    deadline = max(quiet_dues, default=start) + plan.delivery_deadline
    wait_for(lambda: len(_arrived(collector, job)) >= len(job), deadline - time.time(), 0.25)
    cpu = stats.cpu_delta(before, meter.read())
    time.sleep(plan.settle)
    result = summarise(plan, start, job, keys, _arrived(collector, job))
    result.update(
        dispatchers=dispatchers,
        active_logged=active,
        insert_seconds=inserted - began,
        lead_s=start - inserted,
        cpu=cpu,
        flows_skipped=skipped,
        flows_listed=_flows_listed(system) if skipped is None else None,
    )
    collector.reset()
    return result


def _arrived(collector: Collector, job: dict[str, Any]) -> dict[str, list[list[Any]]]:
    found: dict[str, list[list[Any]]] = collections.defaultdict(list)
    for record in collector.fetch():
        if record[1] in job:
            found[record[1]].append(record)
    return found


def _flows_listed(system: System) -> int | None:
    """How many keys `GET /endpoints/flows/flows` lists, when it answers a list."""
    response = system.session.get(f"{system.url}/endpoints/{FLOWS}/flows", timeout=30)
    if response.status_code != 200:
        return None
    lists = [value for value in response.json().values() if isinstance(value, list)]
    return len(lists[0]) if lists else None


def summarise(
    plan: Plan,
    start: float,
    job: dict[str, tuple[str, float]],
    keys: dict[str, str],
    arrived: dict[str, list[list[Any]]],
) -> dict[str, Any]:
    """Per endpoint its starts, how well its limit was used and whether it was kept."""
    starts: dict[str, list[float]] = collections.defaultdict(list)
    spans: dict[str, list[limits.Interval]] = collections.defaultdict(list)
    lateness: list[float] = []
    for job_id, records in arrived.items():
        endpoint, due = job[job_id]
        first = min(records, key=lambda record: record[0])
        starts[endpoint].append(first[0])
        spans[endpoint] += [(record[0], record[-1]) for record in records]
        if endpoint == QUIET:
            lateness.append(first[0] - due)
    counted = collections.Counter(endpoint for endpoint, _ in job.values())
    width = plan.mixed_window
    out: dict[str, Any] = {
        "window_s": width,
        "slack_s": SLACK,
        "jobs": len(job),
        "delivered": len(arrived),
        "lost": len(job) - len(arrived),
        "duplicates": sum(len(records) - 1 for records in arrived.values()),
        "endpoints": {
            name: {
                "jobs": counted[name],
                "delivered": len(starts[name]),
                "last_s": max(starts[name]) - start if starts[name] else None,
            }
            for name in ENDPOINTS
            if counted[name]
        },
        "quiet_lateness_ms": stats.summary_ms(lateness),
        "quiet_series": sorted(
            (job[job_id][1] - start, min(r[0] for r in records) - job[job_id][1])
            for job_id, records in arrived.items()
            if job[job_id][0] == QUIET
        ),
        "per_second": {name: limits.per_second(times, start) for name, times in starts.items()},
    }
    pause = limits.longest_pause([t for times in starts.values() for t in times], start)
    out["longest_pause"] = {"from_s": pause[0] - start, "seconds": pause[1] - pause[0]}
    unlimited = limits.reached_rate(starts[BULK], start)
    out["unlimited_rate"] = unlimited
    rated_spans = limits.windows(start, width, max(starts[RATED], default=start))
    allowed_rate = min(plan.mixed_rate, unlimited)
    out["rated"] = {
        "rate": plan.mixed_rate,
        "reached": limits.reached_rate(starts[RATED], start),
        "allowed_rate": allowed_rate,
        "spans": rated_spans,
        "ratios": limits.window_ratios(
            starts[RATED], rated_spans, [allowed_rate * width] * len(rated_spans)
        ),
        "bound_use": limits.rate_bound_use(starts[RATED], plan.mixed_rate, SLACK),
        "peak": _peak(starts[RATED], plan.mixed_rate, start),
    }
    slot_spans = limits.windows(start, width, max(starts[SLOTS], default=start))
    busy_span = (start + width, max(starts[SLOTS], default=start))
    out["slots"] = {
        "max_in_flight": plan.mixed_slots,
        "answer_s": plan.mixed_slot_seconds,
        "reached": limits.reached_rate(starts[SLOTS], start),
        "busy": limits.busy_fraction(spans[SLOTS], busy_span, plan.mixed_slots),
        "busy_windows": [
            limits.busy_fraction(spans[SLOTS], span, plan.mixed_slots) for span in slot_spans
        ],
        "busy_span_s": max(0.0, busy_span[1] - busy_span[0]),
        "max_concurrent": limits.max_concurrent(spans[SLOTS]),
    }
    out["flows"] = (
        _flow_figures(plan, start, keys, arrived, starts[FLOWS], unlimited) if keys else None
    )
    return out


def _peak(starts: list[float], rate: float, start: float) -> dict[str, float]:
    """Where the most starts beyond `rate` times the window's length were seen."""
    excess, count, (low, high) = limits.peak_window(starts, rate)
    return {"excess": excess, "starts": count, "from_s": low - start, "span_s": high - low}


def _flow_figures(
    plan: Plan,
    start: float,
    keys: dict[str, str],
    arrived: dict[str, list[list[Any]]],
    starts: list[float],
    unlimited: float,
) -> dict[str, Any]:
    """The flows endpoint's windows against what its keys with a backlog allowed, and each key's
    bounds: its rate, and one request at a time for the keys with max_in_flight 1."""
    by_key: dict[str, list[float]] = collections.defaultdict(list)
    spans_by_key: dict[str, list[limits.Interval]] = collections.defaultdict(list)
    for job_id, key in keys.items():
        for record in arrived.get(job_id, []):
            by_key[key].append(record[0])
            spans_by_key[key].append((record[0], record[-1]))
    width = plan.mixed_window
    spans = limits.windows(start, width, max(starts, default=start))
    last = [max(times) for times in by_key.values()]
    allowed = [
        min(limits.backlog_capacity(last, plan.mixed_flow_rate, span), unlimited * width)
        for span in spans
    ]
    single = {key_name(n) for n in range(0, plan.mixed_flow_keys, 4)}
    uses = {
        key: limits.rate_bound_use(times, plan.mixed_flow_rate, SLACK)
        for key, times in by_key.items()
    }
    worst_key = max(uses, key=lambda key: uses[key], default=None)
    return {
        "keys": plan.mixed_flow_keys,
        "rate": plan.mixed_flow_rate,
        "reached": limits.reached_rate(starts, start),
        "spans": spans,
        "allowed": allowed,
        "ratios": limits.window_ratios(starts, spans, allowed),
        "bound_use": uses[worst_key] if worst_key else math.nan,
        "worst_key": worst_key,
        "worst_peak": _peak(by_key[worst_key], plan.mixed_flow_rate, start) if worst_key else None,
        "keys_over_rate": sum(use > 1 for use in uses.values()),
        "single_keys": len(single),
        "single_max_concurrent": max(
            (limits.max_concurrent(spans_by_key[key]) for key in single), default=0
        ),
    }


def flow_cost(system: System, collector: Collector, plan: Plan) -> dict[str, Any]:
    """`flow_cost_jobs` jobs due at one instant on one endpoint, spread over few flow keys, then
    as many over many keys, with one dispatcher: what each delivery cost PostgreSQL and the wall
    clock, and the time the dispatcher spent in claims. Each round starts on vacuumed tables."""
    skipped = probe_flow(system, COST_ENDPOINT)
    if skipped is not None:
        return {"skipped": skipped}
    rounds = {
        str(count): _cost_round(system, collector, plan, count) for count in plan.flow_cost_keys
    }
    return {"keys": list(plan.flow_cost_keys), "jobs": plan.flow_cost_jobs, "rounds": rounds}


def _cost_round(system: System, collector: Collector, plan: Plan, count: int) -> dict[str, Any]:
    collector.reset()
    system.quiesce()
    start = due_after(plan.mixed_lead)
    moment = rfc3339(start)
    items = [
        {
            "timestamp": moment,
            "endpoint": COST_ENDPOINT,
            "flow": {"key": f"c{count}-{n % count}", "rate": COST_RATE},
            "body": {"n": n},
        }
        for n in range(plan.flow_cost_jobs)
    ]
    ids = insert(system, items)
    job = {job_id: (COST_ENDPOINT, start) for job_id in ids}
    scraped = system.scrape_metrics()
    meter = system.cpu_meter()
    time.sleep(max(0.0, start - time.time()))
    before = meter.read()
    wait_for(
        lambda: len(_arrived(collector, job)) >= len(job),
        start + plan.delivery_deadline - time.time(),
        0.25,
    )
    cpu = stats.cpu_delta(before, meter.read())
    time.sleep(plan.settle)
    arrived = _arrived(collector, job)
    last = max((record[0] for records in arrived.values() for record in records), default=start)
    delivered = len(arrived)
    wait_for(lambda: _claims(system, scraped)[1] >= delivered, METRICS_CATCH_UP, 0.1)
    claims, counted = _claims(system, scraped)
    claim_seconds = _claim_seconds(system, scraped)
    collector.reset()
    return {
        "keys": count,
        "jobs": len(job),
        "delivered": delivered,
        "lost": len(job) - delivered,
        "duplicates": sum(len(records) - 1 for records in arrived.values()),
        "wall_s": last - start,
        "cpu": cpu,
        "claims_per_delivery": claims / counted if counted else None,
        "claim_ms_per_delivery": (
            claim_seconds * 1000 / counted if counted and claim_seconds is not None else None
        ),
    }


def _claim_seconds(system: System, before: list[dict[str, float | None]]) -> float | None:
    """Seconds the dispatchers spent in claims since `before`; None when it is not exported."""
    spent = None
    for start, end in zip(before, system.scrape_metrics(), strict=True):
        if end["claim_seconds"] is not None:
            spent = (spent or 0.0) + end["claim_seconds"] - (start["claim_seconds"] or 0.0)
    return spent


def _claims(system: System, before: list[dict[str, float | None]]) -> tuple[float, float]:
    """Claim statements and deliveries the dispatchers counted since `before` (0 when none is
    exported)."""
    claims = counted = 0.0
    for start, end in zip(before, system.scrape_metrics(), strict=True):
        claims += (end["claims"] or 0.0) - (start["claims"] or 0.0)
        counted += (end["delivered"] or 0.0) - (start["delivered"] or 0.0)
    return claims, counted

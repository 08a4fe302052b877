"""The scenarios, each measured next to its ceiling in the same run; results are plain dicts."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import math
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.bench import loadgen, pool, spy, stats
from tests.bench.receiver import ReceiverProcess
from tests.bench.system import (
    HEADERS,
    RssSampler,
    System,
    bulk_load,
    children,
    rfc3339,
)

FAR_FUTURE = "2100-01-01T00:00:00Z"
INSERT_BODY = json.dumps({"timestamp": FAR_FUTURE, "body": {"order": 42, "note": "benchmark"}})
PROBE_DUE_SECONDS = 1.0
CRON_FIRST_TICK_TIMEOUT = 60.0
CRON_STALL_SECONDS = 5.0
ROUND_WARMUP = 0.5
# How long a dispatcher started beside an active one may take to log that it is active too (the
# single-leader dispatcher's standby never does).
ACTIVE_GRACE = 5.0
# The steady window is judged in this many consecutive rounds, so a reader sees its spread.
STEADY_ROUNDS = 3
# How long the dispatchers' delivered counters may lag the receiver (outcomes are batched).
METRICS_CATCH_UP = 10.0


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes and durations; FULL is the documented benchmark, QUICK the smoke test's."""

    name: str
    clients: tuple[int, ...]
    load_seconds: float
    warmup: float
    accept_rounds: int
    accept_round_seconds: float
    batch_clients: int
    batch_size: int
    burst_jobs: int
    burst_lead: float
    burst_runs: int
    steady_lead: float
    steady_rate: int
    steady_seconds: int
    backlog: int
    cron_count: int
    cron_seconds: int
    settle: float
    delivery_deadline: float
    dashboard_jobs: int
    dashboard_requests: int
    # Retention: dispatchers delivering all the time with a short retention; measured after
    # `retention_settle` seconds (two retention periods in the full plan), in rounds.
    retention_dispatchers: int
    retention_settle: float
    retention_rounds: int
    retention_round_seconds: float
    retention_sample_seconds: float
    # Delivered jobs finished an hour ago, loaded first so that a short run has history to prune.
    retention_seed: int
    # Mixed (tests/bench/mixed.py): backlogs due at one instant on an unlimited endpoint, a
    # rate-limited one, a max_in_flight one answering in `mixed_slot_seconds` and one answering
    # in `mixed_slow_seconds`; a quiet endpoint's job due every `mixed_quiet_interval` for
    # `mixed_quiet_seconds`; `mixed_flow_jobs` jobs for each of `mixed_flow_keys` flow keys.
    # Limits are judged in windows of `mixed_window` seconds.
    mixed_lead: float
    mixed_window: float
    mixed_bulk: int
    mixed_rate: float
    mixed_rated_jobs: int
    mixed_slots: int
    mixed_slot_seconds: float
    mixed_slot_jobs: int
    mixed_slow_seconds: float
    mixed_slow_jobs: int
    mixed_quiet_interval: float
    mixed_quiet_seconds: float
    mixed_flow_keys: int
    mixed_flow_rate: float
    mixed_flow_jobs: int
    # The cost of flow keys: `flow_cost_jobs` jobs over each number of keys in turn.
    flow_cost_keys: tuple[int, ...]
    flow_cost_jobs: int
    # Crons at scale (tests/bench/crons.py), their endpoint paused: `cron_scale_count` every-second
    # crons in one POST /cron, then as many sharing the boundaries of `cron_boundary_spec`, set at
    # least `cron_boundary_lead` seconds before one; `cron_seconds_count` every-second crons for
    # `cron_seconds_window` seconds, then their leader killed and `cron_failover_after` seconds
    # recorded by the next. The leader is given `cron_catch_up` seconds to record what is owed.
    cron_scale_count: int
    cron_boundary_spec: str
    cron_boundary_lead: float
    cron_seconds_count: int
    cron_seconds_window: int
    cron_failover_after: int
    cron_catch_up: float
    # Through a transaction-mode pooler (tests/bench/pooled.py): single jobs due now, inserted
    # for `due_now_seconds`, each a random time in `due_now_spacing` seconds after the last.
    due_now_seconds: float
    due_now_spacing: tuple[float, float]


FULL = Plan(
    name="full",
    clients=(8, 32),
    load_seconds=10,
    warmup=2,
    # Load on a shared two-core machine drifts by a quarter within minutes: alternating short
    # rounds of the no-op and the insert expose both to the same drift.
    accept_rounds=5,
    accept_round_seconds=4,
    batch_clients=4,
    batch_size=1000,
    # Jobs per burst: `burst_runs` bursts with 1 dispatcher and as many with 2, each followed
    # by its ceiling.
    burst_jobs=5_000,
    # Inserting takes a second or two; the rest of the lead is the dispatchers' to prepare in.
    burst_lead=10,
    burst_runs=3,
    steady_lead=30,
    steady_rate=200,
    steady_seconds=60,
    backlog=1_000_000,
    cron_count=300,
    cron_seconds=60,
    settle=2,
    delivery_deadline=300,
    dashboard_jobs=1_000_000,
    dashboard_requests=20,
    retention_dispatchers=2,
    retention_settle=120,
    retention_rounds=3,
    retention_round_seconds=60,
    retention_sample_seconds=5,
    retention_seed=0,
    mixed_lead=15,
    mixed_window=5,
    mixed_bulk=10_000,
    mixed_rate=50,
    # About 40 s of backlog at the limit, as for the max_in_flight endpoint (4 / 0.1 s).
    mixed_rated_jobs=2_000,
    mixed_slots=4,
    mixed_slot_seconds=0.1,
    mixed_slot_jobs=1_600,
    mixed_slow_seconds=6,
    mixed_slow_jobs=40,
    mixed_quiet_interval=0.1,
    mixed_quiet_seconds=40,
    mixed_flow_keys=1_000,
    mixed_flow_rate=2,
    mixed_flow_jobs=10,
    flow_cost_keys=(10, 10_000),
    flow_cost_jobs=20_000,
    cron_scale_count=10_000,
    cron_boundary_spec="0 * * * * *",
    cron_boundary_lead=5,
    cron_seconds_count=4_000,
    cron_seconds_window=120,
    cron_failover_after=5,
    cron_catch_up=60,
    # About a hundred jobs, at random phases of the dispatcher's look.
    due_now_seconds=30,
    due_now_spacing=(0.2, 0.4),
)
QUICK = Plan(
    name="quick",
    clients=(8, 32),
    load_seconds=1,
    warmup=0,
    accept_rounds=2,
    accept_round_seconds=0.5,
    batch_clients=2,
    batch_size=1000,
    burst_jobs=300,
    burst_lead=1.5,
    burst_runs=1,
    steady_lead=1.5,
    steady_rate=200,
    steady_seconds=1,
    backlog=10_000,
    cron_count=20,
    cron_seconds=2,
    settle=0.2,
    delivery_deadline=60,
    dashboard_jobs=20_000,
    dashboard_requests=2,
    retention_dispatchers=2,
    retention_settle=1,
    retention_rounds=3,
    # Long enough that each round holds a pass of pruning (one per 2 s heartbeat interval).
    retention_round_seconds=3.5,
    retention_sample_seconds=0.5,
    retention_seed=20_000,
    mixed_lead=3,
    mixed_window=1,
    mixed_bulk=1_000,
    mixed_rate=50,
    mixed_rated_jobs=250,
    mixed_slots=4,
    mixed_slot_seconds=0.1,
    mixed_slot_jobs=200,
    mixed_slow_seconds=2,
    mixed_slow_jobs=4,
    mixed_quiet_interval=0.1,
    mixed_quiet_seconds=3,
    mixed_flow_keys=100,
    mixed_flow_rate=2,
    # Enough for the keys to take three 1 s windows at their rate, so one is judged.
    mixed_flow_jobs=8,
    flow_cost_keys=(10, 500),
    flow_cost_jobs=1_000,
    cron_scale_count=200,
    cron_boundary_spec="*/5 * * * * *",
    cron_boundary_lead=1,
    cron_seconds_count=100,
    cron_seconds_window=3,
    cron_failover_after=2,
    cron_catch_up=20,
    due_now_seconds=3,
    due_now_spacing=(0.2, 0.4),
)


def epoch(rfc: str) -> float:
    return dt.datetime.fromisoformat(rfc.replace("Z", "+00:00")).timestamp()


def utc(moment: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(moment, dt.UTC)


def due_after(seconds: float) -> float:
    """An instant `seconds` from now, on a whole millisecond as Scheduler-Scheduled-At shows it."""
    return math.ceil((time.time() + seconds) * 1000) / 1000


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> bool:
    """Poll until `predicate` is truthy or `timeout` passes; whether it came true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


class Collector:
    """The receiver's records, fetched incrementally."""

    def __init__(self, receiver: ReceiverProcess) -> None:
        self.receiver = receiver
        self.records: list[list[Any]] = []

    def reset(self) -> None:
        self.receiver.reset()
        self.records = []

    def fetch(self) -> list[list[Any]]:
        self.records.extend(self.receiver.records(len(self.records)))
        return self.records

    def arrivals(self, ids: dict[str, float]) -> dict[str, list[float]]:
        found: dict[str, list[float]] = collections.defaultdict(list)
        for record in self.fetch():
            if record[1] in ids:
                found[record[1]].append(record[0])
        return found


def delivery_summary(ids: dict[str, float], arrivals: dict[str, list[float]]) -> dict[str, Any]:
    """Lateness of each job's first arrival, and how many were lost or repeated."""
    lateness = [min(times) - ids[job_id] for job_id, times in arrivals.items()]
    return {
        "jobs": len(ids),
        "delivered": len(arrivals),
        "lost": len(ids) - len(arrivals),
        "duplicates": sum(len(times) - 1 for times in arrivals.values()),
        "lateness_ms": stats.summary_ms(lateness),
        "lateness_s": sorted(lateness),
    }


def wait_delivered(
    collector: Collector, ids: dict[str, float], until: float, settle: float
) -> dict[str, list[float]]:
    """Poll the receiver until every job arrived (or `until`), then a little longer for repeats."""
    wait_for(lambda: len(collector.arrivals(ids)) >= len(ids), max(0.0, until - time.time()), 0.2)
    time.sleep(settle)
    return collector.arrivals(ids)


def job_states(system: System, ids: dict[str, float]) -> dict[str, int]:
    rows = system.query(
        "SELECT state || ' / attempts ' || attempts, count(*) FROM jobs WHERE id = ANY(%s) "
        "GROUP BY 1 ORDER BY 1",
        (list(ids),),
    )
    return {str(name): int(count) for name, count in rows}


# --- instruments --------------------------------------------------------------------------


def instruments(receiver: ReceiverProcess, plan: Plan, generator: str) -> dict[str, Any]:
    """The load generator's and the receiver's own ceilings."""
    generator_ceiling = {
        str(clients): _load(
            loadgen.run(
                loadgen.Load(receiver.null_url), clients, plan.load_seconds, plan.warmup, generator
            )
        )
        for clients in plan.clients
    }
    body, headers = pool.delivery_request(0)
    receiver_ceiling = loadgen.run(
        loadgen.Load(receiver.url, "POST", body, headers),
        16,
        plan.load_seconds,
        plan.warmup,
        generator,
    )
    receiver.reset()
    return {
        "generator": generator_ceiling,
        "receiver": _load(receiver_ceiling),
    }


def _load(result: loadgen.LoadResult, per_request: int = 1) -> dict[str, Any]:
    out = dataclasses.asdict(result)
    out["rate"] = result.rate * per_request
    return out


# --- 1 and 2: accepting jobs --------------------------------------------------------------


def accept(system: System, plan: Plan, generator: str, profiler: spy.Profiler) -> dict[str, Any]:
    """POST /insert next to GET /healthz on the same gunicorn, in alternating rounds, and raw
    psycopg inserts."""
    rows: dict[str, Any] = {}
    meter = system.cpu_meter().read
    noop_load = loadgen.Load(system.url + "/healthz")
    insert_load = loadgen.Load(system.url + "/insert", "POST", INSERT_BODY.encode(), HEADERS)
    for clients in plan.clients:
        noops, inserts = [], []
        for number in range(plan.accept_rounds):
            # Gunicorn is warm after the first round; later ones only open their connections.
            warmup = plan.warmup if number == 0 else min(plan.warmup, ROUND_WARMUP)
            seconds = plan.accept_round_seconds
            noops.append(loadgen.run(noop_load, clients, seconds, warmup, generator, meter))
            web_workers = lambda: children(system.web_pid)  # noqa: E731
            recording = (
                profiler.record(f"accept-{clients}-web", web_workers)
                if number == 0
                else contextlib.nullcontext()
            )
            with recording:
                inserts.append(loadgen.run(insert_load, clients, seconds, warmup, generator, meter))
        raw = loadgen.run_inserts(
            system.db_url, clients, plan.load_seconds, plan.warmup, meter=meter
        )
        rows[str(clients)] = {
            "noop": _rounds(noops),
            "insert": _rounds(inserts),
            "raw": _load(raw),
            "round_ratios": [
                stats.ratio(insert.rate, noop.rate)
                for noop, insert in zip(noops, inserts, strict=True)
            ],
        }
    return rows


def _sum_or_none(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return sum(present) if len(present) == len(values) else None


def _rounds(results: list[loadgen.LoadResult]) -> dict[str, Any]:
    """Rounds of one load as one: totals, the median round's p50 and the worst round's p99."""
    out = _load(results[0])
    out["seconds"] = sum(r.seconds for r in results)
    out["ok"] = sum(r.ok for r in results)
    out["failed"] = sum(r.failed for r in results)
    out["p50_ms"] = statistics.median(r.p50_ms for r in results)
    out["p99_ms"] = max(r.p99_ms for r in results)
    out["client_cpu_seconds"] = _sum_or_none([r.client_cpu_seconds for r in results])
    meters = [r.cpu for r in results]
    out["cpu"] = None
    if all(meters):
        parts = {part for meter in meters for part in meter}  # type: ignore[union-attr]
        out["cpu"] = {
            part: _sum_or_none([meter.get(part) for meter in meters])  # type: ignore[union-attr]
            for part in parts
        }
    out["rate"] = out["ok"] / out["seconds"] if out["seconds"] else 0.0
    out["rounds"] = len(results)
    return out


def batch_accept(system: System, plan: Plan, generator: str) -> dict[str, Any]:
    """POST /jobs/batch of `batch_size` jobs, next to raw multi-row transactions of that size."""
    items = [{"timestamp": FAR_FUTURE, "body": {"n": n}} for n in range(plan.batch_size)]
    body = json.dumps({"jobs": items}).encode()
    seconds = plan.load_seconds
    batch = loadgen.run(
        loadgen.Load(system.url + "/jobs/batch", "POST", body, HEADERS),
        plan.batch_clients,
        seconds,
        plan.warmup,
        generator,
    )
    raw = loadgen.run_inserts(
        system.db_url, plan.batch_clients, seconds, plan.warmup, rows=plan.batch_size
    )
    return {
        "clients": plan.batch_clients,
        "size": plan.batch_size,
        "api": _load(batch, plan.batch_size),
        "raw": _load(raw, plan.batch_size),
    }


# --- 3: a burst, with 1 and with 2 dispatchers -------------------------------------------


def burst_series(
    system: System,
    collector: Collector,
    plan: Plan,
    dispatchers: int,
    profiler: spy.Profiler,
    label: str = "burst",
) -> dict[str, Any]:
    """`burst_runs` bursts with `dispatchers` dispatcher processes running (started here when
    fewer run), each followed by the ceiling of as many requests pools; `label` names the
    profiles."""
    while len(system.workers) < dispatchers:
        system.add_worker()
    active = system.wait_workers_active(ACTIVE_GRACE)
    runs = []
    for number in range(plan.burst_runs):
        recording = (
            profiler.record(f"{label}-{dispatchers}", system.worker_pids)
            if number == 0
            else contextlib.nullcontext()
        )
        with recording:
            runs.append(burst(system, collector, plan, dispatchers))
    return {
        "dispatchers": dispatchers,
        "active_logged": active,
        "active_grace": ACTIVE_GRACE,
        "runs": runs,
        **_series(runs),
    }


def burst(system: System, collector: Collector, plan: Plan, dispatchers: int) -> dict[str, Any]:
    """`burst_jobs` jobs due at one instant, then as many requests pools as dispatchers, sending
    as many requests between them, on the same receiver."""
    collector.reset()
    scraped = system.scrape_metrics()
    instant = due_after(plan.burst_lead)
    started = time.time()
    ids = system.insert_due([instant] * plan.burst_jobs)
    inserted = time.time()
    meter = system.cpu_meter()
    time.sleep(max(0.0, instant - time.time()))
    before = meter.read()
    arrivals = wait_delivered(collector, ids, instant + plan.delivery_deadline, 0)
    cpu = stats.cpu_delta(before, meter.read())
    time.sleep(plan.settle)
    arrivals = collector.arrivals(ids)
    result = delivery_summary(ids, arrivals)
    result["cpu"] = cpu
    result["metrics"] = _metrics_delta(system, scraped, result["delivered"])
    last = max((max(times) for times in arrivals.values()), default=math.nan)
    first = min((min(times) for times in arrivals.values()), default=math.nan)
    result.update(
        dispatchers=dispatchers,
        insert_seconds=inserted - started,
        lead_s=instant - inserted,
        to_last_s=last - instant,
        to_first_s=first - instant,
        rate=result["delivered"] / (last - instant) if arrivals else 0.0,
        states=job_states(system, ids),
    )
    collector.reset()
    result["ceiling"] = pool.run(
        collector.receiver.url, system.settings.delivery_threads, plan.burst_jobs, dispatchers
    )
    result["ratio"] = stats.ratio(result["rate"], result["ceiling"]["rate"])
    collector.reset()
    return result


def _metrics_delta(
    system: System, before: list[dict[str, float | None]], delivered: int
) -> dict[str, Any]:
    """Claim statements and deliveries each dispatcher counted during the burst; None where a
    dispatcher does not export the counter."""

    def counted() -> list[dict[str, float | None]]:
        return [
            {name: _minus(end[name], start[name]) for name in ("claims", "delivered")}
            for start, end in zip(before, system.scrape_metrics(), strict=True)
        ]

    # Outcomes are recorded in batches, a moment after the receiver saw the last delivery.
    def caught_up() -> bool:
        found = [part["delivered"] for part in counted()]
        return None in found or sum(found) >= delivered  # type: ignore[arg-type]

    wait_for(caught_up, METRICS_CATCH_UP, 0.1)
    each = counted()
    return {
        "claims": [part["claims"] for part in each],
        "delivered": [part["delivered"] for part in each],
    }


def _minus(end: float | None, start: float | None) -> float | None:
    return None if end is None or start is None else end - start


def _total(values: list[float | None]) -> float | None:
    """The sum, or None when any is missing."""
    return None if not values or None in values else sum(values)  # type: ignore[arg-type]


def _series(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and ranges over the runs, totals of what was delivered, costs per delivery."""
    ratios = [run["ratio"] for run in runs]
    claims = _total([_total(run["metrics"]["claims"]) for run in runs])
    counted = _total([_total(run["metrics"]["delivered"]) for run in runs])
    cpu: dict[str, float | None] = {}
    for part in runs[0]["cpu"]:
        cpu[part] = _total([run["cpu"].get(part) for run in runs])
    by_dispatcher = [
        _total([run["metrics"]["delivered"][n] for run in runs])
        for n in range(len(runs[0]["metrics"]["delivered"]))
    ]
    return {
        "rate": statistics.median(run["rate"] for run in runs),
        "ceiling_rate": statistics.median(run["ceiling"]["rate"] for run in runs),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "jobs": sum(run["jobs"] for run in runs),
        "delivered": sum(run["delivered"] for run in runs),
        "lost": sum(run["lost"] for run in runs),
        "duplicates": sum(run["duplicates"] for run in runs),
        "claims_per_delivery": claims / counted if claims is not None and counted else None,
        "delivered_by_dispatcher": by_dispatcher,
        "cpu": cpu,
    }


# --- 4 and 5: steady lateness, with and without a backlog -----------------------------------


def steady_session(
    system: System,
    collector: Collector,
    plan: Plan,
    backlog: int,
    generator: str,
    profiler: spy.Profiler,
    label: str | None = None,
) -> dict[str, Any]:
    """Load the backlog, start the processes (timing the worker), measure inserts, then steady;
    `label` names the profiles (by default after the backlog)."""
    out: dict[str, Any] = {"backlog": backlog}
    if backlog:
        out["load_seconds"] = bulk_load(system.db_url, backlog)
    system.start_web()
    label = label or ("backlog" if backlog else "empty")
    out["startup"] = startup(system, collector, profiler, label)
    sampler = RssSampler(system.worker_pid)
    out["rss_after_start_kb"] = sampler.read()
    insert = loadgen.run(
        loadgen.Load(system.url + "/insert", "POST", INSERT_BODY.encode(), HEADERS),
        plan.clients[0],
        plan.load_seconds,
        plan.warmup,
        generator,
    )
    out["insert"] = _load(insert)
    with profiler.record(f"steady-{label}", lambda: [system.worker_pid]):
        out["steady"] = steady(system, collector, plan)
    out["rss_peak_kb"] = sampler.stop()
    return out


def startup(
    system: System, collector: Collector, profiler: spy.Profiler, label: str
) -> dict[str, Any]:
    """Seconds from the worker's exec to its "dispatcher active" line and to the delivery of a
    job due one second after it started (no log line marks the end of its first reconcile)."""
    collector.reset()
    probe_due = time.time() + PROBE_DUE_SECONDS
    probe = system.insert(probe_due, {"probe": "startup"})
    system.start_worker()
    started = system.worker_started
    found: dict[str, float] = {}

    def milestones() -> bool:
        if "active" not in found and "dispatcher active" in system.worker_output():
            found["active"] = time.time() - started
        if "probe" not in found:
            arrivals = collector.arrivals({probe: probe_due})
            if arrivals:
                found["probe"] = min(arrivals[probe]) - started
        return len(found) == 2

    with profiler.record(f"startup-{label}", lambda: [system.worker_pid]):
        wait_for(milestones, timeout=300, interval=0.02)
    return {
        "active_s": found.get("active"),
        "probe_delivered_s": found.get("probe"),
        "probe_due_s": probe_due - started,
    }


def steady(system: System, collector: Collector, plan: Plan) -> dict[str, Any]:
    """Jobs due evenly at `steady_rate` per second for `steady_seconds`, inserted ahead."""
    collector.reset()
    first = due_after(plan.steady_lead)
    count = plan.steady_rate * plan.steady_seconds
    dues = [first + index / plan.steady_rate for index in range(count)]
    ids = system.insert_due(dues)
    inserted = time.time()
    meter = system.cpu_meter()
    time.sleep(max(0.0, first - time.time()))
    before = meter.read()
    # CPU read at each round's end too, from a thread, while the deliveries are awaited.
    length = plan.steady_seconds / STEADY_ROUNDS
    readings: list[dict[str, float | None]] = []
    reader = threading.Thread(
        target=_read_at,
        args=(meter, [first + length * k for k in range(1, STEADY_ROUNDS)], readings),
    )
    reader.start()
    arrivals = wait_delivered(collector, ids, dues[-1] + plan.delivery_deadline, 0)
    reader.join()
    end = meter.read()
    cpu = stats.cpu_delta(before, end)
    time.sleep(plan.settle)
    arrivals = collector.arrivals(ids)
    result = delivery_summary(ids, arrivals)
    result["cpu"] = cpu
    result["lead_s"] = first - inserted
    result["series"] = sorted(
        (ids[job_id] - first, min(times) - ids[job_id]) for job_id, times in arrivals.items()
    )
    bounds = [before, *readings, end]
    result["rounds"] = [
        {
            "cpu": stats.cpu_delta(start, stop),
            "jobs": count // STEADY_ROUNDS,
            "lateness_ms": stats.summary_ms(
                [
                    late
                    for offset, late in result["series"]
                    if k * length <= offset < (k + 1) * length
                ]
            ),
        }
        for k, (start, stop) in enumerate(itertools.pairwise(bounds))
    ]
    return result


def _read_at(meter: Any, moments: list[float], readings: list[dict[str, float | None]]) -> None:
    for moment in moments:
        time.sleep(max(0.0, moment - time.time()))
        readings.append(meter.read())


# --- 6: crons -------------------------------------------------------------------------------


def cron_load(system: System, collector: Collector, plan: Plan) -> dict[str, Any]:
    """`cron_count` every-second crons for `cron_seconds`: ticks fired, missed and repeated."""
    collector.reset()
    names = [f"bench{index:03d}" for index in range(plan.cron_count)]
    created = time.time()
    system.put_crons([{"id": name, "spec": "* * * * * *"} for name in names])

    def fired() -> int:
        """How many of the crons recorded a tick since they were created."""
        rows = system.query(
            "SELECT count(*) FROM crons WHERE id = ANY(%s) AND last_fire_at >= %s",
            (names, utc(math.floor(created))),
        )
        return int(rows[0][0])

    all_fired = wait_for(lambda: fired() >= len(names), CRON_FIRST_TICK_TIMEOUT, 0.25)
    first_ticks_s = time.time() - created if all_fired else None
    start = math.ceil(time.time() + 1)
    end = start + plan.cron_seconds
    expected = {(name, float(start + n)) for name in names for n in range(plan.cron_seconds)}

    def ticks() -> dict[tuple[str, float], list[float]]:
        seen: dict[tuple[str, float], list[float]] = collections.defaultdict(list)
        for arrived, _, scheduled_at, _, body, *_ in collector.fetch():
            cron_id = json.loads(body).get("cron_id") if body else None
            if cron_id and start <= (due := epoch(scheduled_at)) < end:
                seen[(cron_id, due)].append(arrived)
        return seen

    progress = {"recorded": -1, "changed": time.monotonic()}

    def drained() -> bool:
        # The crons keep firing past the window, as they would in production. No tick inside it
        # can still be recorded once every cron recorded one at or after its end, or once none
        # was recorded for a while (a cron without a timer never will); once no recorded tick
        # waits to be sent, the receiver has all it will get.
        behind, recorded, waiting = system.query(
            """
            SELECT (SELECT count(*) FROM crons
                    WHERE id = ANY(%(names)s) AND (last_fire_at IS NULL OR last_fire_at < %(end)s)),
                   count(*),
                   count(*) FILTER (WHERE state IN ('scheduled', 'delivering'))
            FROM jobs WHERE cron_id = ANY(%(names)s) AND run_at >= %(start)s AND run_at < %(end)s
            """,
            {"names": names, "start": utc(start), "end": utc(end)},
        )[0]
        if recorded != progress["recorded"]:
            progress.update(recorded=recorded, changed=time.monotonic())
        stalled = time.monotonic() - progress["changed"] > CRON_STALL_SECONDS
        return waiting == 0 and (behind == 0 or stalled)

    meter = system.cpu_meter()
    time.sleep(max(0.0, start - time.time()))
    before = meter.read()
    fired_at_start = fired()
    time.sleep(max(0.0, end - time.time()))
    cpu = stats.cpu_delta(before, meter.read())
    wait_for(drained, plan.delivery_deadline, 0.25)
    time.sleep(plan.settle)
    seen = ticks()
    recorded = system.query(
        "SELECT count(*) FROM jobs WHERE cron_id = ANY(%s) AND run_at >= %s AND run_at < %s",
        (names, utc(start), utc(end)),
    )[0][0]
    system.put_crons([])
    lateness = [min(times) - due for (_, due), times in seen.items()]
    return {
        "crons": plan.cron_count,
        "seconds": plan.cron_seconds,
        "window": [rfc3339(start), rfc3339(end)],
        "expected": len(expected),
        "recorded": int(recorded),
        "delivered": len(seen.keys() & expected),
        "missed": len(expected - seen.keys()),
        "duplicated": sum(len(times) - 1 for times in seen.values()),
        "fires_per_s": len(seen.keys() & expected) / plan.cron_seconds,
        "lateness_ms": stats.summary_ms(lateness),
        "cpu": cpu,
        "first_ticks_s": first_ticks_s,
        "fired_at_start": fired_at_start,
    }

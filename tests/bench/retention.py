"""Retention under sustained delivery: dispatchers delivering as fast as they can for minutes with
a short SCHEDULER_RETENTION, and whether history stays bounded, in rows and on disk, with the rate
pruning runs at beside the delivery rate."""

from __future__ import annotations

import collections
import math
import statistics
import threading
import time
from typing import Any

import psycopg

from tests.bench import stats
from tests.bench.scenarios import ACTIVE_GRACE, Collector, Plan, wait_for
from tests.bench.system import System, rfc3339

# The shortest retention the scheduler accepts.
RETENTION_SECONDS = 60
# Jobs per POST /jobs/batch of the feeder, and the due backlog it keeps: the dispatchers always
# find work waiting, so they deliver at the highest rate they can.
FEED_BATCH = 1000
FEED_LOW_WATER = 3000
WAITING = "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'scheduled' LIMIT %s) AS waiting"
TABLES = ("jobs", "delivery_attempts")
# History may hold what was delivered within the retention and two reconcile intervals, with
# this margin (the bound).
ROWS_MARGIN = 1.2


def env() -> dict[str, str]:
    """The settings the scenario's processes run with, over the defaults."""
    return {"SCHEDULER_RETENTION": str(RETENTION_SECONDS)}


class Feeder:
    """Keeps FEED_LOW_WATER jobs due and waiting, topped up through POST /jobs/batch from a
    thread; remembers each job's id and when it was due."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.ids: dict[str, float] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        if self.error is not None:
            raise RuntimeError("the feeder failed") from self.error

    def _run(self) -> None:
        try:
            with psycopg.connect(self.system.db_url, autocommit=True) as conn:
                while not self._stop.is_set():
                    row = conn.execute(WAITING, (FEED_LOW_WATER,)).fetchone()
                    if row is not None and row[0] >= FEED_LOW_WATER:
                        self._stop.wait(0.05)
                        continue
                    due = time.time()
                    first = len(self.ids)
                    items = [
                        {"timestamp": rfc3339(due), "body": {"n": first + n}}
                        for n in range(FEED_BATCH)
                    ]
                    for job_id in self.system.insert_batch(items):
                        self.ids[job_id] = due
        except BaseException as exc:
            self.error = exc


class Arrivals:
    """How often each delivery id reached the receiver, fetched incrementally (the receiver keeps
    every record; this keeps only the counts)."""

    def __init__(self, collector: Collector) -> None:
        self.receiver = collector.receiver
        self.fetched = 0
        self.counts: collections.Counter[str] = collections.Counter()

    def fetch(self) -> int:
        """Fetch what arrived since the last call; how many arrived in all."""
        records = self.receiver.records(self.fetched)
        self.fetched += len(records)
        self.counts.update(record[1] for record in records)
        return self.fetched


def seed_history(db_url: str, count: int) -> None:
    """`count` delivered jobs, each with its attempt, finished an hour ago: history past its
    retention from the start, for a run too short to age its own."""
    if not count:
        return
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, attempts, state,
                              last_status, finished_at)
            SELECT 'seed' || lpad(n::text, 22, '0'), jsonb_build_object('n', n), t, t, 3, 1,
                   'delivered', 200, t
            FROM generate_series(1, %(count)s) AS n,
                 LATERAL (SELECT now() - interval '1 hour' + n * interval '1 ms') AS x(t)
            """,
            {"count": count},
        )
        conn.execute(
            "INSERT INTO delivery_attempts (job_id, attempt, started_at, duration_ms, status_code)"
            " SELECT id, 1, finished_at, 5, 200 FROM jobs"
        )
        for table in TABLES:
            conn.execute(f"VACUUM (ANALYZE) {table}")


def sample(system: System, arrivals: Arrivals) -> dict[str, float]:
    """The counters and the tables at one moment."""
    scraped = system.scrape_metrics()
    jobs, attempts, size = system.query(
        "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM delivery_attempts), "
        "pg_total_relation_size('jobs') + pg_total_relation_size('delivery_attempts')"
    )[0]
    return {
        "t": time.time(),
        "arrived": arrivals.fetch(),
        "pruned": sum(part["pruned"] or 0.0 for part in scraped),
        "prune_seconds": sum(part["prune_seconds"] or 0.0 for part in scraped),
        "jobs": int(jobs),
        "attempts": int(attempts),
        "bytes": int(size),
    }


def window(samples: list[dict[str, float]]) -> dict[str, float]:
    """Rates and peaks between the first and the last of `samples`."""
    first, last = samples[0], samples[-1]
    seconds = last["t"] - first["t"]
    pruned = last["pruned"] - first["pruned"]
    prune_seconds = last["prune_seconds"] - first["prune_seconds"]
    delivery_rate = stats.ratio(last["arrived"] - first["arrived"], seconds)
    prune_rate = stats.ratio(pruned, prune_seconds)
    return {
        "seconds": seconds,
        "arrived": last["arrived"] - first["arrived"],
        "delivery_rate": delivery_rate,
        "prune_rate": prune_rate,
        "prune_ratio": stats.ratio(prune_rate, delivery_rate),
        "pruned_per_s": stats.ratio(pruned, seconds),
        "peak_jobs": max(s["jobs"] for s in samples),
        "peak_attempts": max(s["attempts"] for s in samples),
        "mb_end": last["bytes"] / 1024 / 1024,
    }


def spread(rounds: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [r[key] for r in rounds if not math.isnan(r[key])]
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(system: System, collector: Collector, plan: Plan) -> dict[str, Any]:
    """Sustained delivery by `retention_dispatchers` dispatchers for `retention_settle` seconds,
    then `retention_rounds` rounds measured; then every job fed must arrive exactly once."""
    collector.reset()
    seed_history(system.db_url, plan.retention_seed)
    system.start_web()
    system.start_worker()
    while len(system.workers) < plan.retention_dispatchers:
        system.add_worker()
    active = system.wait_workers_active(ACTIVE_GRACE)
    arrivals = Arrivals(collector)
    feeder = Feeder(system)
    step = plan.retention_sample_seconds
    per_round = max(1, round(plan.retention_round_seconds / step))
    started = time.time()
    feeder.start()
    measure_from = started + plan.retention_settle
    ticks = [measure_from + k * step for k in range(-int(plan.retention_settle / step), 1)]
    ticks += [measure_from + k * step for k in range(1, per_round * plan.retention_rounds + 1)]
    first = len(ticks) - per_round * plan.retention_rounds - 1
    meter = system.cpu_meter()
    samples: list[dict[str, float]] = []
    cpu_before: dict[str, float | None] = {}
    try:
        for number, tick in enumerate(ticks):
            time.sleep(max(0.0, tick - time.time()))
            if number == first:
                cpu_before = meter.read()
            samples.append(sample(system, arrivals))
        cpu = stats.cpu_delta(cpu_before, meter.read())
    finally:
        feeder.stop()
    measured = samples[first:]
    rounds = [
        window(measured[r * per_round : (r + 1) * per_round + 1])
        for r in range(plan.retention_rounds)
    ]
    whole = window(measured)
    ids = feeder.ids
    wait_for(
        lambda: arrivals.fetch() >= len(ids) and not ids.keys() - arrivals.counts.keys(),
        plan.delivery_deadline,
        0.5,
    )
    time.sleep(plan.settle)
    arrivals.fetch()
    reconcile = system.settings.reconcile_interval
    bound = whole["delivery_rate"] * (RETENTION_SECONDS + 2 * reconcile)
    vacuums = system.query(
        "SELECT relname, autovacuum_count, n_dead_tup FROM pg_stat_user_tables "
        "WHERE relname = ANY(%s) ORDER BY relname",
        (list(TABLES),),
    )
    return {
        "retention_s": RETENTION_SECONDS,
        "reconcile_s": reconcile,
        "dispatchers": len(system.workers),
        "active_logged": active,
        "seed": plan.retention_seed,
        "settle_s": measured[0]["t"] - started,
        "sustained_s": measured[-1]["t"] - started,
        "rounds": rounds,
        "whole": whole,
        "spread": {
            key: spread(rounds, key)
            for key in ("delivery_rate", "prune_rate", "prune_ratio", "peak_jobs", "mb_end")
        },
        "bound_rows": ROWS_MARGIN * bound,
        "rows_ratio": stats.ratio(max(whole["peak_jobs"], whole["peak_attempts"]), bound),
        "mb_start": measured[0]["bytes"] / 1024 / 1024,
        "growth": stats.ratio(measured[-1]["bytes"], measured[0]["bytes"]) - 1,
        "jobs": len(ids),
        "delivered": sum(1 for job_id in ids if arrivals.counts[job_id]),
        "lost": sum(1 for job_id in ids if not arrivals.counts[job_id]),
        "duplicates": sum(arrivals.counts[job_id] - 1 for job_id in ids if arrivals.counts[job_id]),
        "vacuums": {name: {"autovacuums": int(n), "dead_rows": int(d)} for name, n, d in vacuums},
        "cpu": cpu,
        "samples": samples,
    }

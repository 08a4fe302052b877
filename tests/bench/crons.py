"""Scenario 10: crons at scale, with their endpoint paused, so that what is measured is the leader
recording ticks (a job row per cron and tick), not their delivery.

- `boundary`: `cron_scale_count` every-second crons in one `POST /cron`, how long it takes to
  answer and how soon after its answer each cron's first tick is recorded; then as many crons of
  other ids, sharing a boundary (`cron_boundary_spec`, every minute in the full plan), and how
  late their tick at the next boundary is recorded.
- `EverySecond.measure`: `cron_seconds_count` every-second crons for `cron_seconds_window`
  seconds, two dispatchers running; `EverySecond.failover`: the leader is killed (SIGKILL) and
  every tick each cron was owed from the start of its schedule on must have one row.

A tick's record time is its job's `created_at`, the start of the transaction that recorded it;
a reader also polls one cron's `last_fire_at`, which moves in the same statement, to see when
the rows became visible to others (the commit). What is owed is computed from each cron's spec
with the scheduler's own cron code, from the start of its schedule (`updated_at`).
"""

from __future__ import annotations

import bisect
import collections
import datetime as dt
import functools
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import psycopg

from scheduler import cron
from tests.bench import spy, stats
from tests.bench.scenarios import (
    CRON_FIRST_TICK_TIMEOUT,
    CRON_STALL_SECONDS,
    Plan,
    utc,
    wait_for,
)
from tests.bench.system import System

EVERY_SECOND = "* * * * * *"
# Ticks of the crons' default endpoint are recorded and never sent while it is paused.
PAUSED_ENDPOINT = "default"
# How often the reader looks at a cron's last_fire_at: the resolution of "seen".
WATCH_SECONDS = 0.05
# The CPU windows open and close this long before a tick, so that each holds whole ticks' work.
CPU_LEAD = 0.5
# A bound for fire_times_between that no window of this scenario comes near.
MOST_TICKS = 10_000_000
_JUST_AFTER = dt.timedelta(microseconds=1)
_parsed_spec = functools.lru_cache(maxsize=64)(cron.parse_spec)


class Schedule(NamedTuple):
    """Running crons that share a spec and the start of their schedule."""

    spec: str
    updated_at: dt.datetime
    crons: int


class Recorded(NamedTuple):
    """Rows of ticks with the same tick, record time and state, of the crons of one Schedule."""

    spec: str
    updated_at: dt.datetime
    run_at: dt.datetime
    created_at: dt.datetime
    state: str
    rows: int


class Window(NamedTuple):
    """A measured stretch: CPU by part, the leader's part, its bounds (epoch) and what the
    stretch waited for."""

    cpu: dict[str, Any]
    leader_part: str | None
    began: float
    ended: float
    outcome: Any


def cron_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{number:05d}" for number in range(count)]


def expected_ticks(spec: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The fire times t of `spec` with start <= t < end."""
    return cron.fire_times_between(_parsed_spec(spec), start, end, MOST_TICKS)


def summarise_ticks(
    schedules: Sequence[Schedule],
    recorded: Sequence[Recorded],
    start: dt.datetime | None,
    end: dt.datetime,
    window_s: float,
) -> dict[str, Any]:
    """Every tick owed from `start` (each schedule's start when None, or when later) up to `end`
    (excluded) against the rows recorded for it. A tick is owed once to each cron whose schedule
    started before it; `missing` counts owed ticks without a row, `extra` rows nothing owed (a
    time the spec does not fire at, or before the schedule's start). Lateness is created_at -
    run_at; a tick no older than `window_s` (the catch-up window) when recorded must not be
    `missed`."""
    owed: collections.Counter[tuple[str, dt.datetime, dt.datetime]] = collections.Counter()
    for schedule in schedules:
        after = schedule.updated_at + _JUST_AFTER
        for tick in expected_ticks(schedule.spec, max(after, start or after), end):
            owed[(schedule.spec, schedule.updated_at, tick)] += schedule.crons
    found: collections.Counter[tuple[str, dt.datetime, dt.datetime]] = collections.Counter()
    states: collections.Counter[str] = collections.Counter()
    lateness: list[float] = []
    missed_inside = 0
    for row in recorded:
        if row.run_at >= end or (start is not None and row.run_at < start):
            continue
        found[(row.spec, row.updated_at, row.run_at)] += row.rows
        states[row.state] += row.rows
        late = (row.created_at - row.run_at).total_seconds()
        lateness += [late] * row.rows
        if row.state == "missed" and late <= window_s:
            missed_inside += row.rows
    expected = sum(owed.values())
    missing = sum(max(0, count - found[key]) for key, count in owed.items())
    return {
        "crons": sum(schedule.crons for schedule in schedules),
        "ticks": len({tick for _, _, tick in owed}),
        "expected": expected,
        "recorded": expected - missing,
        "missing": missing,
        "extra": sum(max(0, count - owed[key]) for key, count in found.items()),
        "recorded_pct": 100 * (expected - missing) / expected if expected else math.nan,
        "states": dict(sorted(states.items())),
        "missed_inside_window": missed_inside,
        "lateness_ms": stats.summary_ms(lateness),
    }


def complete(ticks: dict[str, Any]) -> bool:
    """Every owed tick has its one row, nothing else was recorded, and none inside the catch-up
    window was recorded as missed."""
    return bool(ticks["expected"]) and not (
        ticks["missing"] or ticks["extra"] or ticks["missed_inside_window"]
    )


def recorded_between(recorded: Sequence[Recorded], start: float, end: float) -> int:
    """Rows whose recording transaction began in [start, end) (epoch seconds)."""
    return sum(row.rows for row in recorded if start <= row.created_at.timestamp() < end)


def seen_lateness(
    seen: Sequence[tuple[float, dt.datetime]], ticks: Sequence[dt.datetime]
) -> tuple[list[float], int]:
    """For each tick, seconds from it until a reader first saw the cron's last_fire_at at or past
    it, from `seen` (when each new value was first read, in order); and how many ticks it never
    saw."""
    moments = [moment for moment, _ in seen]
    latest = [last for _, last in seen]
    found: list[float] = []
    unseen = 0
    for tick in ticks:
        index = bisect.bisect_left(latest, tick)
        if index == len(latest):
            unseen += 1
        else:
            found.append(moments[index] - tick.timestamp())
    return found, unseen


def first_ticks(
    answered: float, firsts: Sequence[tuple[dt.datetime, int]], crons: int
) -> dict[str, Any]:
    """Seconds from the answer to a POST /cron until each of its `crons` crons had its first tick
    recorded, from `firsts`: (created_at of a cron's first tick, how many crons share it)."""
    delays = [first.timestamp() - answered for first, count in firsts for _ in range(count)]
    fired = len(delays)
    return {
        "crons": crons,
        "fired": fired,
        "first_s": min(delays, default=math.nan),
        "p50_s": stats.percentile(delays, 50),
        "all_s": max(delays) if delays and fired == crons else math.nan,
    }


def gap_window(
    recorded: Sequence[Recorded], killed_at: float
) -> tuple[dt.datetime, dt.datetime] | None:
    """The ticks left to the next leader: after the latest tick recorded before the kill, up to
    the start of the first record after it (excluded); None without both."""
    before = [row.run_at for row in recorded if row.created_at.timestamp() < killed_at]
    after = [row.created_at for row in recorded if row.created_at.timestamp() >= killed_at]
    if not before or not after:
        return None
    return max(before) + _JUST_AFTER, min(after)


class Watcher:
    """Reads one cron's last_fire_at every WATCH_SECONDS on a connection of its own, keeping
    when each new value was first seen."""

    def __init__(self, db_url: str, cron_id: str) -> None:
        self.seen: list[tuple[float, dt.datetime]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(db_url, cron_id), daemon=True)
        self._thread.start()

    def _run(self, db_url: str, cron_id: str) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not self._stop.wait(WATCH_SECONDS):
                row = conn.execute("SELECT last_fire_at FROM crons WHERE id = %s", (cron_id,))
                found = row.fetchone()
                moment = time.time()
                last = found[0] if found else None
                if last is not None and (not self.seen or last > self.seen[-1][1]):
                    self.seen.append((moment, last))

    def stop(self) -> list[tuple[float, dt.datetime]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.seen


def pause_endpoint(system: System) -> None:
    response = system.session.post(f"{system.url}/endpoints/{PAUSED_ENDPOINT}/pause", timeout=30)
    response.raise_for_status()


def post_crons(system: System, ids: Sequence[str], spec: str) -> tuple[float, float]:
    """`POST /cron` of `ids`, all with `spec`: when it was sent and when its answer came."""
    body = {"jobs": [{"id": cron_id, "spec": spec} for cron_id in ids]}
    sent = time.time()
    response = system.session.post(system.url + "/cron", json=body, timeout=120)
    answered = time.time()
    response.raise_for_status()
    return sent, answered


def count_fired(system: System, ids: Sequence[str]) -> int:
    rows = system.query(
        "SELECT count(*) FROM crons WHERE id = ANY(%s) AND last_fire_at IS NOT NULL", (list(ids),)
    )
    return int(rows[0][0])


def tick_rows(system: System) -> tuple[list[Schedule], list[Recorded]]:
    """The running crons by schedule, and their ticks' rows, grouped (one statement records many
    rows that share everything but the cron)."""
    schedules = [
        Schedule(spec, updated_at, int(count))
        for spec, updated_at, count in system.query(
            "SELECT spec, updated_at, count(*) FROM crons WHERE NOT paused GROUP BY 1, 2"
        )
    ]
    recorded = [
        Recorded(spec, updated_at, run_at, created_at, state, int(count))
        for spec, updated_at, run_at, created_at, state, count in system.query(
            """
            SELECT c.spec, c.updated_at, j.run_at, j.created_at, j.state, count(*)
            FROM jobs j JOIN crons c ON c.id = j.cron_id
            WHERE NOT c.paused
            GROUP BY 1, 2, 3, 4, 5
            """
        )
    ]
    return schedules, recorded


def behind(system: System, until: dt.datetime) -> tuple[int, dt.datetime | None]:
    """How many running crons have not recorded their ticks up to `until`, and the earliest
    latest tick among them all."""
    count, least = system.query(
        "SELECT count(*) FILTER (WHERE last_fire_at IS NULL OR last_fire_at < %s), "
        "min(last_fire_at) FROM crons WHERE NOT paused",
        (until,),
    )[0]
    return int(count), least


def wait_recorded(system: System, until: dt.datetime, timeout: float) -> bool:
    """Wait until every running cron recorded its ticks up to `until`; give up after `timeout`
    or once the earliest latest tick did not move for CRON_STALL_SECONDS. Whether they all got
    there."""
    last: list[Any] = [None, time.monotonic()]

    def done() -> bool:
        count, least = behind(system, until)
        if least != last[0]:
            last[:] = [least, time.monotonic()]
        return count == 0 or time.monotonic() - last[1] > CRON_STALL_SECONDS

    wait_for(done, timeout, 0.1)
    return behind(system, until)[0] == 0


def leader(system: System) -> tuple[int, int | None]:
    """The leader's epoch and pid (None while no dispatcher holds the lease)."""
    epoch, pid = system.query(
        "SELECT l.epoch, d.pid FROM dispatcher_leader l "
        "LEFT JOIN dispatchers d ON d.id = l.holder AND l.lease_until > now()"
    )[0]
    return int(epoch), pid


def part_of(meter_parts: dict[str, int | None], pid: int | None) -> str | None:
    """The CpuMeter part that measures the process `pid`."""
    return next((name for name, part in meter_parts.items() if part == pid and pid), None)


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def cpu_figures(window: Window, recorded: Sequence[Recorded]) -> dict[str, Any]:
    """A window's CPU seconds, with the leader's and PostgreSQL's per tick whose recording began
    in it."""
    ticks = recorded_between(recorded, window.began, window.ended)
    spent = window.cpu.get(window.leader_part) if window.leader_part else None
    postgres = window.cpu.get("postgres")
    return {
        "cpu": window.cpu,
        "leader_part": window.leader_part,
        "ticks_recorded": ticks,
        "leader_ms_per_tick": spent * 1000 / ticks if spent is not None and ticks else math.nan,
        "postgres_ms_per_tick": (
            postgres * 1000 / ticks if postgres is not None and ticks else math.nan
        ),
    }


def measure_window(
    system: System, profiler: spy.Profiler, name: str, opens: float, until: Callable[[], Any]
) -> Window:
    """CPU from `opens` (epoch) until `until()` returns, with the leader recorded by py-spy when
    asked."""
    meter = system.cpu_meter()
    _, pid = leader(system)
    sleep_until(opens)
    before, began = meter.read(), time.time()
    with profiler.record(name, lambda: [pid] if pid else []):
        outcome = until()
    ended = time.time()
    cpu = stats.cpu_delta(before, meter.read())
    return Window(cpu, part_of(meter.parts, pid), began, ended, outcome)


def boundary(system: System, plan: Plan, profiler: spy.Profiler) -> dict[str, Any]:
    """The every-second crons' POST and first ticks, then the crons sharing a boundary."""
    system.start_web()
    system.start_worker()
    system.wait_active()
    pause_endpoint(system)
    count = plan.cron_scale_count
    every = cron_ids("s", count)
    watcher = Watcher(system.db_url, every[-1])
    try:
        sent, answered = post_crons(system, every, EVERY_SECOND)
        wait_for(lambda: count_fired(system, every) >= count, CRON_FIRST_TICK_TIMEOUT, 0.1)
    finally:
        first_seen = watcher.stop()
    firsts = system.query(
        "SELECT first_at, count(*) FROM (SELECT min(created_at) AS first_at FROM jobs "
        "WHERE cron_id = ANY(%s) GROUP BY cron_id) AS f GROUP BY first_at",
        (every,),
    )
    post = first_ticks(answered, [(first, int(n)) for first, n in firsts], count)
    post["answer_s"] = answered - sent
    post["seen_s"] = first_seen[0][0] - answered if first_seen else math.nan
    # The set is replaced when its next boundary is at least the lead away, so that the new set
    # owes exactly one tick: the one at the boundary after.
    spec = plan.cron_boundary_spec
    parsed = _parsed_spec(spec)
    (upcoming,) = cron.next_fire_times(parsed, utc(time.time()), 1)
    if upcoming.timestamp() - time.time() < plan.cron_boundary_lead:
        sleep_until(upcoming.timestamp() + 0.1)
    shared = cron_ids("b", count)
    replace_sent, replaced = post_crons(system, shared, spec)
    (tick,) = cron.next_fire_times(parsed, utc(replaced), 1)
    watcher = Watcher(system.db_url, shared[-1])
    try:
        window = measure_window(
            system,
            profiler,
            "crons-boundary",
            tick.timestamp() - CPU_LEAD,
            lambda: wait_recorded(system, tick, plan.cron_catch_up),
        )
    finally:
        seen = watcher.stop()
    schedules, recorded = tick_rows(system)
    ticks = summarise_ticks(
        schedules, recorded, None, tick + _JUST_AFTER, system.settings.cron_catchup_window
    )
    late, unseen = seen_lateness(seen, [tick])
    return {
        "crons": count,
        "spec": spec,
        "post": post,
        "replace_answer_s": replaced - replace_sent,
        "tick": tick.isoformat(),
        "lead_s": tick.timestamp() - replaced,
        "caught_up": window.outcome,
        "ticks": ticks,
        "seen_ms": stats.summary_ms(late),
        "unseen": unseen,
        **cpu_figures(window, recorded),
        "catchup_window_s": system.settings.cron_catchup_window,
    }


class EverySecond:
    """Every-second crons with two dispatchers: a window of steady ticks, then the leader killed.
    Either part prepares the system if the other did not run."""

    def __init__(self, system: System, plan: Plan, profiler: spy.Profiler) -> None:
        self.system = system
        self.plan = plan
        self.profiler = profiler
        self.ids: list[str] = []

    def prepare(self) -> None:
        if self.ids:
            return
        system = self.system
        system.start_web()
        system.start_worker()
        system.wait_active()
        system.add_worker()
        system.wait_workers_active(grace=30)
        pause_endpoint(system)
        self.ids = cron_ids("e", self.plan.cron_seconds_count)
        post_crons(system, self.ids, EVERY_SECOND)
        wait_for(
            lambda: count_fired(system, self.ids) >= len(self.ids), CRON_FIRST_TICK_TIMEOUT, 0.1
        )

    def measure(self) -> dict[str, Any]:
        """`cron_seconds_window` seconds of ticks, from the next whole second but one."""
        self.prepare()
        system, plan = self.system, self.plan
        start = math.ceil(time.time()) + 1.0
        end = start + plan.cron_seconds_window
        watcher = Watcher(system.db_url, self.ids[-1])
        try:
            window = measure_window(
                system,
                self.profiler,
                "crons-seconds",
                start - CPU_LEAD,
                lambda: sleep_until(end - CPU_LEAD),
            )
            caught_up = wait_recorded(system, utc(end - 1), plan.cron_catch_up)
        finally:
            seen = watcher.stop()
        schedules, recorded = tick_rows(system)
        ticks = summarise_ticks(
            schedules, recorded, utc(start), utc(end), system.settings.cron_catchup_window
        )
        late, unseen = seen_lateness(seen, expected_ticks(EVERY_SECOND, utc(start), utc(end)))
        return {
            "crons": len(self.ids),
            "dispatchers": len(system.workers),
            "window": [utc(start).isoformat(), utc(end).isoformat()],
            "seconds": plan.cron_seconds_window,
            "caught_up": caught_up,
            "ticks": ticks,
            "seen_ms": stats.summary_ms(late),
            "unseen": unseen,
            **cpu_figures(window, recorded),
        }

    def failover(self) -> dict[str, Any]:
        """SIGKILL the leader; once another holds the lease and `cron_failover_after` seconds more
        were recorded, every tick since the crons' start must have its row."""
        self.prepare()
        system, plan = self.system, self.plan
        epoch, pid = leader(system)
        victims = [w for w in system.workers if w.proc is not None and w.proc.pid == pid]
        if not victims:
            raise RuntimeError(f"no dispatcher of ours holds the leader's lease (pid {pid})")
        (victim,) = victims
        killed_at = time.time()
        victim.kill()
        timeout = 3 * system.settings.leader_timeout + CRON_FIRST_TICK_TIMEOUT

        successor: list[int] = []

        def taken() -> bool:
            now_epoch, holder = leader(system)
            if now_epoch > epoch and holder:
                successor.append(holder)
            return bool(successor)

        wait_for(taken, timeout, 0.05)
        taken_at = time.time()
        end = math.ceil(taken_at) + plan.cron_failover_after
        sleep_until(end)
        caught_up = wait_recorded(system, utc(end - 1), plan.cron_catch_up)
        schedules, recorded = tick_rows(system)
        window = system.settings.cron_catchup_window
        whole = summarise_ticks(schedules, recorded, None, utc(end), window)
        gap = gap_window(recorded, killed_at)
        left = (
            summarise_ticks(schedules, recorded, gap[0], gap[1], window)
            if gap
            else summarise_ticks(schedules, [], utc(end), utc(end), window)
        )
        resumed = gap[1].timestamp() if gap else math.nan
        return {
            "crons": len(self.ids),
            "killed_pid": pid,
            "leader_timeout_s": system.settings.leader_timeout,
            "catchup_window_s": window,
            "successor_pid": successor[0] if successor else None,
            "lease_taken_s": taken_at - killed_at if successor else math.nan,
            "resumed_s": resumed - killed_at,
            "end": utc(end).isoformat(),
            "caught_up": caught_up,
            "whole": whole,
            "gap": left,
            "gap_from": gap[0].isoformat() if gap else None,
        }

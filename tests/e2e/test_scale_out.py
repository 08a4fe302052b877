"""End to end: several `scheduler-dispatch` processes on one database, every one delivering, one
leading; what happens when one dies, is cut off from PostgreSQL, or runs on a wrong clock."""

from __future__ import annotations

import collections
import datetime as dt
import re
import signal
import time

import psycopg
import pytest

from scheduler import client
from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e

FAST_LEADER = {"SCHEDULER_LEADER_TIMEOUT": "5"}


def batch(system: System, count: int, delay: float, **fields: object) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, 1000):
        size = min(1000, count - start)
        ids += system.client.insert_batch(
            [{"body": {"n": start + n}, "delay": delay, **fields} for n in range(size)]
        )
    return ids


def states_of(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


def deliveries_by_job(system: System) -> collections.Counter[str]:
    return collections.Counter(r.json["id"] for r in system.receiver.received() if r.json["id"])


def dispatcher_id(process: support.Process) -> str:
    found = support.wait_until(
        lambda: re.search(r"dispatcher active \(id (\w+),", process.output()), timeout=10
    )
    return str(found.group(1))


@pytest.mark.parametrize("count", [2, 3])
def test_every_dispatcher_delivers_and_none_twice(system: System, count: int) -> None:
    system.receiver.respond = lambda request: (200, 0.002)
    system.start("web")
    workers = [system.start("worker") for _ in range(count)]
    ids = batch(system, 3000, delay=2)

    support.wait_until(lambda: states_of(system.db_url) == {"delivered": 3000}, timeout=90)
    received = deliveries_by_job(system)
    assert set(received) == set(ids)
    assert max(received.values()) == 1, "a job was delivered twice"

    def all_counted() -> list[client.Dispatcher] | None:
        # Each dispatcher reports its count with its next heartbeat.
        listed = system.client.dispatchers()
        return listed if sum(d.delivered for d in listed) == 3000 else None

    live = support.wait_until(all_counted, timeout=10)
    assert sorted(d.id for d in live) == sorted(dispatcher_id(w) for w in workers)
    assert [d.role for d in live] == ["leader"] + ["member"] * (count - 1)
    assert all(d.delivered > 0 for d in live), [(d.id, d.delivered) for d in live]
    assert [d.threads_down for d in live] == [{}] * count, "every thread runs"
    assert {d.pid for d in live} == {w.proc.pid for w in workers if w.proc is not None}


def test_a_killed_member_s_deliveries_are_delivered_within_30_s(system: System) -> None:
    system.receiver.respond = lambda request: (200, 0.02)
    system.start("web")
    system.start("worker", SCHEDULER_DELIVERY_THREADS="4")
    member = system.start("worker", SCHEDULER_DELIVERY_THREADS="4")
    member_id = dispatcher_id(member)
    ids = batch(system, 600, delay=1)

    def member_holds() -> int:
        with psycopg.connect(system.db_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM jobs WHERE state = 'delivering' AND claimed_by = %s",
                (member_id,),
            ).fetchone()
        return int(row[0]) if row else 0

    support.wait_until(member_holds, timeout=20, interval=0.005)
    member.kill()
    held = member_holds()
    support.wait_until(lambda: states_of(system.db_url) == {"delivered": 600}, timeout=30)
    received = deliveries_by_job(system)
    duplicates = sum(n - 1 for n in received.values())
    print(f"member killed holding {held} deliveries: {duplicates} delivered twice")
    assert set(received) == set(ids)
    assert duplicates <= held


def held_by(db_url: str, dispatcher: str) -> int:
    """Deliveries the dispatcher has claimed and not settled."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM jobs WHERE state = 'delivering' AND claimed_by = %s",
            (dispatcher,),
        ).fetchone()
    return int(row[0]) if row else 0


def recorded_ticks(db_url: str) -> list[dt.datetime]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT run_at FROM jobs WHERE cron_id = 'tick' ORDER BY run_at")
        return [row[0] for row in rows]


def test_a_killed_leader_s_duties_pass_on_while_deliveries_continue(system: System) -> None:
    system.start("web")
    first = system.start("worker", **FAST_LEADER)
    second = system.start("worker", **FAST_LEADER)
    assert system.call("POST", "/cron", {"jobs": [{"id": "tick", "spec": "* * * * * *"}]}).ok
    support.wait_until(lambda: len(recorded_ticks(system.db_url)) >= 2, timeout=10)

    first_id = dispatcher_id(first)
    first.kill()
    killed_at = time.time()
    held = held_by(system.db_url, first_id)
    during = batch(system, 20, delay=0)
    support.wait_until(lambda: set(during) <= set(deliveries_by_job(system)), timeout=10)
    support.wait_until(lambda: "leading (epoch 2)" in second.output(), timeout=15)
    print(f"leadership passed {time.time() - killed_at:.2f}s after kill -9")
    support.wait_until(
        lambda: any(t.timestamp() > time.time() - 1 for t in recorded_ticks(system.db_url)),
        timeout=5,
    )
    assert system.call("POST", "/cron", {"jobs": []}).ok

    ticks = recorded_ticks(system.db_url)
    assert len(ticks) == len(set(ticks))
    received = [r for r in system.receiver.received() if r.json["cron_id"]]
    scheduled = collections.Counter(r.headers["Scheduler-Scheduled-At"] for r in received)
    # Only what the killed one held when it died may go out twice (at least once).
    assert sum(n - 1 for n in scheduled.values()) <= held
    leaders = [d for d in system.client.dispatchers() if d.role == "leader"]
    assert [d.pid for d in leaders] == [second.proc.pid if second.proc else None]


def ticks_by_cron(db_url: str) -> dict[str, list[dt.datetime]]:
    by_cron: dict[str, list[dt.datetime]] = collections.defaultdict(list)
    with psycopg.connect(db_url) as conn:
        for cron_id, run_at in conn.execute(
            "SELECT cron_id, run_at FROM jobs WHERE cron_id IS NOT NULL ORDER BY run_at"
        ):
            by_cron[cron_id].append(run_at)
    return by_cron


def test_a_frozen_leader_loses_its_lease_and_no_tick_is_lost_or_doubled(system: System) -> None:
    lease = {"SCHEDULER_LEADER_TIMEOUT": "3"}
    system.start("web")
    first = system.start("worker", **lease)
    support.wait_until(lambda: "leading (epoch 1)" in first.output(), timeout=10)
    second = system.start("worker", **lease)
    names = [f"tick{n}" for n in range(5)]
    crons = [{"id": name, "spec": "* * * * * *"} for name in names]
    assert system.call("POST", "/cron", {"jobs": crons}).ok
    support.wait_until(lambda: len(ticks_by_cron(system.db_url)) == len(names), timeout=10)

    first_id = dispatcher_id(first)
    first.signal(signal.SIGSTOP)  # frozen: its sockets stay open, its lease runs out
    frozen_at = time.time()
    held = held_by(system.db_url, first_id)
    try:
        support.wait_until(lambda: "leading (epoch 2)" in second.output(), timeout=15)
        # Frozen for twice its lease, by the ticks the new leader records meanwhile.
        support.wait_until(
            lambda: max(ticks_by_cron(system.db_url)["tick0"]).timestamp() > frozen_at + 6,
            timeout=15,
        )
    finally:
        first.signal(signal.SIGCONT)
    support.wait_until(lambda: "lost the leader's lease" in first.output(), timeout=15)
    resumed_at = time.time()
    support.wait_until(
        lambda: max(ticks_by_cron(system.db_url)["tick0"]).timestamp() > resumed_at + 2,
        timeout=10,
    )
    assert system.call("POST", "/cron", {"jobs": []}).ok

    for name, ticks in ticks_by_cron(system.db_url).items():
        every_second = [ticks[0] + dt.timedelta(seconds=n) for n in range(len(ticks))]
        assert ticks == every_second, f"{name}: a tick is missing"
    received = [r for r in system.receiver.received() if r.json["cron_id"]]
    sent = collections.Counter(
        (r.json["cron_id"], r.headers["Scheduler-Scheduled-At"]) for r in received
    )
    # Only what the frozen one held may go out twice: sent before its freeze, unrecorded.
    assert sum(n - 1 for n in sent.values()) <= held
    leaders = [d for d in system.client.dispatchers() if d.role == "leader"]
    assert [d.pid for d in leaders] == [second.proc.pid if second.proc else None]


def test_a_dispatcher_cut_off_from_postgresql_loses_nothing(system: System) -> None:
    proxy = support.TcpProxy(system.db_url)
    try:
        system.receiver.respond = lambda request: (200, 0.3)
        system.start("web")
        system.start("worker", **FAST_LEADER)
        cut = system.start(
            "worker", DATABASE_URL=proxy.url, SCHEDULER_DELIVERY_THREADS="2", **FAST_LEADER
        )
        cut_id = dispatcher_id(cut)
        ids = batch(system, 60, delay=1)

        def held_by_cut() -> list[str]:
            with psycopg.connect(system.db_url) as conn:
                rows = conn.execute(
                    "SELECT id FROM jobs WHERE state = 'delivering' AND claimed_by = %s",
                    (cut_id,),
                ).fetchall()
            return [row[0] for row in rows]

        held = support.wait_until(held_by_cut, timeout=20, interval=0.005)
        proxy.cut()
        support.wait_until(lambda: states_of(system.db_url) == {"delivered": 60}, timeout=40)
        assert set(held) <= set(deliveries_by_job(system))
        proxy.restore()
        # Back on the database, it registers again and goes on as a member.
        support.wait_until(
            lambda: cut_id in {d.id for d in system.client.dispatchers()}, timeout=20
        )
        assert cut.proc is not None and cut.proc.poll() is None
        # Stopped while it still reaches the database: once the proxy is gone, its stop would
        # wait out its recorder's retries and the harness's 20 s before a SIGKILL.
        cut.stop()
    finally:
        proxy.close()
    received = deliveries_by_job(system)
    assert set(received) == set(ids)
    assert sum(n - 1 for n in received.values()) <= 4, "more repeats than it held in flight"
    assert states_of(system.db_url) == {"delivered": 60}


@pytest.mark.skipif(
    not support.faketime_library(),
    reason="Debian's faketime is not installed (.ci/run installs it)",
)
@pytest.mark.parametrize("offset", ["+1h", "-1h"])
def test_a_dispatcher_on_a_wrong_clock_never_delivers_early(system: System, offset: str) -> None:
    system.start("web")
    system.start(
        "worker",
        FAKETIME=offset,
        FAKETIME_DONT_FAKE_MONOTONIC="1",
        LD_PRELOAD=support.faketime_library(),
    )
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    ids = system.client.insert_batch([{"body": n, "at": due} for n in range(5)])
    received = system.receiver.wait_for(5, timeout=15)
    assert {r.json["id"] for r in received} == set(ids)
    # The receiver's clock is the right one here (the database shares it).
    assert min(r.arrived_at for r in received) >= due.timestamp()


def test_a_huge_answer_and_a_dripping_one_do_not_hold_the_only_sending_thread(
    system: System,
) -> None:
    huge = support.HostileEndpoint("huge")
    drip = support.HostileEndpoint("drip_head", size=1000, drip_seconds=0.5)
    timeouts = {"SCHEDULER_CONNECT_TIMEOUT": "1", "SCHEDULER_READ_TIMEOUT": "2"}
    try:
        system.start("web")
        worker = system.start(
            "worker", ENDPOINT=huge.url, SCHEDULER_DELIVERY_THREADS="1", **timeouts
        )
        (big,) = batch(system, 1, delay=0)
        support.wait_until(lambda: states_of(system.db_url) == {"delivered": 1}, timeout=20)
        assert huge.sent < huge.size // 4
        assert worker.proc is not None
        assert support.peak_memory_kb(worker.proc.pid) < 200 * 1024
        assert worker.stop() == 0

        system.start("worker", ENDPOINT=drip.url, SCHEDULER_DELIVERY_THREADS="1", **timeouts)
        dripped = batch(system, 2, delay=0, max_attempts=1)
        # One thread, two attempts of at most 3 s each: both end failed within the bound.
        support.wait_until(
            lambda: states_of(system.db_url) == {"delivered": 1, "failed": 2}, timeout=15
        )
    finally:
        huge.close()
        drip.close()
    with psycopg.connect(system.db_url) as conn:
        errors = conn.execute(
            "SELECT error FROM delivery_attempts WHERE job_id = ANY(%s)", (dripped,)
        ).fetchall()
    assert errors == [("timeout: no answer within 3s",)] * 2
    assert big not in dripped

"""End to end through PgBouncer in `pool_mode = transaction`, a stock configuration, as managed
PostgreSQL puts it in front (Heroku's connection pooling, Supabase, Neon): migrations, the API,
the dashboard, claiming, the leader and the jobstore, with no direct connection at all, and with
DATABASE_DIRECT_URL for notices. `pytest -m pooler` runs these alone."""

from __future__ import annotations

import collections
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from scheduler import client
from tests import support
from tests.e2e.conftest import System

pytestmark = [pytest.mark.e2e, pytest.mark.pooler]

NO_NOTICES = "no notices reach this dispatcher"


@pytest.fixture(scope="module")
def bouncer(
    server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.PgBouncer]:
    if not support.has_pgbouncer():
        pytest.skip("no PgBouncer on this machine (install Debian's package: pgbouncer)")
    running = support.PgBouncer(server_url, tmp_path_factory.mktemp("pgbouncer"))
    yield running
    running.close()


@pytest.fixture
def pooled(system: System, bouncer: support.PgBouncer) -> System:
    """The system with DATABASE_URL through the pooler and no direct connection."""
    system.env.update(
        DATABASE_URL=bouncer.url_for(system.db_url), SCHEDULER_DB_POOLER="transaction"
    )
    return system


def states_of(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


def test_the_api_the_dispatchers_the_leader_and_crons_work_through_the_pooler(
    pooled: System,
) -> None:
    pooled.start("web")
    first = pooled.start("worker", SCHEDULER_LEADER_TIMEOUT="3")
    second = pooled.start("worker", SCHEDULER_LEADER_TIMEOUT="3")
    assert NO_NOTICES in first.output() and NO_NOTICES in second.output()

    now = pooled.client.insert({"n": "now"}, delay=0)
    batch = pooled.client.insert_batch([{"body": {"n": n}, "delay": 1} for n in range(200)])
    cancelled = pooled.client.insert({"n": "never"}, delay=600)
    pooled.client.delete(cancelled)
    assert pooled.call("POST", "/cron", {"jobs": [{"id": "tick", "spec": "* * * * * *"}]}).ok
    assert pooled.call("PUT", "/cron/hourly", {"spec": "@hourly", "catchup_window": 60}).ok

    support.wait_until(
        lambda: {now, *batch} <= {r.json["id"] for r in pooled.receiver.received()}, timeout=30
    )
    received = collections.Counter(r.json["id"] for r in pooled.receiver.received())
    assert all(received[job_id] == 1 for job_id in (now, *batch))
    support.wait_until(
        lambda: any(r.json["cron_id"] == "tick" for r in pooled.receiver.received()), timeout=10
    )
    assert pooled.client.get(cancelled).state == "cancelled"

    paused = pooled.call("POST", "/endpoints/default/pause")
    assert paused.ok, paused.text
    held = pooled.client.insert({"n": "held"}, delay=0)
    assert pooled.call("POST", "/endpoints/default/resume").ok
    support.wait_until(lambda: held in {r.json["id"] for r in pooled.receiver.received()}, 15)

    listed = pooled.client.dispatchers()
    assert sorted(d.role for d in listed) == ["leader", "member"]
    assert all(d.threads_down == {} for d in listed)
    assert pooled.client.ready()
    assert pooled.call("GET", "/ui/login").status_code == 200
    assert pooled.call("GET", "/jobs?state=delivered&limit=5").ok


def test_edits_and_debounced_inserts_work_through_the_pooler(pooled: System) -> None:
    pooled.start("web")
    pooled.start("worker")
    edited = pooled.client.insert({"v": "old"}, delay=600)
    assert pooled.client.update(edited, body={"v": "new"}, delay=0.2).body == {"v": "new"}
    first = pooled.client.debounce("digest", {"n": 1}, period=1, idempotency_key="d1")
    joined = pooled.client.debounce("digest", {"n": 2}, period=1)
    assert joined == client.Debounced(first.id, True)
    support.wait_until(lambda: len(pooled.receiver.received()) >= 2, timeout=15)
    assert sorted((r.json["id"], r.json["body"]) for r in pooled.receiver.received()) == sorted(
        [(edited, {"v": "new"}), (first.id, {"n": 2})]
    )


def test_a_killed_dispatcher_mid_burst_loses_nothing_through_the_pooler(pooled: System) -> None:
    pooled.receiver.respond = lambda request: (200, 0.02)
    pooled.start("web")
    pooled.start("worker", SCHEDULER_LEADER_TIMEOUT="3", SCHEDULER_DELIVERY_THREADS="4")
    member = pooled.start("worker", SCHEDULER_LEADER_TIMEOUT="3", SCHEDULER_DELIVERY_THREADS="4")
    ids = pooled.client.insert_batch([{"body": {"n": n}, "delay": 1} for n in range(300)])

    def member_holds() -> int:
        with psycopg.connect(pooled.db_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM jobs j JOIN dispatchers d ON d.id = j.claimed_by"
                " WHERE j.state = 'delivering' AND d.pid = %s",
                (member.proc.pid if member.proc else 0,),
            ).fetchone()
        return int(row[0]) if row else 0

    support.wait_until(member_holds, timeout=20, interval=0.005)
    member.kill()
    support.wait_until(lambda: states_of(pooled.db_url) == {"delivered": 300}, timeout=30)
    assert set(ids) <= {r.json["id"] for r in pooled.receiver.received()}


def test_with_a_direct_url_the_dispatchers_listen_for_notices(
    system: System, bouncer: support.PgBouncer
) -> None:
    system.env.update(
        DATABASE_URL=bouncer.url_for(system.db_url), DATABASE_DIRECT_URL=system.db_url
    )
    system.start("web")
    worker = system.start("worker")
    assert NO_NOTICES not in worker.output()
    job_id = system.client.insert({"n": 1}, delay=0)
    (arrival,) = system.receiver.wait_for(1, timeout=10)
    assert arrival.json["id"] == job_id


def test_migrations_run_through_the_pooler_twice_at_once(
    server_url: str, bouncer: support.PgBouncer, tmp_path: pathlib.Path
) -> None:
    name = f"test_empty_{tmp_path.name[-8:].lower().replace('-', '_')}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = bouncer.url_for(support.with_database(server_url, name))
        command = [sys.executable, "-m", "scheduler", "migrate", "--database-url", url]
        runs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [run.communicate(timeout=60)[0] for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        with psycopg.connect(support.with_database(server_url, name)) as conn:
            applied = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        assert applied is not None and applied[0] == len(support.migrate.load_migrations())
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

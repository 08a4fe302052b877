"""Scenario 11: the processes through a transaction-mode pooler, as managed PostgreSQL runs them
(issue 23): DATABASE_URL at PgBouncer in `pool_mode = transaction`, SCHEDULER_DB_POOLER set and
no DATABASE_DIRECT_URL, so no notice reaches the dispatchers and they look for due deliveries
every tuning.NOTICELESS_LOOK_SECONDS.

- `pooled_steady`: start-up, inserts and steady lateness, as `steady_empty` measures them;
- `pooled_burst`: bursts with one dispatcher and their ceilings, as `burst_1`;
- `pooled_due_now`: single jobs inserted due now (`POST /insert` with `delay` 0), a few a second
  at random moments so that each meets the dispatcher idle at a random phase of its look, and
  the time from each insert's answer to its arrival at the receiver.

All three run on one fresh database whose processes reach it through a PgBouncer started for the
run; the benchmark's own queries go to the server directly.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pathlib
import pwd
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from scheduler import tuning
from tests import support
from tests.bench import spy, stats
from tests.bench.scenarios import (
    Collector,
    Plan,
    burst_series,
    delivery_summary,
    steady_session,
    wait_delivered,
)
from tests.bench.system import System

SCENARIOS = ("pooled_steady", "pooled_burst", "pooled_due_now")
MISSING = "no PgBouncer on this machine (install Debian's package: pgbouncer)"
POOL_MODE = "transaction"
# The same seed every run, so that two runs insert at the same moments.
DUE_NOW_SEED = 23
# How long after the last insert a due-now job may still arrive: far beyond the target.
DUE_NOW_DEADLINE = 30.0


def available() -> bool:
    return shutil.which("pgbouncer") is not None


def server_address(server_url: str) -> tuple[str, int, str]:
    """Host (a Unix socket directory or an address), port and user of `server_url`."""
    params = psycopg.conninfo.conninfo_to_dict(server_url)
    host = str(params.get("host") or "127.0.0.1")
    # libpq's default user is the operating system's.
    return host, int(params.get("port") or 5432), str(params.get("user") or getpass.getuser())


def bouncer_config(host: str, port: int, listen_port: int, users: pathlib.Path) -> str:
    """PgBouncer's stock configuration in transaction mode (that of the end-to-end tests'
    pooler, tests/support.py), with every database name mapped to the same name on the server
    at `host`:`port`."""
    return (
        "[databases]\n"
        f"* = host={host} port={port}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {listen_port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {users}\n"
        f"pool_mode = {POOL_MODE}\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )


def run_as(host: str) -> str | None:
    """The user PgBouncer drops to when started as root (it refuses to run as root): the owner
    of the server's socket directory, who alone may open it, or nobody for a server on TCP."""
    if os.geteuid() != 0:
        return None
    if host.startswith("/"):
        return pwd.getpwuid(pathlib.Path(host).stat().st_uid).pw_name
    return "nobody"


class Bouncer:
    """PgBouncer in front of the benchmark's server. Unlike the end-to-end tests' pooler, it
    reaches the server itself (over its Unix socket, or TCP) instead of through a proxy in the
    benchmark's process, whose CPU and extra hop would be charged to every statement measured."""

    def __init__(self, server_url: str, workdir: pathlib.Path) -> None:
        host, port, user = server_address(server_url)
        self.port = support.free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        workdir.chmod(0o755)
        users = workdir / "users.txt"
        users.write_text(f'"{user}" ""\n')
        ini = workdir / "pgbouncer.ini"
        ini.write_text(bouncer_config(host, port, self.port, users))
        for path in (users, ini):
            path.chmod(0o644)
        self.user = run_as(host)
        self.reaches = "Unix socket" if host.startswith("/") else "TCP"
        self.log_path = workdir / "pgbouncer.log"
        as_user = ["-u", self.user] if self.user else []
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["pgbouncer", *as_user, str(ini)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            support.wait_until(self._answers, timeout=10, interval=0.05)
        except (AssertionError, RuntimeError):
            self.close()
            raise RuntimeError("PgBouncer did not start:\n" + self.output()[-2000:]) from None

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("PgBouncer exited")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def url_for(self, db_url: str) -> str:
        """`db_url`'s database and user, through the pooler."""
        params = psycopg.conninfo.conninfo_to_dict(db_url)
        params.update(host="127.0.0.1", port=str(self.port))
        return support.to_uri(psycopg.conninfo.make_conninfo("", **params))

    def facts(self) -> dict[str, Any]:
        done = subprocess.run(["pgbouncer", "--version"], capture_output=True, text=True)
        return {
            "version": (done.stdout or done.stderr).splitlines()[0].strip(),
            "pool_mode": POOL_MODE,
            "reaches": self.reaches,
            "look_interval_s": tuning.NOTICELESS_LOOK_SECONDS,
        }

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def pooler(server_url: str, logs: pathlib.Path) -> Iterator[Bouncer | None]:
    """A PgBouncer for the run, closed after it; None where none is installed."""
    if not available():
        yield None
        return
    bouncer = Bouncer(server_url, logs / "pgbouncer")
    try:
        yield bouncer
    finally:
        bouncer.close()


def route(system: System, bouncer: Bouncer) -> None:
    """Point the system's processes (not yet started) at the pooler, without a direct URL, and
    measure the pooler's CPU beside theirs."""
    assert system.web is None and system.worker is None, "route before starting the processes"
    system.env.update(DATABASE_URL=bouncer.url_for(system.db_url), SCHEDULER_DB_POOLER=POOL_MODE)
    system.env.pop("DATABASE_DIRECT_URL", None)
    system.settings = type(system.settings).from_env(system.env)
    system.meter_parts["pgbouncer"] = bouncer.proc.pid


def insert_offsets(seconds: float, spacing: tuple[float, float], seed: int) -> list[float]:
    """Seconds from the start at which to insert: each a random time within `spacing` after
    the last, all before `seconds`."""
    rng = random.Random(seed)
    offsets: list[float] = []
    moment = 0.0
    while moment < seconds:
        offsets.append(moment)
        moment += rng.uniform(*spacing)
    return offsets


def due_now_summary(
    sent: dict[str, float], answered: dict[str, float], arrivals: dict[str, list[float]]
) -> dict[str, Any]:
    """Each job's first arrival from its insert's answer (the target's figure) and from its
    sending, the inserts' own answer times, and what was lost or repeated."""
    out = delivery_summary(answered, arrivals)
    out["from_sent_ms"] = stats.summary_ms(
        [min(times) - sent[job_id] for job_id, times in arrivals.items()]
    )
    out["answer_ms"] = stats.summary_ms([answered[job_id] - sent[job_id] for job_id in sent])
    return out


class Pooled:
    """The three scenarios on one system routed through the pooler; each starts the processes
    if an earlier one did not."""

    def __init__(
        self,
        system: System,
        collector: Collector,
        plan: Plan,
        generator: str,
        profiler: spy.Profiler,
    ) -> None:
        self.system = system
        self.collector = collector
        self.plan = plan
        self.generator = generator
        self.profiler = profiler

    def prepare(self) -> None:
        system = self.system
        if system.web is None:
            system.start_web()
        if system.worker is None:
            system.start_worker()
        system.wait_active()

    def steady(self) -> dict[str, Any]:
        return steady_session(
            self.system, self.collector, self.plan, 0, self.generator, self.profiler, "pooled"
        )

    def burst(self) -> dict[str, Any]:
        self.prepare()
        return burst_series(
            self.system, self.collector, self.plan, 1, self.profiler, "pooled-burst"
        )

    def due_now(self) -> dict[str, Any]:
        self.prepare()
        system, plan = self.system, self.plan
        self.collector.reset()
        offsets = insert_offsets(plan.due_now_seconds, plan.due_now_spacing, DUE_NOW_SEED)
        sent: dict[str, float] = {}
        answered: dict[str, float] = {}
        meter = system.cpu_meter()
        before = meter.read()
        start = time.time()
        with self.profiler.record("pooled-due-now", system.worker_pids):
            for number, offset in enumerate(offsets):
                time.sleep(max(0.0, start + offset - time.time()))
                job_id, sent_at, answered_at = insert_now(system, number)
                sent[job_id], answered[job_id] = sent_at, answered_at
            arrivals = wait_delivered(
                self.collector, answered, time.time() + DUE_NOW_DEADLINE, plan.settle
            )
        out = due_now_summary(sent, answered, arrivals)
        out["cpu"] = stats.cpu_delta(before, meter.read())
        out["seconds"] = time.time() - start
        out["look_interval_s"] = system.settings.look_interval
        out["spacing_s"] = list(plan.due_now_spacing)
        self.collector.reset()
        return out


def insert_now(system: System, number: int) -> tuple[str, float, float]:
    """POST /insert of one job due now; its id, when it was sent and when the answer came."""
    sent = time.time()
    response = system.session.post(
        system.url + "/insert", json={"delay": 0, "body": {"due_now": number}}, timeout=30
    )
    answered = time.time()
    response.raise_for_status()
    return str(response.json()["id"]), sent, answered


def lost_and_duplicated(results: dict[str, Any]) -> tuple[int, int, list[str]]:
    """Lost and duplicated deliveries over the pooled scenarios that ran, and each one's."""
    lost = duplicated = 0
    parts = []
    for name, part in pooled_parts(results):
        lost += part["lost"]
        duplicated += part["duplicates"]
        parts.append(f"{name} {part['lost']:,}/{part['duplicates']:,}")
    return lost, duplicated, parts


def pooled_parts(results: dict[str, Any]) -> Sequence[tuple[str, dict[str, Any]]]:
    """The pooled scenarios' delivery summaries that ran (not skipped), by name."""
    steady = (results.get("pooled_steady") or {}).get("steady")
    burst = results.get("pooled_burst") or {}
    due_now = results.get("pooled_due_now") or {}
    found = [
        ("steady", steady),
        ("burst", burst if "lost" in burst else None),
        ("due now", due_now if "lost" in due_now else None),
    ]
    return [(name, part) for name, part in found if part]


def skipped(results: dict[str, Any]) -> str | None:
    """Why the pooled scenarios were skipped, if they were."""
    for name in SCENARIOS:
        reason = (results.get(name) or {}).get("skipped")
        if reason:
            return str(reason)
    return None

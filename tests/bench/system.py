"""The system under test: the Procfile's web and worker on a fresh database, and what they cost."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import pathlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import requests
from prometheus_client.parser import text_string_to_metric_families

from scheduler import config
from tests import support

ACTIVE_LINE = "dispatcher active"
HEADERS = {"Scheduler-Secret": support.SECRET, "Content-Type": "application/json"}
# Harmless while the metrics endpoint asks for no credential.
METRICS_HEADERS = {"Authorization": f"Bearer {support.SECRET}"}
CLAIMS_SAMPLE = "scheduler_claim_queries_total"
CLAIM_SECONDS_SAMPLE = "scheduler_claim_seconds_total"
DELIVERIES_SAMPLE = "scheduler_deliveries_total"
PRUNE_SAMPLES = {
    "scheduler_pruned_jobs_total": "pruned",
    "scheduler_prune_seconds_total": "prune_seconds",
}


def rfc3339(moment: float) -> str:
    """An epoch as RFC 3339 with microseconds, as the API takes it."""
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat().replace("+00:00", "Z")


class RssSampler:
    """Samples a process's resident memory twice a second; keeps the peak (kB)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def read(self, field: str = "VmRSS") -> int:
        try:
            text = pathlib.Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak_kb = max(self.peak_kb, self.read())

    def stop(self) -> int:
        """Stop sampling; the peak of our samples and the kernel's high-water mark, in kB."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.peak_kb = max(self.peak_kb, self.read(), self.read("VmHWM"))
        return self.peak_kb


class CpuMeter:
    """CPU seconds used so far by each part of the system, from /proc; what a part's exited
    children used is in its cutime/cstime once they are reaped, so nothing is lost."""

    TICK = float(os.sysconf("SC_CLK_TCK"))

    def __init__(self, parts: dict[str, int | None]) -> None:
        self.parts = parts

    @classmethod
    def _stat(cls, pid: int) -> list[str]:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
        # The command name is in parentheses and may hold spaces: fields start after it.
        return text[text.rindex(")") + 2 :].split()

    @classmethod
    def tree(cls, pid: int) -> float:
        """`pid` with its live children and every reaped descendant, in CPU seconds."""
        try:
            fields = cls._stat(pid)
        except OSError:
            return 0.0
        used = sum(int(value) for value in fields[11:15]) / cls.TICK
        for child in children(pid):
            with contextlib.suppress(OSError):
                used += sum(int(value) for value in cls._stat(child)[11:13]) / cls.TICK
        return used

    @classmethod
    def machine(cls) -> float:
        """Busy CPU seconds of the whole machine (every core, every process)."""
        values = [int(v) for v in pathlib.Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = values[3] + values[4]
        return (sum(values[:8]) - idle) / cls.TICK

    def read(self) -> dict[str, float | None]:
        used: dict[str, float | None] = {
            name: (self.tree(pid) if pid else None) for name, pid in self.parts.items()
        }
        used["machine"] = self.machine()
        used["wall"] = time.monotonic()
        return used


def children(pid: int) -> list[int]:
    try:
        text = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def postmaster_pid(db_url: str) -> int | None:
    """The PostgreSQL server's pid when it runs on this machine (the parent of our backend)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        # Read while the backend lives: it exits as soon as the connection closes.
        try:
            return int(CpuMeter._stat(int(row[0]))[1]) if row else None
        except OSError:
            return None


class System:
    """`web` and `worker` from the Procfile, with the default settings, on one database."""

    def __init__(
        self,
        db_url: str,
        endpoint: str,
        logs: pathlib.Path,
        receiver_pid: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.db_url = db_url
        self.receiver_pid = receiver_pid
        self.logs = logs
        port = support.free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = support.base_env(
            db_url,
            endpoint,
            PORT=str(port),
            SCHEDULER_METRICS_PORT=str(support.free_port()),
            **(env or {}),
        )
        self.settings = config.Settings.from_env(self.env)
        self.web: support.Process | None = None
        self.worker: support.Process | None = None
        self.worker_started = 0.0
        # Further dispatchers beside `worker`, each with a metrics port of its own.
        self.extra_workers: list[support.Process] = []
        self.metrics_ports = [self.settings.metrics_port]
        # Processes of the system beside its own (a pooler between it and PostgreSQL), measured
        # as parts of their own so that their CPU is not counted as the benchmark's.
        self.meter_parts: dict[str, int | None] = {}
        self.session = requests.Session()
        self.session.headers.update(HEADERS)

    def start_web(self) -> None:
        self.web = support.Process("web", self.env, self.logs).start()
        support.wait_until(self._web_answers, timeout=60, interval=0.05)

    def _web_answers(self) -> bool:
        assert self.web is not None and self.web.proc is not None
        if self.web.proc.poll() is not None:
            raise RuntimeError("web exited during start-up:\n" + self.web.output()[-2000:])
        try:
            return self.session.get(self.url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def start_worker(self) -> None:
        self.worker_started = time.time()
        self.worker = support.Process("worker", self.env, self.logs).start()

    def add_worker(self) -> None:
        """Start one more dispatcher: the Procfile's `worker` again, on a metrics port of its own."""
        port = support.free_port()
        env = dict(self.env, SCHEDULER_METRICS_PORT=str(port))
        self.extra_workers.append(support.Process("worker", env, self.logs).start())
        self.metrics_ports.append(port)

    @property
    def workers(self) -> list[support.Process]:
        """Every dispatcher started, the first one first."""
        return [w for w in (self.worker, *self.extra_workers) if w is not None]

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc is not None]

    def cpu_meter(self) -> CpuMeter:
        parts: dict[str, int | None] = {
            "web": self.web_pid if self.web else None,
            "worker": self.worker_pid if self.worker else None,
        }
        for number, pid in enumerate(self.worker_pids()[1:], start=2):
            parts[f"worker{number}"] = pid
        parts["postgres"] = postmaster_pid(self.db_url)
        parts["receiver"] = self.receiver_pid
        parts.update(self.meter_parts)
        return CpuMeter(parts)

    def quiesce(self, timeout: float = 120) -> None:
        """Vacuum the tables deliveries write and wait until no vacuum runs on the server, so a
        measurement that follows pays for none of the work before it (autovacuum of an earlier
        round or scenario would otherwise land in whichever round it overlaps)."""
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) jobs, delivery_attempts, delivery_minutes, flows")
            support.wait_until(
                lambda: (
                    conn.execute("SELECT count(*) FROM pg_stat_progress_vacuum").fetchone() == (0,)
                ),
                timeout,
                interval=0.2,
            )

    @property
    def web_pid(self) -> int:
        assert self.web is not None and self.web.proc is not None
        return self.web.proc.pid

    @property
    def worker_pid(self) -> int:
        assert self.worker is not None and self.worker.proc is not None
        # The Procfile command runs as `/bin/sh -c exec ...`: the shell's pid is the worker's.
        return self.worker.proc.pid

    def wait_active(self, timeout: float = 60) -> float:
        """Seconds from the worker's start until it logged that it is the active dispatcher."""
        assert self.worker is not None
        support.wait_until(lambda: ACTIVE_LINE in self.worker_output(), timeout, interval=0.02)
        return time.time() - self.worker_started

    def worker_output(self) -> str:
        assert self.worker is not None
        return self.worker.output()

    def wait_workers_active(self, grace: float, timeout: float = 60) -> int:
        """Wait until a dispatcher logged ACTIVE_LINE, then up to `grace` seconds for all of them;
        how many logged it. (A standby of the single-leader design never logs it.)"""

        def logged() -> int:
            for worker in self.workers:
                assert worker.proc is not None
                if worker.proc.poll() is not None:
                    raise RuntimeError("a worker exited:\n" + worker.output()[-2000:])
            return sum(ACTIVE_LINE in worker.output() for worker in self.workers)

        support.wait_until(logged, timeout, interval=0.05)
        deadline = time.monotonic() + grace
        while logged() < len(self.workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        return logged()

    def scrape_metrics(self) -> list[dict[str, float | None]]:
        """Each dispatcher's claim statements and deliveries so far, from its metrics port."""
        return [scrape_metrics(port) for port in self.metrics_ports[: len(self.workers)]]

    def insert(self, due: float, body: Any) -> str:
        response = self.session.post(
            self.url + "/insert", json={"timestamp": rfc3339(due), "body": body}, timeout=30
        )
        response.raise_for_status()
        job_id: str = response.json()["id"]
        return job_id

    def insert_batch(self, items: list[dict[str, Any]]) -> list[str]:
        response = self.session.post(self.url + "/jobs/batch", json={"jobs": items}, timeout=120)
        response.raise_for_status()
        ids: list[str] = response.json()["ids"]
        return ids

    def insert_due(self, dues: list[float], size: int = 1000) -> dict[str, float]:
        """Schedule one job per due time through POST /jobs/batch; {job id: due epoch}."""
        scheduled: dict[str, float] = {}
        for start in range(0, len(dues), size):
            chunk = dues[start : start + size]
            items = [{"timestamp": rfc3339(due), "body": {"due": due}} for due in chunk]
            scheduled.update(zip(self.insert_batch(items), chunk, strict=True))
        return scheduled

    def put_crons(self, crons: list[dict[str, str]]) -> None:
        response = self.session.post(self.url + "/cron", json={"jobs": crons}, timeout=60)
        response.raise_for_status()

    def query(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return conn.execute(statement, params).fetchall()

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every process at once (each takes a second or so to wind down); exit codes."""
        self.session.close()
        extra = [(f"worker{n}", w) for n, w in enumerate(self.extra_workers, start=2)]
        running = [
            (name, process)
            for name, process in (("worker", self.worker), *extra, ("web", self.web))
            if process is not None and process.proc is not None and not process.log.closed
        ]
        for _, process in running:
            assert process.proc is not None
            if process.proc.poll() is None:
                process.proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, process in running:
            assert process.proc is not None
            try:
                codes[name] = process.proc.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = None
            process.log.close()
        return codes

    def stop_extra_workers(self) -> dict[str, int | None]:
        """SIGTERM the dispatchers beside the first; their exit codes. The first carries on."""
        codes: dict[str, int | None] = {}
        for number, worker in enumerate(self.extra_workers, start=2):
            if worker.proc is not None and not worker.log.closed:
                codes[f"worker{number}"] = worker.stop(40)
        return codes


def scrape_metrics(port: int) -> dict[str, float | None]:
    """`claims` (scheduler_claim_queries_total, summed over its labels), `claim_seconds`
    (scheduler_claim_seconds_total), `delivered`
    (scheduler_deliveries_total{outcome="delivered"}), `pruned` and `prune_seconds` (the
    leader's scheduler_pruned_jobs_total and scheduler_prune_seconds_total); None for what is not
    exported."""
    found: dict[str, float | None] = {
        "claims": None,
        "claim_seconds": None,
        "delivered": None,
        "pruned": None,
        "prune_seconds": None,
    }
    try:
        response = requests.get(
            f"http://127.0.0.1:{port}/metrics", headers=METRICS_HEADERS, timeout=5
        )
        response.raise_for_status()
    except requests.RequestException:
        return found
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == CLAIMS_SAMPLE:
                found["claims"] = (found["claims"] or 0.0) + sample.value
            elif sample.name == CLAIM_SECONDS_SAMPLE:
                found["claim_seconds"] = sample.value
            elif sample.name == DELIVERIES_SAMPLE and sample.labels.get("outcome") == "delivered":
                found["delivered"] = sample.value
            elif sample.name in PRUNE_SAMPLES:
                found[PRUNE_SAMPLES[sample.name]] = sample.value
    return found


@contextlib.contextmanager
def fresh_system(
    server: str,
    template: str,
    endpoint: str,
    logs: pathlib.Path,
    receiver_pid: int | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[System]:
    """A System on a new database copied from the migrated template, with `env` over the
    defaults; all of it gone afterwards."""
    with support.fresh_database(server, template) as db_url:
        running = System(db_url, endpoint, logs, receiver_pid, env)
        try:
            yield running
        finally:
            running.stop()


def bulk_load(db_url: str, count: int) -> float:
    """`count` pending jobs due 30+ days out, in one INSERT ... SELECT; seconds it took."""
    started = time.monotonic()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, state)
            SELECT 'bench' || n, jsonb_build_object('n', n), due, due, 3, 'scheduled'
            FROM generate_series(1, %(count)s) AS n,
                 LATERAL (SELECT now() + interval '30 days' + n * interval '1 second') AS t(due)
            """,
            {"count": count},
        )
        # A table that just grew by a million rows would be analysed by autovacuum within
        # minutes; doing it now keeps that work out of the measurements.
        conn.execute("VACUUM (ANALYZE) jobs")
    return time.monotonic() - started


SETTINGS = (
    ("WEB_CONCURRENCY", "web_workers"),
    ("SCHEDULER_DB_CONNECTIONS", "db_connections"),
    ("SCHEDULER_WEB_THREADS", "web_threads"),
    ("SCHEDULER_DELIVERY_THREADS", "delivery_threads"),
    ("SCHEDULER_POLL_INTERVAL", "poll_interval"),
    ("SCHEDULER_RECONCILE_INTERVAL", "reconcile_interval"),
    ("SCHEDULER_LOG_LEVEL", "log_level"),
)


def settings_facts(settings: config.Settings) -> dict[str, str]:
    """The settings that move the numbers, as the processes read them (those that exist)."""
    return {
        variable: f"{getattr(settings, name):g}"
        if isinstance(getattr(settings, name), float)
        else str(getattr(settings, name))
        for variable, name in SETTINGS
        if hasattr(settings, name)
    }


def code_digest() -> str:
    """A short digest of scheduler/ as it was run; the working tree may differ from any commit."""
    digest = hashlib.sha256()
    package = support.ROOT / "scheduler"
    for path in sorted(
        [*package.rglob("*.py"), *package.rglob("*.sql"), *support.ROOT.glob("sql/*.sql")]
    ):
        digest.update(path.relative_to(support.ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]

"""One soak: set up, load and faults for `--duration` seconds, heal, drain, check, report.

`python -m tests.chaos --help`. Every wait has a deadline; every process and the temporary
directory (the database, the logs) go at the end, unless `--keep` names a directory to keep
them in, with `run.json`, which `--check run.json` checks again.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import pathlib
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from scheduler import client
from tests import support
from tests.chaos import checker, faults, report
from tests.chaos.cluster import LIMITED, Cluster

DEFAULT_DURATION = 400.0
DEFAULT_DISPATCHERS = 3
# After the faults are healed: how long the jobs due by then get to finish (less, if the run's
# time limit is nearer).
DEFAULT_DRAIN = 90.0
# A whole run (`make chaos`) takes at most this long...
DEFAULT_LIMIT = 600.0
# ...of which stopping everything (the dispatchers together, each within its shutdown grace),
# the snapshot and the checks take at most this.
CLOSING_SECONDS = 12.0
# Jobs inserted per second, and the share that goes to the limited endpoint.
INSERTS_PER_SECOND = 8.0
LIMITED_SHARE = 0.3
POLL_SECONDS = 0.2


class Workload:
    """Inserts jobs through the API at a steady pace, to both endpoints, due within a few
    seconds, each with a few attempts; remembers the latest ids for the cancels."""

    def __init__(self, url: str, seed: int, per_second: float) -> None:
        self.url = url
        self.per_second = per_second
        self.inserted = 0
        self.refused = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._recent: collections.deque[str] = collections.deque(maxlen=200)

    def recent(self) -> list[str]:
        with self._lock:
            return list(self._recent)

    def run(self, stop: threading.Event) -> None:
        with client.Client(self.url, support.SECRET, timeout=5) as api:
            while not stop.wait(self._random.expovariate(self.per_second)):
                batch = [self._job() for _ in range(self._random.choice((1, 1, 1, 1, 3, 5)))]
                try:
                    ids = api.insert_batch(batch) if len(batch) > 1 else [api.insert(**batch[0])]
                except client.SchedulerError:
                    # The web process or PostgreSQL is away: the job may or may not exist, and
                    # the checker reads the database, not this count.
                    self.refused += len(batch)
                    continue
                with self._lock:
                    self.inserted += len(ids)
                    self._recent.extend(ids)

    def _job(self) -> dict[str, Any]:
        rng = self._random
        return {
            "body": {"n": rng.getrandbits(32)},
            "delay": round(rng.uniform(0, 3), 3),
            "max_attempts": rng.choice((2, 3, 4)),
            "endpoint": LIMITED if rng.random() < LIMITED_SHARE else "default",
        }


@dataclasses.dataclass
class Result:
    """What a soak did and found."""

    seed: int
    duration: float
    dispatchers: int
    took: float = 0.0
    planned: int = 0
    faults: list[checker.Fault] = dataclasses.field(default_factory=list)
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    findings: list[checker.Finding] = dataclasses.field(default_factory=list)
    inserted: int = 0
    refused: int = 0
    jobs: int = 0
    arrivals: int = 0
    repeats: int = 0
    drained: bool = False

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(f.fails_run for f in self.findings)


def run(
    seed: int,
    duration: float,
    dispatchers: int = DEFAULT_DISPATCHERS,
    drain_seconds: float = DEFAULT_DRAIN,
    keep: pathlib.Path | None = None,
    log: Callable[[str], None] = print,
    limit: float = DEFAULT_LIMIT,
) -> Result:
    """One soak, within `limit` seconds in all (the drain is cut short to fit, which fails the
    run); raises only when the system could not be set up at all."""
    begun = time.monotonic()
    result = Result(seed, duration, dispatchers)
    workdir = keep or pathlib.Path(tempfile.mkdtemp(prefix="scheduler-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cluster: Cluster | None = None
    try:
        cluster = Cluster(workdir, seed, dispatchers)
        cluster.start_all()
        workload = Workload(cluster.system.url, seed, INSERTS_PER_SECOND)
        injector = faults.Injector(cluster, workload.recent)
        injector.set_up()
        cluster.manage()
        cards = faults.plan(seed, duration, faults.available_kinds())
        result.planned = len(cards)
        log(
            f"chaos: seed {seed}, {duration:g}s, {len(cards)} faults planned, {dispatchers} dispatchers"
        )
        stop = threading.Event()
        loader = threading.Thread(target=workload.run, args=(stop,), name="workload", daemon=True)
        loader.start()
        injector.run(cards, duration)
        stop.set()
        loader.join(10)
        log(f"chaos: faults over after {time.monotonic() - begun:.0f}s; healing")
        injector.heal()
        left = limit - (time.monotonic() - begun) - CLOSING_SECONDS
        window_end, result.drained = drain(cluster, max(5.0, min(drain_seconds, left)))
        log(f"chaos: drained={result.drained} after {time.monotonic() - begun:.0f}s; checking")
        run_record = collect(cluster, injector, window_end)
        cluster = None
        result.findings = checker.check(run_record)
        result.faults = list(run_record.faults)
        result.skipped = dict(injector.skipped)
        result.notes = injector.notes
        result.errors = injector.errors + ([] if result.drained else ["the drain ran out of time"])
        result.inserted, result.refused = workload.inserted, workload.refused
        result.jobs, result.arrivals = len(run_record.jobs), len(run_record.arrivals)
        delivered = collections.Counter(a.job_id for a in run_record.arrivals if a.delivered)
        result.repeats = sum(count - 1 for count in delivered.values())
        (workdir / "run.json").write_text(json.dumps(run_record.to_json()))
    finally:
        if cluster is not None:
            cluster.close()
            cluster.remove()
        _remove(workdir, keep)
    result.took = time.monotonic() - begun
    return result


def drain(cluster: Cluster, seconds: float) -> tuple[float, bool]:
    """Wait until every dispatcher runs and every job due by then (and every tick up to then)
    is recorded and finished; the end of the soak's window (database time), and whether all of
    it finished in time."""
    deadline = time.monotonic() + seconds
    expected = len(cluster.dispatcher_slots)
    while time.monotonic() < deadline and len(_live_dispatchers(cluster)) != expected:
        time.sleep(POLL_SECONDS)
    window_end = cluster.database_now()
    while time.monotonic() < deadline:
        with cluster.database() as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM jobs WHERE run_at <= to_timestamp(%(end)s)"
                "        AND state IN ('scheduled', 'delivering')),"
                "       (SELECT count(*) FROM crons WHERE NOT paused AND NOT EXISTS ("
                "        SELECT 1 FROM jobs WHERE jobs.cron_id = crons.id"
                "        AND jobs.run_at >= to_timestamp(%(end)s)))",
                {"end": window_end},
            ).fetchone()
        if row == (0, 0):
            return window_end, True
        time.sleep(POLL_SECONDS)
    return window_end, False


def _live_dispatchers(cluster: Cluster) -> dict[str, dict[str, str]]:
    try:
        answer = cluster.system.call("GET", "/dispatchers")
    except requests.RequestException:
        return {}
    if answer.status_code != 200:
        return {}
    return {d["id"]: d["threads_down"] for d in answer.json()["dispatchers"]}


def collect(cluster: Cluster, injector: faults.Injector, window_end: float) -> checker.Run:
    """How the system ended, then everything stopped, then what the checker reads."""
    live = _live_dispatchers(cluster)
    try:
        ready = cluster.system.call("GET", "/readyz").status_code == 200
    except requests.RequestException:
        ready = False
    unexpected = tuple(cluster.unexpected_exits)
    try:
        codes = cluster.close()
        jobs, crons = cluster.snapshot()
    finally:
        cluster.remove()
    return checker.Run(
        timing=cluster.timing,
        window_end=window_end,
        arrivals=cluster.arrivals(),
        jobs=jobs,
        crons=crons,
        limits=tuple(injector.limits),
        faults=tuple(injector.faults),
        cron_spans=tuple(faults.cron_spans(injector.cron_events, window_end)),
        ending=checker.Ending(
            dispatchers=live,
            expected_dispatchers=len(cluster.dispatcher_slots),
            ready=ready,
            unexpected_exits=unexpected,
            stop_codes=codes,
        ),
    )


def _remove(workdir: pathlib.Path, keep: pathlib.Path | None) -> None:
    if keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos",
        description="The chaos soak: the Procfile's processes under load and faults at random,"
        " then the invariants over the receivers' logs and the database.",
    )
    parser.add_argument("--seed", type=int, help="seed of the plan (default: drawn and printed)")
    parser.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION,
        help="seconds of faults (default %(default)g)",
    )
    parser.add_argument("--dispatchers", type=int, default=DEFAULT_DISPATCHERS, choices=(2, 3))
    parser.add_argument(
        "--drain",
        type=float,
        default=DEFAULT_DRAIN,
        help="seconds the jobs get to finish after the faults (default %(default)g)",
    )
    parser.add_argument(
        "--limit",
        type=float,
        default=DEFAULT_LIMIT,
        help="seconds the whole run may take (default %(default)g)",
    )
    parser.add_argument("--keep", type=pathlib.Path, help="keep the logs and run.json here")
    parser.add_argument("--output", type=pathlib.Path, help="write the report into this file")
    parser.add_argument("--check", type=pathlib.Path, help="check a kept run.json again, only")
    args = parser.parse_args(argv)
    if args.check:
        findings = checker.check(checker.Run.from_json(json.loads(args.check.read_text())))
        print(report.findings_table(findings))
        return 1 if any(f.fails_run for f in findings) else 0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    print(f"chaos: seed {seed} (run it again with --seed {seed})", flush=True)
    result = run(
        seed,
        args.duration,
        args.dispatchers,
        args.drain,
        args.keep,
        log=lambda line: print(line, flush=True),
        limit=args.limit,
    )
    text = report.render(result)
    print(text)
    if args.output:
        report.update(args.output, text)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs every scenario in order and writes the report; `python -m tests.bench --help`."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

from tests import support
from tests.bench import (
    compare,
    crons,
    dashboard,
    history,
    loadgen,
    mixed,
    plot,
    pooled,
    postgres,
    report,
    retention,
    scenarios,
    spy,
    system,
    targets,
)
from tests.bench.receiver import ReceiverProcess

LIBRARIES = ("gunicorn", "flask", "psycopg", "apscheduler", "sqlalchemy", "requests")
# Every scenario, in the order a run makes them.
SCENARIOS = (
    "instruments",
    "accept",
    "batch",
    "steady_empty",
    "burst_1",
    "burst_2",
    "cron",
    "steady_backlog",
    "dashboard",
    "retention",
    "mixed_1",
    "mixed_2",
    "flow_cost",
    "cron_boundary",
    "cron_seconds",
    "cron_failover",
    *pooled.SCENARIOS,
)
# Names --only also takes, each for several scenarios. `refactor`: the insert figures (accept,
# whose ratios are to the no-op ceiling, with the instruments), steady and the bursts, to check
# that a change meant to alter no timing lands each inside the range of the last full runs.
# `mixed`: the endpoints with limits delivering at once, with 1 and 2 dispatchers, and the cost
# of flow keys. `crons`: crons at scale, recorded with their endpoint paused: many crons at one
# boundary and the POST that sets them, every-second crons, and their leader's failover.
# `pooler`: steady, a burst with one dispatcher and jobs due now, through a transaction-mode
# pooler without a direct URL, beside the direct steady and burst runs they are compared with.
PRESETS = {
    "refactor": ("instruments", "accept", "steady_empty", "burst_1", "burst_2"),
    "mixed": ("mixed_1", "mixed_2", "flow_cost"),
    "crons": ("cron_boundary", "cron_seconds", "cron_failover"),
    "pooler": ("steady_empty", "burst_1", *pooled.SCENARIOS),
}


def selected(names: str) -> tuple[str, ...] | None:
    """The scenarios --only names (scenarios or presets), in run order; None for all of them.
    ValueError for a name that is neither."""
    chosen: set[str] = set()
    for name in filter(None, (part.strip() for part in names.split(","))):
        if name in PRESETS:
            chosen.update(PRESETS[name])
        elif name in SCENARIOS:
            chosen.add(name)
        else:
            raise ValueError(name)
    if not chosen:
        raise ValueError(names)
    return None if chosen == set(SCENARIOS) else tuple(n for n in SCENARIOS if n in chosen)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine_facts(server: str, generator: str, settings: dict[str, str]) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    memory_kb = 0
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    if generator == "wrk":
        done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        generator_text = (done.stdout or done.stderr).split("Copyright")[0].strip()
    else:
        generator_text = (
            "python -m tests.bench.loadgen (one process per core, raw keep-alive sockets)"
        )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_kb / 1024 / 1024,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgres": postgres.server_facts(server),
        "database": postgres.source(),
        "generator": generator_text,
        "libraries": {name: importlib.metadata.version(name) for name in LIBRARIES},
        "settings": settings,
        "code": system.code_digest(),
    }


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.plan = scenarios.QUICK if args.quick else scenarios.FULL
        self.generator = loadgen.generator_name(args.generator)
        self.output = pathlib.Path(args.output)
        self.history = (
            pathlib.Path(args.history) if args.history else self.output.parent / history.FILE_NAME
        )
        self.note = args.note
        self.only = selected(args.only) if args.only else None
        self.profiler = spy.Profiler(pathlib.Path(args.profile) if args.profile else None)
        self.logs = pathlib.Path(tempfile.mkdtemp(prefix="scheduler-bench-"))
        self.results: dict[str, Any] = {
            "plan": dataclasses.asdict(self.plan),
            "errors": {},
            "all_scenarios": list(SCENARIOS),
            "presets": {name: list(names) for name, names in PRESETS.items()},
        }
        if self.only is not None:
            self.results["only"] = list(self.only)

    def wanted(self, *names: str) -> bool:
        """Whether --only leaves any of these scenarios to run."""
        return self.only is None or any(name in self.only for name in names)

    def attempt(self, name: str, scenario: Callable[[], Any]) -> bool:
        """Run one scenario; a failure is reported and the others still run. A scenario left out
        by --only counts as run, so those after it still run."""
        if self.only is not None and name not in self.only:
            return True
        log(f"{name} ...")
        started = time.monotonic()
        try:
            self.results[name] = scenario()
        except Exception:
            self.results["errors"][name] = traceback.format_exc()
            log(f"{name} failed:\n{traceback.format_exc()}")
            return False
        elapsed = time.monotonic() - started
        self.results.setdefault("seconds", {})[name] = elapsed
        log(f"{name} done in {elapsed:.0f} s")
        return True

    def main(self) -> int:
        started = time.monotonic()
        self.results["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        server = postgres.server_url()
        template = support.ensure_template(server)
        receiver = ReceiverProcess()
        collector = scenarios.Collector(receiver)

        def fresh(
            env: dict[str, str] | None = None,
        ) -> contextlib.AbstractContextManager[system.System]:
            return system.fresh_system(
                server, template, receiver.url, self.logs, receiver.proc.pid, env
            )

        try:
            with fresh() as first:
                self.results["machine"] = machine_facts(
                    server, self.generator, system.settings_facts(first.settings)
                )
                off = postgres.not_durable(self.results["machine"]["postgres"])
                if off:
                    log(
                        f"PostgreSQL is NOT DURABLE here ({', '.join(off)} off); the report says so"
                    )
                self.accepting(first, receiver)
            with fresh() as second:
                self.delivering(second, collector)
            with fresh() as third:
                self.attempt(
                    "steady_backlog",
                    lambda: scenarios.steady_session(
                        third,
                        collector,
                        self.plan,
                        self.plan.backlog,
                        self.generator,
                        self.profiler,
                    ),
                )
                self.results["exit_codes_backlog"] = third.stop()
            with fresh() as fourth:
                self.attempt(
                    "dashboard",
                    lambda: dashboard.measure(
                        fourth, self.plan.dashboard_jobs, self.plan.dashboard_requests
                    ),
                )
                self.results["exit_codes_dashboard"] = fourth.stop()
            with fresh(retention.env()) as fifth:
                self.attempt("retention", lambda: retention.measure(fifth, collector, self.plan))
                self.results["exit_codes_retention"] = fifth.stop()
            with fresh(mixed.env(receiver, self.plan)) as sixth:
                self.mixing(sixth, collector)
            with fresh(mixed.env(receiver, self.plan)) as seventh:
                if self.wanted("flow_cost"):
                    seventh.start_web()
                    seventh.start_worker()
                    seventh.wait_active()
                self.attempt("flow_cost", lambda: mixed.flow_cost(seventh, collector, self.plan))
                self.results["exit_codes_flow_cost"] = seventh.stop()
            with fresh() as eighth:
                self.attempt(
                    "cron_boundary", lambda: crons.boundary(eighth, self.plan, self.profiler)
                )
                self.results["exit_codes_cron_boundary"] = eighth.stop()
            with fresh() as ninth:
                every_second = crons.EverySecond(ninth, self.plan, self.profiler)
                self.attempt("cron_seconds", every_second.measure)
                self.attempt("cron_failover", every_second.failover)
                self.results["exit_codes_cron_seconds"] = ninth.stop()
            if self.wanted(*pooled.SCENARIOS):
                with pooled.pooler(server, self.logs) as bouncer, fresh() as tenth:
                    self.pooling(tenth, bouncer, collector)
        finally:
            receiver.close()
        self.results["elapsed_s"] = time.monotonic() - started
        return self.write()

    def accepting(self, first: system.System, receiver: ReceiverProcess) -> None:
        """The instruments' ceilings, then scenarios 1 and 2."""
        plan, generator = self.plan, self.generator
        self.attempt("instruments", lambda: scenarios.instruments(receiver, plan, generator))
        if not self.wanted("accept", "batch"):
            return
        first.start_web()
        first.start_worker()
        first.wait_active()
        self.attempt("accept", lambda: scenarios.accept(first, plan, generator, self.profiler))
        self.attempt("batch", lambda: scenarios.batch_accept(first, plan, generator))

    def delivering(self, second: system.System, collector: scenarios.Collector) -> None:
        """Start-up and steady lateness on an empty backlog, then the bursts with 1 and with 2
        dispatchers, then the crons (with the first dispatcher alone again)."""
        plan = self.plan
        if not self.attempt(
            "steady_empty",
            lambda: scenarios.steady_session(
                second, collector, plan, 0, self.generator, self.profiler
            ),
        ):
            return
        for dispatchers in (1, 2):
            self.attempt(
                f"burst_{dispatchers}",
                lambda n=dispatchers: scenarios.burst_series(
                    second, collector, plan, n, self.profiler
                ),
            )
        self.results["exit_codes_extra_workers"] = second.stop_extra_workers()
        worker = lambda: [second.worker_pid]  # noqa: E731
        # Left out by --only, the scenario has no worker to record.
        recording = (
            self.profiler.record("cron", worker)
            if self.wanted("cron")
            else contextlib.nullcontext()
        )
        with recording:
            self.attempt("cron", lambda: scenarios.cron_load(second, collector, plan))
        self.results["exit_codes_empty"] = second.stop()

    def mixing(self, sixth: system.System, collector: scenarios.Collector) -> None:
        """The mixed endpoints with 1, then 2 dispatchers."""
        if not self.wanted("mixed_1", "mixed_2"):
            return
        sixth.start_web()
        sixth.start_worker()
        sixth.wait_active()
        for dispatchers in (1, 2):
            self.attempt(
                f"mixed_{dispatchers}",
                lambda n=dispatchers: mixed.measure(sixth, collector, self.plan, n),
            )
        self.results["exit_codes_mixed"] = sixth.stop()

    def pooling(
        self, tenth: system.System, bouncer: pooled.Bouncer | None, collector: scenarios.Collector
    ) -> None:
        """Steady, a burst and jobs due now with every process through the pooler."""
        if bouncer is None:
            log(f"{', '.join(pooled.SCENARIOS)} skipped: {pooled.MISSING}")
            for name in pooled.SCENARIOS:
                self.attempt(name, lambda: {"skipped": pooled.MISSING})
            return
        pooled.route(tenth, bouncer)
        self.results["pooler"] = bouncer.facts()
        through = pooled.Pooled(tenth, collector, self.plan, self.generator, self.profiler)
        self.attempt("pooled_steady", through.steady)
        self.attempt("pooled_burst", through.burst)
        self.attempt("pooled_due_now", through.due_now)
        self.results["exit_codes_pooled"] = tenth.stop()

    def write(self) -> int:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        # The full report's figure is lateness.png; another report's is named after it, so that
        # a partial run written beside the full report leaves the full report's figure alone.
        stem = "" if self.output.name == "benchmarks.md" else self.output.stem + "-"
        figure_path = self.output.parent / f"{stem}lateness.png"
        figure = None
        if plot.available() and plot.draw(self.results, figure_path):
            figure = os.path.relpath(figure_path, self.output.parent)
        raw = self.logs / "results.json"
        raw.write_text(json.dumps(self.results, indent=1, default=str))
        self.history.parent.mkdir(parents=True, exist_ok=True)
        runs = history.record(self.history, history.entry(self.results, self.note))
        self.output.write_text(report.render(self.results, figure, runs))
        for target in targets.evaluate(self.results):
            log(f"{target.verdict} {target.name}: {target.measured:.2f} {target.unit}")
        found = compare.compare(runs[:-1], compare.figures(self.results))
        for c in found:
            span = "no earlier full run" if c.low is None else f"{c.low:g}..{c.high:g}"
            log(f"{c.status or 'n/a'} {c.key}: {c.measured:g} against {span}")
        log(compare.verdict(found, list(self.results["errors"])))
        log(f"report: {self.output}; raw results and process logs: {self.logs}")
        return 1 if self.results["errors"] else 0


DEFAULT_OUTPUT = support.ROOT / "docs" / "benchmarks.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a few hundred jobs per scenario (under a minute)"
    )
    parser.add_argument(
        "--output",
        default=str(DEFAULT_OUTPUT),
        help="the Markdown report; the figure goes beside it (lateness.png beside benchmarks.md)",
    )
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="HTTP load generator (auto: wrk when on PATH)",
    )
    parser.add_argument(
        "--note",
        default="",
        help="what changed since the previous run, for the report's history",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record the workers with py-spy during the bursts and the backlog start-up",
    )
    parser.add_argument(
        "--history",
        metavar="FILE",
        help=f"the history this run is compared with and recorded in (default: {history.FILE_NAME} "
        "beside --output)",
    )
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="run only these scenarios, to check one change quickly: comma-separated names as "
        f"logged ({', '.join(SCENARIOS)}) or "
        + "; ".join(f"{name} for {','.join(names)}" for name, names in PRESETS.items())
        + ". The report goes elsewhere than the full report (--output); the run is recorded in "
        "the history as partial, which later comparisons leave out. To check that a refactor "
        "lands every insert, steady and burst figure inside the range of the last three full "
        f"runs: --only refactor --history docs/{history.FILE_NAME} --output <elsewhere>.md",
    )
    args = parser.parse_args(argv)
    if args.only:
        try:
            selected(args.only)
        except ValueError as error:
            parser.error(f"--only: unknown scenario or preset {error}")
        if pathlib.Path(args.output).resolve() == DEFAULT_OUTPUT.resolve():
            parser.error("--only writes a partial report: give --output elsewhere than docs/")
    if args.generator == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not on PATH")
    if args.profile and not shutil.which("py-spy"):
        parser.error("py-spy is not on PATH (pip install py-spy)")
    return args


def main(argv: list[str] | None = None) -> int:
    return Run(parse_args(argv)).main()

"""The pooled scenarios' arithmetic on hand-made data: when the due-now jobs are inserted, what
their lateness counts from, the pooler's configuration, and how a run's figures become targets
and a report section beside the direct ones."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from typing import Any

import pytest

from tests.bench import pooled, report, run, scenarios, targets

NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?%?$")
PLAN = dataclasses.asdict(scenarios.QUICK)
# The parts every CpuMeter reading has, beside those a test sets.
CPU = {"web": 0.0, "receiver": 0.2, "pgbouncer": 0.02, "other": 1.0}
SKIPPED = {name: {"skipped": pooled.MISSING} for name in pooled.SCENARIOS}


def test_due_now_inserts_are_spread_at_random_within_the_spacing_and_repeat() -> None:
    offsets = pooled.insert_offsets(30, (0.2, 0.4), pooled.DUE_NOW_SEED)
    assert offsets == pooled.insert_offsets(30, (0.2, 0.4), pooled.DUE_NOW_SEED)
    assert offsets[0] == 0.0 and offsets[-1] < 30
    gaps = [later - earlier for earlier, later in itertools.pairwise(offsets)]
    assert all(0.2 <= gap <= 0.4 for gap in gaps)
    # Random gaps, so that the inserts meet the dispatcher's look at every phase of it.
    assert len({round(gap, 3) for gap in gaps}) > len(gaps) // 2
    assert 75 <= len(offsets) <= 150
    assert pooled.insert_offsets(0, (0.2, 0.4), 1) == []


def test_due_now_lateness_counts_from_the_insert_answer() -> None:
    sent = {"a": 100.0, "b": 101.0, "c": 102.0}
    answered = {"a": 100.01, "b": 101.02, "c": 102.01}
    arrivals = {"a": [100.31], "b": [101.52, 101.6]}
    out = pooled.due_now_summary(sent, answered, arrivals)
    assert (out["jobs"], out["delivered"], out["lost"], out["duplicates"]) == (3, 2, 1, 1)
    assert out["lateness_ms"]["p50"] == pytest.approx(300.0)
    assert out["lateness_ms"]["max"] == pytest.approx(500.0)
    assert out["from_sent_ms"]["max"] == pytest.approx(520.0)
    assert out["answer_ms"]["max"] == pytest.approx(20.0)


def test_the_pooler_reaches_the_server_at_its_own_address_in_transaction_mode() -> None:
    socket_url = "postgresql://postgres:@/postgres?host=/srv/pgdata&port=5433"
    assert pooled.server_address(socket_url) == ("/srv/pgdata", 5433, "postgres")
    assert pooled.server_address("postgresql://bench@127.0.0.1/test") == (
        "127.0.0.1",
        5432,
        "bench",
    )
    text = pooled.bouncer_config("/srv/pgdata", 5433, 6432, pooled.pathlib.Path("/w/users.txt"))
    lines = text.splitlines()
    assert "* = host=/srv/pgdata port=5433" in lines
    assert "listen_port = 6432" in lines
    assert "pool_mode = transaction" in lines
    assert "auth_file = /w/users.txt" in lines


def steady_session(p99: float = 6.0) -> dict[str, Any]:
    late = {"p50": 3.0, "p95": 5.0, "p99": p99, "max": p99 + 4}
    cpu = {
        **CPU,
        "worker": 1.2,
        "postgres": 0.6,
        "pgbouncer": 0.1,
        "machine": 20.0,
        "wall": 12.0,
    }
    return {
        "backlog": 0,
        "startup": {"active_s": 0.8, "probe_delivered_s": 1.01, "probe_due_s": 1.0},
        "insert": {"rate": 900.0, "p50_ms": 8.0, "p99_ms": 30.0},
        "steady": {
            "jobs": 1200,
            "delivered": 1200,
            "lost": 0,
            "duplicates": 0,
            "lateness_ms": late,
            "cpu": cpu,
            "rounds": [{"cpu": cpu, "jobs": 400, "lateness_ms": late} for _ in range(3)],
        },
    }


def burst(rate: float, lost: int = 0) -> dict[str, Any]:
    cpu = {**CPU, "worker": 2.0, "postgres": 0.5, "pgbouncer": 0.05, "machine": 6.0, "wall": 4.0}
    return {
        "dispatchers": 1,
        "runs": [{"rate": rate, "cpu": cpu, "delivered": 5000 - lost}],
        "rate": rate,
        "ceiling_rate": 1000.0,
        "ratio": rate / 1000,
        "ratio_min": rate / 1000,
        "ratio_max": rate / 1000,
        "jobs": 5000,
        "delivered": 5000 - lost,
        "lost": lost,
        "duplicates": 0,
        "claims_per_delivery": 0.05,
        "cpu": cpu,
    }


def due_now(late: float = 0.3) -> dict[str, Any]:
    sent = {f"j{n}": float(n) for n in range(20)}
    answered = {job: at + 0.01 for job, at in sent.items()}
    arrivals = {job: [at + late + 0.01 * (n % 5)] for n, (job, at) in enumerate(answered.items())}
    return {
        **pooled.due_now_summary(sent, answered, arrivals),
        "cpu": {**CPU, "web": 0.1, "worker": 0.2, "postgres": 0.3, "machine": 5.0, "wall": 20.0},
        "seconds": 20.5,
        "look_interval_s": 0.5,
        "spacing_s": [0.2, 0.4],
    }


def results(direct: bool = True, p99: float = 6.0, late: float = 0.3) -> dict[str, Any]:
    found: dict[str, Any] = {
        "plan": PLAN,
        "pooler": {
            "version": "PgBouncer 1.18.0",
            "pool_mode": "transaction",
            "reaches": "Unix socket",
            "look_interval_s": 0.5,
        },
        "pooled_steady": steady_session(p99),
        "pooled_burst": burst(800.0),
        "pooled_due_now": due_now(late),
    }
    if direct:
        found.update(steady_empty=steady_session(4.0), burst_1=burst(1000.0))
    return found


def pooled_targets(found: dict[str, Any]) -> dict[str, targets.Target]:
    return {t.key: t for t in targets.evaluate(found) if t.key.startswith("Pooled ")}


def test_the_pooled_targets_pass_within_the_direct_steady_bounds_and_a_second() -> None:
    found = pooled_targets(results())
    assert sorted(found) == [
        "Pooled due now p95 (ms)",
        "Pooled lost + duplicated",
        "Pooled steady max (ms)",
        "Pooled steady p99 (ms)",
    ]
    assert all(t.passed for t in found.values()), [t for t in found.values() if not t.passed]
    # The direct steady target's bounds, from their one home.
    assert found["Pooled steady p99 (ms)"].threshold == f"< {targets.STEADY_P99_MS:g}"
    assert found["Pooled steady max (ms)"].threshold == f"< {targets.STEADY_MAX_MS:g}"
    assert found["Pooled due now p95 (ms)"].measured == pytest.approx(340.0)
    assert "20 of 20 arrived" in found["Pooled due now p95 (ms)"].detail
    assert found["Pooled lost + duplicated"].detail == (
        "lost/duplicated: steady 0/0, burst 0/0, due now 0/0"
    )


def test_the_pooled_targets_miss_on_late_steady_and_due_now_jobs_and_a_lost_one() -> None:
    late = results(p99=targets.STEADY_P99_MS + 1, late=1.2)
    late["pooled_burst"] = burst(800.0, lost=2)
    found = pooled_targets(late)
    assert not found["Pooled steady p99 (ms)"].passed
    assert found["Pooled steady max (ms)"].passed
    assert not found["Pooled due now p95 (ms)"].passed
    assert found["Pooled lost + duplicated"].measured == 2
    assert not found["Pooled lost + duplicated"].passed
    # Pooled losses have their own target, apart from the run's totals.
    assert targets.loss_totals(late)[:2] == (0, 0)


def test_the_pooled_targets_miss_when_not_run_and_say_why_when_skipped() -> None:
    for found, detail in (
        (pooled_targets({}), "not run"),
        (
            pooled_targets(SKIPPED),
            f"skipped: {pooled.MISSING}",
        ),
    ):
        assert len(found) == 4
        for target in found.values():
            assert not target.passed
            assert math.isnan(target.measured)
            assert target.detail == detail
    partly = results()
    del partly["pooled_due_now"]
    assert not pooled_targets(partly)["Pooled lost + duplicated"].passed


def rows_of(text: str) -> list[list[str]]:
    return [
        line.strip(" |").split(" | ")
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| ---")
    ]


def test_the_section_sets_the_pooled_figures_beside_the_direct_ones() -> None:
    text = report._pooler(results())
    assert text.startswith(report.POOLER_HEADING)
    assert "PgBouncer 1.18.0 in `pool_mode = transaction`" in text
    rows = rows_of(text)
    assert ["Measure", "Direct", "Through the pooler", "Pooler / direct"] in rows
    by_label = {row[0]: row[1:] for row in rows}
    assert by_label["Burst, 1 dispatcher: median (/s)"] == ["1,000", "800", "0.80"]
    # Dispatcher (2.0 s) and PostgreSQL (0.5 s) over 5,000 deliveries.
    assert by_label["Burst: dispatcher + PostgreSQL CPU per delivery (ms)"] == [
        "0.50",
        "0.50",
        "1.00",
    ]
    assert by_label["Steady: lateness p99 (ms)"] == ["4.0", "6.0", "1.50"]
    assert by_label["Answer to arrival p95 (ms)"] == ["340"]
    assert by_label["Burst (per delivery)"][3] == "0.01"  # PgBouncer's CPU, apart
    headers = {"Measure", "Window"}
    for row in rows:
        if row[0] not in headers:
            assert all(NUMBER.match(cell) for cell in row[1:]), row


def test_without_the_direct_runs_the_section_shows_the_pooled_figures_alone() -> None:
    text = report._pooler(results(direct=False))
    assert "This run measured no direct steady session or burst" in text
    assert ["Measure", "Through the pooler"] in rows_of(text)
    assert "| Burst, 1 dispatcher: median (/s) | 800 |" in text


def test_the_section_says_when_the_scenarios_did_not_run_or_were_skipped() -> None:
    assert report._pooler({"plan": PLAN}).endswith("Not run.\n")
    skipped = {"plan": PLAN, **SKIPPED}
    assert report._pooler(skipped) == f"{report.POOLER_HEADING}\n\nSkipped: {pooled.MISSING}.\n"


def test_only_pooler_runs_the_pooled_scenarios_beside_the_direct_steady_and_burst() -> None:
    assert run.selected("pooler") == (
        "steady_empty",
        "burst_1",
        "pooled_steady",
        "pooled_burst",
        "pooled_due_now",
    )
    assert run.selected("pooled_due_now") == ("pooled_due_now",)
    assert report.POOLER_HEADING in report.SECTIONS

"""The crons-at-scale scenario's arithmetic: ticks owed against the rows recorded, when a reader
saw them, the first ticks after a POST, the gap a killed leader left, and how a run's figures
become targets and a report section."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from typing import Any

import pytest

from tests.bench import crons, report, run, scenarios, targets
from tests.bench.crons import Recorded, Schedule

START = dt.datetime(2030, 1, 1, 10, 0, 0, tzinfo=dt.UTC)
EVERY = crons.EVERY_SECOND
MINUTE = "0 * * * * *"
WINDOW = 3600.0
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?%?$")


def at(seconds: float) -> dt.datetime:
    return START + dt.timedelta(seconds=seconds)


def rows_for(
    schedule: Schedule, ticks: list[float], late: float = 0.02, state: str = "scheduled"
) -> list[Recorded]:
    """One statement's rows per tick, for every cron of `schedule`, `late` seconds after it."""
    return [
        Recorded(schedule.spec, schedule.updated_at, at(t), at(t + late), state, schedule.crons)
        for t in ticks
    ]


# Three every-second crons since 10:00:00.5 and two minute crons since 09:59:30.
SECONDS = Schedule(EVERY, at(0.5), 3)
MINUTES = Schedule(MINUTE, at(-30), 2)


def test_every_tick_owed_since_each_schedule_started_has_its_row() -> None:
    recorded = rows_for(SECONDS, [1, 2, 3, 4]) + rows_for(MINUTES, [0], late=0.5)
    out = crons.summarise_ticks([SECONDS, MINUTES], recorded, None, at(5), WINDOW)
    # :01 to :04 for the every-second crons (not :00, before their start), 10:00:00 for the others.
    assert (out["crons"], out["ticks"], out["expected"], out["recorded"]) == (5, 5, 14, 14)
    assert (out["missing"], out["extra"], out["missed_inside_window"]) == (0, 0, 0)
    assert out["recorded_pct"] == 100.0
    assert out["states"] == {"scheduled": 14}
    assert out["lateness_ms"]["p50"] == pytest.approx(20.0)
    assert out["lateness_ms"]["max"] == pytest.approx(500.0)
    assert crons.complete(out)


def test_a_missing_row_an_extra_row_and_a_tick_missed_inside_the_window_are_counted() -> None:
    recorded = rows_for(SECONDS, [1, 3, 4])
    recorded.append(Recorded(EVERY, SECONDS.updated_at, at(2), at(2.1), "scheduled", 2))
    # Not a time the spec fires at, and a tick before the schedule started.
    recorded.append(Recorded(EVERY, SECONDS.updated_at, at(2.5), at(2.6), "scheduled", 1))
    recorded.append(Recorded(EVERY, SECONDS.updated_at, at(0), at(0.6), "scheduled", 1))
    recorded += rows_for(MINUTES, [0], late=5.0, state="missed")
    out = crons.summarise_ticks([SECONDS, MINUTES], recorded, None, at(5), WINDOW)
    assert (out["expected"], out["recorded"], out["missing"], out["extra"]) == (14, 13, 1, 2)
    assert out["missed_inside_window"] == 2
    assert out["states"] == {"missed": 2, "scheduled": 13}
    assert out["recorded_pct"] == pytest.approx(100 * 13 / 14)
    assert not crons.complete(out)
    # A tick older than the window when recorded may be missed.
    assert crons.summarise_ticks([MINUTES], recorded, None, at(5), 4.0)["missed_inside_window"] == 0


def test_a_window_counts_only_the_ticks_inside_it() -> None:
    recorded = rows_for(SECONDS, [1, 2, 3, 4, 5, 6], late=0.01)
    out = crons.summarise_ticks([SECONDS], recorded, at(3), at(5), WINDOW)
    assert (out["ticks"], out["expected"], out["recorded"], out["extra"]) == (2, 6, 6, 0)
    nothing = crons.summarise_ticks([SECONDS], [], at(5), at(5), WINDOW)
    assert nothing["expected"] == 0
    assert math.isnan(nothing["recorded_pct"])
    assert math.isnan(nothing["lateness_ms"]["p99"])
    assert not crons.complete(nothing)


def test_expected_ticks_follow_the_spec() -> None:
    assert crons.expected_ticks(EVERY, at(0.5), at(3)) == [at(1), at(2)]
    assert crons.expected_ticks(MINUTE, at(-90), at(60)) == [at(-60), at(0)]
    assert crons.expected_ticks("*/5 * * * * *", at(1), at(11)) == [at(5), at(10)]


def test_a_tick_is_seen_when_the_reader_first_read_it_or_a_later_one() -> None:
    base = START.timestamp()
    seen = [(base + 1.2, at(1)), (base + 3.4, at(3))]
    late, unseen = crons.seen_lateness(seen, [at(1), at(2), at(3), at(4)])
    assert late == [pytest.approx(0.2), pytest.approx(1.4), pytest.approx(0.4)]
    assert unseen == 1
    assert crons.seen_lateness([], [at(1)]) == ([], 1)


def test_first_ticks_count_from_the_answer_and_wait_for_every_cron() -> None:
    answered = START.timestamp()
    firsts = [(at(0.5), 3), (at(1.25), 1)]
    out = crons.first_ticks(answered, firsts, 4)
    assert (out["fired"], out["first_s"], out["p50_s"], out["all_s"]) == (4, 0.5, 0.5, 1.25)
    assert math.isnan(crons.first_ticks(answered, firsts, 5)["all_s"])
    assert math.isnan(crons.first_ticks(answered, [], 5)["first_s"])


def test_the_gap_runs_from_the_last_tick_before_the_kill_to_the_first_record_after() -> None:
    recorded = rows_for(SECONDS, [1, 2, 3]) + [
        Recorded(EVERY, SECONDS.updated_at, at(t), at(12.5), "scheduled", 3) for t in (4, 5, 6)
    ]
    killed = at(3.5).timestamp()
    assert crons.gap_window(recorded, killed) == (at(3) + dt.timedelta(microseconds=1), at(12.5))
    assert crons.gap_window(recorded[:3], killed) is None
    assert crons.recorded_between(recorded, killed, at(13).timestamp()) == 9
    start, end = crons.gap_window(recorded, killed) or (at(0), at(0))
    gap = crons.summarise_ticks([SECONDS], recorded, start, end, WINDOW)
    assert (gap["ticks"], gap["expected"], gap["recorded"]) == (9, 27, 9)
    assert gap["missing"] == 18  # ticks 7 to 12 were not recorded yet


def test_cpu_is_per_tick_recorded_in_the_window() -> None:
    recorded = rows_for(SECONDS, [1, 2, 3, 4])
    cpu = {"worker": 0.01, "worker2": 0.5, "postgres": 0.06, "machine": 1.0, "wall": 1.0}
    window = crons.Window(cpu, "worker", at(1).timestamp(), at(3.5).timestamp(), True)
    out = crons.cpu_figures(window, recorded)
    assert out["ticks_recorded"] == 9
    assert out["leader_ms_per_tick"] == pytest.approx(10 / 9)
    assert out["postgres_ms_per_tick"] == pytest.approx(60 / 9)
    assert math.isnan(
        crons.cpu_figures(window._replace(leader_part=None), [])["leader_ms_per_tick"]
    )
    assert crons.part_of({"web": 7, "worker": 8, "worker2": 9}, 9) == "worker2"
    assert crons.part_of({"worker": None}, None) is None


PLAN = dataclasses.replace(
    scenarios.QUICK, cron_scale_count=2, cron_boundary_spec=MINUTE, cron_seconds_count=3
)


def results(tick_late: float = 0.02, answer_s: float = 0.5) -> dict[str, Any]:
    """A run of the three scenarios on hand-made rows."""
    cpu = {"worker": 0.01, "postgres": 0.06, "web": 0.0, "machine": 1.0, "wall": 2.0}
    shared = Schedule(MINUTE, at(-30), 2)
    shared_rows = rows_for(shared, [0], late=tick_late)
    window = crons.Window(cpu, "worker", at(-0.5).timestamp(), at(1).timestamp(), True)
    seconds_rows = rows_for(SECONDS, [1, 2, 3, 4], late=tick_late)
    seconds_window = crons.Window(cpu, "worker", at(0.5).timestamp(), at(4.5).timestamp(), None)
    killed = at(4.5).timestamp()
    failover_rows = seconds_rows + [
        Recorded(EVERY, SECONDS.updated_at, at(t), at(9.5), "scheduled", 3) for t in range(5, 10)
    ]
    gap = crons.gap_window(failover_rows, killed)
    assert gap is not None
    return {
        "plan": dataclasses.asdict(PLAN),
        "cron_boundary": {
            "crons": 2,
            "spec": MINUTE,
            "post": {
                **crons.first_ticks(at(-40).timestamp(), [(at(-39), 2)], 2),
                "answer_s": answer_s,
                "seen_s": 1.1,
            },
            "replace_answer_s": 0.7,
            "lead_s": 20.0,
            "ticks": crons.summarise_ticks([shared], shared_rows, None, at(0.1), WINDOW),
            # Committed (seen) some 20 ms after the transaction began.
            "seen_ms": dict.fromkeys(("p50", "p95", "p99", "max"), tick_late * 1000 + 20),
            **crons.cpu_figures(window, shared_rows),
        },
        "cron_seconds": {
            "crons": 3,
            "dispatchers": 2,
            "seconds": 4,
            "ticks": crons.summarise_ticks([SECONDS], seconds_rows, at(1), at(5), WINDOW),
            "seen_ms": {
                "p50": tick_late * 1000 + 10,
                "p95": tick_late * 1000 + 25,
                "p99": tick_late * 1000 + 30,
                "max": tick_late * 1000 + 30,
            },
            **crons.cpu_figures(seconds_window, seconds_rows),
        },
        "cron_failover": {
            "crons": 3,
            "leader_timeout_s": 10.0,
            "catchup_window_s": WINDOW,
            "lease_taken_s": 4.5,
            "resumed_s": 5.0,
            "whole": crons.summarise_ticks([SECONDS], failover_rows, None, at(10), WINDOW),
            "gap": crons.summarise_ticks([SECONDS], failover_rows, *gap, WINDOW),
        },
    }


def cron_targets(found: dict[str, Any]) -> dict[str, targets.Target]:
    return {t.key: t for t in targets.evaluate(found) if t.key.startswith("Cron ")}


def test_the_cron_targets_pass_on_a_run_that_kept_up() -> None:
    found = cron_targets(results())
    assert len(found) == 7
    assert all(t.passed for t in found.values()), [t for t in found.values() if not t.passed]
    assert found["Cron boundary recorded (%)"].measured == 100.0
    assert found["Cron seconds p99 (ms)"].measured == pytest.approx(50.0), "when committed"
    assert found["Cron POST (ms)"].measured == pytest.approx(500.0)
    assert found["Cron POST to fire (ms)"].measured == pytest.approx(1000.0)
    assert found["Cron failover recorded (%)"].measured == 100.0
    assert "the gap's 15 of 15 ticks recorded" in found["Cron failover recorded (%)"].detail
    assert (
        "transaction began (created_at - run_at) p99 20 ms" in found["Cron seconds p99 (ms)"].detail
    )
    assert "2 crons sharing a boundary (`0 * * * * *`)" in found["Cron boundary p99 (ms)"].name


def test_the_cron_targets_miss_on_late_ticks_a_slow_post_and_a_lost_tick() -> None:
    late = results(tick_late=1.5, answer_s=2.5)
    whole = late["cron_failover"]["whole"]
    late["cron_failover"]["whole"] = {**whole, "missing": 1, "recorded": whole["expected"] - 1}
    found = cron_targets(late)
    assert not found["Cron boundary p99 (ms)"].passed
    assert found["Cron boundary p99 (ms)"].measured == pytest.approx(1520.0)
    assert found["Cron boundary recorded (%)"].passed  # late, but recorded
    assert not found["Cron seconds p99 (ms)"].passed
    assert not found["Cron POST (ms)"].passed
    assert not found["Cron failover recorded (%)"].passed


def test_the_cron_targets_miss_when_not_run() -> None:
    found = cron_targets({})
    assert len(found) == 7
    for target in found.values():
        assert not target.passed
        assert math.isnan(target.measured)
        assert target.detail == "not run"


def test_the_cron_section_has_a_row_per_part_and_numbers_in_every_cell() -> None:
    found = results()
    text = report._crons(found)
    assert text.startswith(report.CRONS_HEADING)
    labels = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ")]
    assert "| 2 crons at one boundary (`0 * * * * *`)" in labels
    assert "| 3 every-second crons, 4 s, 2 dispatchers" in labels
    assert "| Leader killed: the ticks left to the next leader" in labels
    headers = ("| Crons", "| Measure", "| Window", "| ---")
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith(headers):
            for cell in line.strip(" |").split(" | ")[1:]:
                assert NUMBER.match(cell), line
    assert report._crons({"plan": found["plan"]}).endswith("Not run.\n")
    cpu = report._cpu({**found, "machine": {"cores": 2}})
    assert "| Every-second crons (per tick recorded) |" in cpu


def test_only_crons_runs_the_three_cron_scenarios() -> None:
    assert run.selected("crons") == ("cron_boundary", "cron_seconds", "cron_failover")
    assert run.selected("cron_failover,mixed_1") == ("mixed_1", "cron_failover")


def test_a_record_no_reader_saw_is_judged_by_its_transaction_start() -> None:
    unseen = results()
    unseen["cron_boundary"]["seen_ms"] = dict.fromkeys(("p50", "p95", "p99", "max"), math.nan)
    found = cron_targets(unseen)["Cron boundary p99 (ms)"]
    assert found.measured == pytest.approx(20.0)
    assert found.passed and "no reader saw the commit" in found.detail

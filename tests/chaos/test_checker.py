"""The soak's invariant checker on hand-made runs: each rule holds on a good run and names what
breaks it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

from tests.chaos import checker
from tests.chaos.checker import Arrival, Cron, CronSpan, Ending, Fault, Job, Limits, Run, Timing

# 2030-01-01T00:00:00Z: whole seconds are cron ticks.
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp()
TIMING = Timing(claim_ahead=0.05, attempt_deadline=2.5, leader_timeout=6.0, retry_cap=1.5)


def make_run(**changes: Any) -> Run:
    run = Run(
        timing=TIMING,
        window_end=T0 + 100,
        arrivals=(),
        jobs=(),
        crons=(),
        limits=(),
        faults=(),
        ending=Ending(dispatchers={"d1": {}, "d2": {}}, expected_dispatchers=2, ready=True),
    )
    return dataclasses.replace(run, **changes)


def job(job_id: str, state: str = "delivered", **fields: Any) -> Job:
    values: dict[str, Any] = {
        "endpoint": "default",
        "attempts": 1,
        "max_attempts": 3,
        "run_at": T0 + 10,
    }
    values.update(fields)
    return Job(job_id, state=state, **values)


def arrival(
    job_id: str, at: float, took: float = 0.1, status: int | None = 200, **fields: Any
) -> Arrival:
    values: dict[str, Any] = {"endpoint": "default", "attempt": 1, "retry_after": None}
    values.update(fields)
    return Arrival(job_id=job_id, arrived=T0 + at, ended=T0 + at + took, status=status, **values)


def verdict(run: Run, name: str) -> checker.Finding:
    return next(f for f in checker.check(run) if f.name == name)


def test_a_clean_run_passes_every_invariant() -> None:
    run = make_run(
        jobs=(
            job("a"),
            job("b", state="failed", attempts=3),
            job("c", state="cancelled", cancel_requested_at=T0 + 5),
        ),
        arrivals=(
            arrival("a", 10),
            arrival("b", 10, status=500),
            arrival("b", 11, status=500, attempt=2),
            arrival("b", 12, status=500, attempt=3),
        ),
    )
    findings = checker.check(run)
    assert [f.name for f in findings] == list(checker.RULES)
    assert all(f.violations == 0 for f in findings), findings
    assert verdict(run, "outcomes").checked == 3


def test_outcomes_names_each_job_that_did_not_end_as_it_should() -> None:
    run = make_run(
        jobs=(
            job("lost", state="scheduled"),
            job("early_failure", state="failed", attempts=2),
            job("unasked", state="cancelled"),
            job("unanswered"),
            job("later", state="scheduled", run_at=T0 + 200),
            job("tick", state="missed", cron_id="every_second"),
            job("not_a_tick", state="skipped"),
        )
    )
    found = verdict(run, "outcomes")
    assert found.checked == 6
    assert found.violations == 5
    text = "\n".join(found.examples)
    for name in ("lost", "early_failure", "unasked", "unanswered", "not_a_tick"):
        assert f"job {name} " in text
    assert "ended scheduled after 1 of 3 attempts" in text


def test_not_early_compares_arrivals_with_the_due_time_in_database_time() -> None:
    run = make_run(
        jobs=(job("a", run_at=T0 + 10),),
        arrivals=(arrival("a", 9.9), arrival("a", 10.0005, attempt=2)),
    )
    found = verdict(run, "not_early")
    assert (found.checked, found.violations) == (2, 1)
    assert "0.100s before it was due" in found.examples[0]


def test_retry_after_is_checked_only_on_an_answer_that_was_recorded() -> None:
    asked = arrival("a", 10, took=0.1, status=429, retry_after=2)
    again = arrival("a", 11, attempt=2)
    recorded = job("a", attempts=2, recorded={1: 429, 2: 200})
    found = verdict(make_run(jobs=(recorded,), arrivals=(asked, again)), "not_early")
    # Capped at the retry cap (1.5 s): 0.9 s after the answer is too early.
    assert found.violations == 1
    assert "Retry-After of 2s (capped at 1.5s)" in found.examples[0]

    on_time = arrival("a", 11.7, attempt=2)
    assert (
        verdict(make_run(jobs=(recorded,), arrivals=(asked, on_time)), "not_early").violations == 0
    )
    unrecorded = dataclasses.replace(recorded, recorded={2: 200})
    run = make_run(jobs=(unrecorded,), arrivals=(asked, again))
    assert verdict(run, "not_early").violations == 0
    held = make_run(
        jobs=(recorded,),
        arrivals=(asked, again),
        faults=(Fault("kill_dispatcher", "dispatcher-1", T0, T0 + 1, held=("a",)),),
    )
    assert verdict(held, "not_early").violations == 0


def test_cancels_allow_an_attempt_claimed_ahead_but_not_a_later_one() -> None:
    cancelled = job("a", state="cancelled", cancel_requested_at=T0 + 10)
    in_flight = arrival("a", 9.5, took=2, status=500)
    claimed_ahead = arrival("a", 10.2, attempt=2)
    retried = arrival("a", 11, attempt=3)
    waiting = job("b", state="cancelled", cancel_requested_at=T0 + 1)
    run = make_run(jobs=(cancelled, waiting), arrivals=(in_flight, claimed_ahead, retried))
    found = verdict(run, "cancels")
    assert (found.checked, found.violations) == (2, 1)
    assert "job a attempt 3 arrived 1.000s after its cancel" in found.examples[0]


def limited(at: float, took: float, job_id: str) -> Arrival:
    return arrival(job_id, at, took=took, endpoint="limited")


def change(at: float, rate: float | None, most: int | None, paused: bool = False) -> Limits:
    return Limits("limited", T0 + at, T0 + at + 0.01, rate, most, paused)


def test_in_flight_counts_attempts_in_progress_at_each_arrival() -> None:
    limits = (change(0, None, 2),)
    within = [limited(1, 1, "a"), limited(1.5, 1, "b"), limited(2.0, 1, "c")]
    assert verdict(make_run(limits=limits, arrivals=tuple(within)), "limits").violations == 0
    over = [*within, limited(2.2, 1, "d")]
    found = verdict(make_run(limits=limits, arrivals=tuple(over)), "limits")
    assert found.violations == 1
    assert "3 attempts in progress" in found.examples[0]
    assert "(job d), max_in_flight 2" in found.examples[0]


def test_a_lowered_limit_holds_for_starts_after_it_not_for_attempts_already_running() -> None:
    limits = (change(0, None, 3), change(5, None, 1))
    running = [limited(4, 3, "a"), limited(4.2, 3, "b")]
    just_before = limited(5.1, 1, "c")
    assert (
        verdict(make_run(limits=limits, arrivals=(*running, just_before)), "limits").violations == 0
    )
    after = limited(6, 1, "d")
    found = verdict(make_run(limits=limits, arrivals=(*running, after)), "limits")
    assert found.violations == 1


def test_nothing_starts_while_an_endpoint_is_paused() -> None:
    limits = (change(0, None, None), change(5, None, None, paused=True), change(9, None, None))
    arrivals = (
        limited(4, 0.1, "a"),
        limited(5.1, 0.1, "b"),
        limited(7, 0.1, "c"),
        limited(9.05, 0.1, "d"),
    )
    found = verdict(make_run(limits=limits, arrivals=arrivals), "limits")
    assert found.violations == 1
    assert "job c arrived" in found.examples[0] and "paused" in found.examples[0]


def test_the_rate_allows_a_burst_then_the_rate_over_any_window() -> None:
    limits = (change(0, 2, None),)
    # Two at once (the bucket holds one second's worth), then one every half second.
    steady = [limited(1, 0.01, "b1"), limited(1, 0.01, "b2")]
    steady += [limited(1 + 0.5 * n, 0.01, f"s{n}") for n in range(1, 20)]
    assert verdict(make_run(limits=limits, arrivals=tuple(steady)), "limits").violations == 0
    # Slightly too fast for long: 2.5 a second stays within the burst for a while only.
    fast = [limited(1 + 0.4 * n, 0.01, f"f{n}") for n in range(40)]
    found = verdict(make_run(limits=limits, arrivals=tuple(fast)), "limits")
    assert found.violations > 0
    assert "more than its rate allowed" in found.examples[0]


def test_the_rate_is_judged_by_the_limits_in_force_and_not_before_the_first() -> None:
    before = [limited(0.5 + 0.01 * n, 0.01, f"u{n}") for n in range(50)]
    limits = (change(1, 1, None), change(5, 10, None))
    burst = [limited(5.5 + 0.1 * n, 0.01, f"r{n}") for n in range(10)]
    run = make_run(limits=limits, arrivals=(*before, *burst))
    assert verdict(run, "limits").violations == 0
    early = [limited(3 + 0.1 * n, 0.01, f"e{n}") for n in range(10)]
    assert verdict(make_run(limits=limits, arrivals=tuple(early)), "limits").violations > 0


def test_a_paused_bucket_fills_while_nothing_starts() -> None:
    limits = (change(0, 4, None), change(2, 4, None, paused=True), change(5, 4, None))
    before = [limited(1 + 0.1 * n, 0.01, f"b{n}") for n in range(6)]
    after = [limited(5.01 + 0.01 * n, 0.01, f"a{n}") for n in range(5)]
    run = make_run(limits=limits, arrivals=(*before, *after))
    assert verdict(run, "limits").violations == 0
    more = [*after, *(limited(5.1 + 0.01 * n, 0.01, f"m{n}") for n in range(3))]
    assert verdict(make_run(limits=limits, arrivals=(*before, *more)), "limits").violations > 0


def test_a_raised_rate_may_refill_the_bucket_at_once() -> None:
    # Rate 2 drained by a burst; raised to 8 at 3 s: the bucket refills at 8 a second since its
    # last refill, up to 8 tokens, so 8 start at once and then 8 a second.
    limits = (change(0, 2, None), change(3, 8, None))
    drained = [limited(1 + 0.5 * n, 0.01, f"d{n}") for n in range(4)]
    burst = [limited(3.05, 0.01, f"b{n}") for n in range(8)]
    run = make_run(limits=limits, arrivals=(*drained, *burst))
    assert verdict(run, "limits").violations == 0
    too_many = [*burst, *(limited(3.06, 0.01, f"x{n}") for n in range(4))]
    assert verdict(make_run(limits=limits, arrivals=(*drained, *too_many)), "limits").violations > 0


def test_rescues_catch_overlapping_attempts_and_attempts_past_their_deadline() -> None:
    overlap = (arrival("a", 10, took=2, status=None), arrival("a", 11, attempt=2))
    found = verdict(make_run(arrivals=overlap), "rescues")
    assert found.violations == 1
    assert "while attempt 1 was in progress" in found.examples[0]
    too_long = (arrival("b", 10, took=4, status=503),)
    assert "past the 2.5s deadline" in verdict(make_run(arrivals=too_long), "rescues").examples[0]


def test_rescues_refuse_a_deadline_a_cut_dispatcher_could_outlive() -> None:
    timing = dataclasses.replace(TIMING, attempt_deadline=35, leader_timeout=10)
    found = verdict(make_run(timing=timing), "rescues")
    assert found.violations == 1
    assert "not less than half the leader timeout" in found.examples[0]


def tick(cron_id: str, second: int, state: str = "delivered", made: float | None = None) -> Job:
    created = T0 + (second if made is None else made)
    return job(
        f"{cron_id}-{second}", state=state, cron_id=cron_id, run_at=T0 + second, created_at=created
    )


def test_every_tick_since_the_last_change_has_one_record_in_any_state() -> None:
    crons = (
        Cron("every_2s", "*/2 * * * * *", paused=False, updated_at=T0 + 3.5),
        Cron("paused", "* * * * * *", paused=True, updated_at=T0),
    )
    records = [tick("every_2s", s) for s in range(4, 101, 2)]
    records[3] = dataclasses.replace(records[3], state="missed")
    old_spec = tick("every_2s", 3)
    run = make_run(crons=crons, jobs=(*records, old_spec))
    found = verdict(run, "ticks")
    assert (found.checked, found.violations) == (49, 0)

    # A fast leader's early record of the old spec is no violation; a late one is.
    early = tick("every_2s", 5, made=3)
    late = tick("every_2s", 15)
    gap = make_run(crons=crons, jobs=(*records[:5], *records[6:], early, late))
    found = verdict(gap, "ticks")
    assert found.violations == 2
    assert "tick 2030-01-01T00:00:14.000+00:00 has 0 records" in found.examples[0]
    assert found.examples[1] == (
        "cron every_2s: a record at 2030-01-01T00:00:15.000+00:00, made after its spec became"
        " '*/2 * * * * *', which does not fire then"
    )


def test_ticks_are_owed_over_every_span_the_harness_ran_a_cron() -> None:
    crons = (Cron("c", "*/2 * * * * *", paused=False, updated_at=T0 + 50.5),)
    spans = (
        CronSpan("c", "* * * * * *", T0 + 10.2, T0 + 40.7),
        CronSpan("c", "*/2 * * * * *", T0 + 50.5, T0 + 100),
    )
    records = [tick("c", s) for s in range(11, 41)] + [tick("c", s) for s in range(52, 101, 2)]
    run = make_run(crons=crons, cron_spans=spans, jobs=tuple(records))
    found = verdict(run, "ticks")
    # The first span's last ticks, within a leader timeout and a record's time of the change that
    # ended it, may be lost with its old schedule: 11 to 40 - 6 - 2 are owed.
    assert run.timing.leader_timeout == 6
    assert (found.checked, found.violations) == (len(range(11, 33)) + 25, 0)
    found = verdict(dataclasses.replace(run, jobs=tuple(records[1:])), "ticks")
    assert found.examples == ("cron c: tick 2030-01-01T00:00:11.000+00:00 has 0 records",)


def test_an_ended_span_owes_less_by_the_time_postgresql_was_down_in_it() -> None:
    crons = (Cron("c", "*/2 * * * * *", paused=False, updated_at=T0 + 50.5),)
    spans = (
        CronSpan("c", "* * * * * *", T0 + 10.2, T0 + 40.7),
        CronSpan("c", "*/2 * * * * *", T0 + 50.5, T0 + 100),
    )
    records = [tick("c", s) for s in range(11, 29)] + [tick("c", s) for s in range(52, 101, 2)]
    restart = Fault("restart_postgres", "postgres", T0 + 27.5, T0 + 31.5)
    run = make_run(crons=crons, cron_spans=spans, jobs=tuple(records), faults=(restart,))
    found = verdict(run, "ticks")
    # 4 s without PostgreSQL inside the first span: 11 to 40 - 6 - 2 - 4 are owed.
    assert (found.checked, found.violations) == (len(range(11, 29)) + 25, 0)
    found = verdict(dataclasses.replace(run, faults=()), "ticks")
    assert found.violations == 4


def test_missing_ticks_fail_a_run() -> None:
    run = make_run(crons=(Cron("c", "* * * * * *", paused=False, updated_at=T0 + 98.5),))
    found = verdict(run, "ticks")
    assert found.violations == 2
    assert not found.pending and found.fails_run
    assert verdict(make_run(jobs=(job("x", state="scheduled"),)), "outcomes").fails_run


def test_duplicates_are_bounded_by_what_killed_and_cut_dispatchers_held() -> None:
    twice = (arrival("a", 10), arrival("a", 20, attempt=2), arrival("b", 10))
    held = (Fault("cut_dispatcher", "dispatcher-2", T0, T0 + 5, held=("a", "c")),)
    found = verdict(make_run(arrivals=twice, faults=held), "duplicates")
    assert (found.checked, found.violations) == (2, 0)
    found = verdict(make_run(arrivals=twice), "duplicates")
    assert found.violations == 2
    assert found.examples == (
        "1 repeated deliveries, more than the 0 held by dispatchers killed or cut",
        "job a was delivered 2 times, but no killed or cut dispatcher held it",
    )


def test_threads_reports_whatever_is_not_running_at_the_end() -> None:
    ending = Ending(
        dispatchers={"d1": {"claim": "restarting"}},
        expected_dispatchers=2,
        ready=False,
        unexpected_exits=("dispatcher-2 exited with status 3",),
        stop_codes={"web": 0, "dispatcher-1": 1},
    )
    found = verdict(make_run(ending=ending), "threads")
    assert found.violations == 5
    assert found.examples[1] == "dispatcher d1 has threads down: {'claim': 'restarting'}"


def test_a_run_survives_its_json_form() -> None:
    run = make_run(
        jobs=(job("a", recorded={1: 500, 2: None}),),
        arrivals=(arrival("a", 1),),
        crons=(Cron("c", "* * * * * *", False, T0),),
        limits=(change(0, 2.5, 3),),
        faults=(Fault("restart_postgres", "postgres", T0, T0 + 2, held=("a",)),),
        cron_spans=(CronSpan("c", "* * * * * *", T0, T0 + 5),),
    )
    assert Run.from_json(json.loads(json.dumps(run.to_json()))) == run


@pytest.mark.parametrize("name", list(checker.RULES))
def test_every_rule_has_a_check(name: str) -> None:
    assert callable(checker.CHECKS[name])


def bucket_starts(
    rate: float, demand: list[float], lags: list[float], cheat: float = 1.0
) -> list[Arrival]:
    """Starts a token bucket (`rate` a second, one second's worth, refilled `cheat` times too
    fast) allows for jobs due at `demand`, each arriving `lag` after its start."""
    tokens, at, starts = max(rate, 1.0), 0.0, []
    for due in sorted(demand):
        moment = max(due, at)
        tokens = min(max(rate, 1.0), tokens + rate * cheat * (moment - at))
        if tokens < 1:
            moment += (1 - tokens) / (rate * cheat)
            tokens = 1.0
        tokens -= 1
        at = moment
        starts.append(moment)
    return [
        limited(start + lag, 0.001, f"j{n}")
        for n, (start, lag) in enumerate(zip(starts, lags, strict=False))
    ]


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(
    rate=st.sampled_from([0.5, 2.0, 4.0, 8.0]),
    demand=st.lists(st.floats(1, 30), min_size=5, max_size=200),
    seed=st.integers(0, 2**32),
)
def test_a_token_bucket_s_starts_pass_the_rate_check_whatever_their_lag(
    rate: float, demand: list[float], seed: int
) -> None:
    lags = [random.Random(seed + n).uniform(0, checker.LATENCY_SLACK) for n in range(len(demand))]
    arrivals = bucket_starts(rate, demand, lags)
    run = make_run(limits=(change(0, rate, None),), arrivals=tuple(arrivals))
    assert verdict(run, "limits").violations == 0


def test_a_bucket_refilled_a_fifth_too_fast_fails_the_rate_check() -> None:
    demand = [1 + 0.01 * n for n in range(400)]
    arrivals = bucket_starts(4.0, demand, [0.0] * len(demand), cheat=1.2)
    run = make_run(limits=(change(0, 4.0, None),), arrivals=tuple(arrivals))
    assert verdict(run, "limits").violations > 0

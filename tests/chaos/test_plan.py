"""The soak's fault plan and cron ledger, without running anything."""

from __future__ import annotations

import collections

from tests.chaos import checker, faults
from tests.chaos.faults import CronEvent

T0 = 1_900_000_000.0


def test_a_plan_is_fixed_by_its_seed_and_meets_every_kind_in_a_short_run() -> None:
    plan = faults.plan(7, 20)
    assert plan == faults.plan(7, 20)
    assert plan != faults.plan(8, 20)
    assert {card.kind for card in plan} == set(faults.KINDS)
    assert all(0 < card.at < 20 for card in plan)
    assert [card.at for card in plan] == sorted(card.at for card in plan)


def test_a_long_plan_deals_kinds_evenly() -> None:
    counts = collections.Counter(card.kind for card in faults.plan(3, 420))
    assert set(counts) == set(faults.KINDS)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_cron_spans_follow_the_ledger_and_skip_what_is_unknown() -> None:
    slack = checker.LATENCY_SLACK
    events = [
        CronEvent("c", "set", "* * * * * *", T0, T0 + 0.1, True),
        CronEvent("c", "pause", None, T0 + 10, T0 + 10.1, True),
        CronEvent("c", "resume", None, T0 + 20, T0 + 20.1, True),
        CronEvent("c", "edit", "*/2 * * * * *", T0 + 30, T0 + 30.1, False),
        CronEvent("c", "edit", "*/3 * * * * *", T0 + 40, T0 + 40.1, True),
        CronEvent("d", "set", "* * * * * *", T0, T0 + 0.1, True),
    ]
    assert faults.cron_spans(events, T0 + 50) == [
        checker.CronSpan("c", "* * * * * *", T0 + 0.1, T0 + 10 - slack),
        checker.CronSpan("c", "* * * * * *", T0 + 20.1, T0 + 30 - slack),
        checker.CronSpan("c", "*/3 * * * * *", T0 + 40.1, T0 + 50),
        checker.CronSpan("d", "* * * * * *", T0 + 0.1, T0 + 50),
    ]

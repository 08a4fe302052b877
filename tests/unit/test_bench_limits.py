"""The mixed scenario's arithmetic: windows and their ratios, slots kept busy, the bounds of the
limits, and how a run's figures become targets and report tables."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import pytest

from tests.bench import limits, mixed, report, scenarios, targets


def test_windows_leave_out_the_first_and_end_with_the_backlog() -> None:
    assert limits.windows(100.0, 5.0, 121.0) == [(105.0, 110.0), (110.0, 115.0), (115.0, 120.0)]
    assert limits.windows(100.0, 5.0, 109.9) == []


def test_window_ratios_count_starts_in_half_open_windows() -> None:
    starts = [5.0, 6.0, 9.99, 10.0, 12.0]
    spans = [(5.0, 10.0), (10.0, 15.0)]
    assert limits.window_ratios(starts, spans, [3.0, 4.0]) == [1.0, 0.5]
    assert math.isnan(limits.window_ratios(starts, spans[:1], [0.0])[0])


def test_reached_rate_counts_from_the_instant_to_the_last_start() -> None:
    assert limits.reached_rate([1.0, 2.0, 4.0], 0.0) == 0.75
    assert limits.reached_rate([], 0.0) == 0.0


def test_a_full_bucket_then_the_rate_uses_the_bound_exactly() -> None:
    # Two at once (the bucket of max(2, 1)), then one every half second: any window of w
    # seconds holds at most 2w + 2.
    starts = [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]
    assert limits.peak_burst(starts, 2.0) == pytest.approx(2.0)
    assert limits.rate_bound_use(starts, 2.0) == pytest.approx(1.0)
    # One start more inside a second is over the bound, even with the receiver's slack.
    assert limits.rate_bound_use([*starts, 1.2], 2.0, slack=0.05) > 1.0
    # A start seen 20 ms late shortens a window: the slack covers it.
    late = [0.02, 0.0, 0.5, 1.0, 1.5, 2.0]
    assert limits.rate_bound_use(late, 2.0, slack=0.05) <= 1.0


def test_the_peak_window_is_where_the_bucket_was_spent() -> None:
    starts = [3.0, 0.0, 0.5, 0.0, 0.0, 1.0]
    excess, count, window = limits.peak_window(starts, 2.0)
    assert (excess, count, window) == (pytest.approx(3.0), 3, (0.0, 0.0))
    assert limits.peak_window([], 2.0)[:2] == (0.0, 0)


def test_a_slow_rate_has_a_bucket_of_one() -> None:
    assert limits.rate_bound_use([0.0, 2.0, 4.0], 0.5) == pytest.approx(1.0)
    assert limits.rate_bound_use([0.0, 0.1], 0.5) > 1.0
    assert limits.peak_burst([], 3.0) == 0.0


@pytest.mark.parametrize(
    ("intervals", "peak"),
    [
        ([(0.0, 1.0), (0.5, 1.5), (1.4, 2.0)], 2),
        ([(0.0, 1.0), (1.0, 2.0)], 1),  # one ends as the next starts
        ([(0.0, 0.0), (0.0, 0.0)], 0),  # answered at once: open for no time
        ([(0.0, 3.0), (0.1, 0.2), (0.15, 0.3), (0.16, 0.17)], 4),
        ([], 0),
    ],
)
def test_max_concurrent(intervals: list[tuple[float, float]], peak: int) -> None:
    assert limits.max_concurrent(intervals) == peak


def test_busy_fraction_is_time_weighted_over_the_slots() -> None:
    intervals = [(0.0, 10.0), (5.0, 10.0), (-5.0, 1.0)]
    # Over [0, 10] with 2 slots: 10 + 5 + 1 seconds of 20.
    assert limits.busy_fraction(intervals, (0.0, 10.0), 2) == pytest.approx(0.8)
    assert math.isnan(limits.busy_fraction(intervals, (3.0, 3.0), 2))


def test_backlog_capacity_counts_each_key_until_its_last_start() -> None:
    # A key done before the window allows nothing, one done halfway half, one busy throughout all.
    assert limits.backlog_capacity([4.0, 7.5, 20.0], 2.0, (5.0, 10.0)) == pytest.approx(15.0)


def test_longest_pause_and_starts_per_second() -> None:
    assert limits.longest_pause([10.5, 11.0, 14.0, 14.2], 10.0) == (11.0, 14.0)
    assert limits.longest_pause([], 10.0) == (10.0, 10.0)
    assert limits.per_second([10.5, 11.0, 14.2, 9.9], 10.0) == [2, 1, 0, 0, 1]


PLAN = dataclasses.replace(
    scenarios.QUICK,
    mixed_window=1.0,
    mixed_rate=8.0,
    mixed_slots=2,
    mixed_slot_seconds=0.125,
    mixed_flow_keys=2,
    mixed_flow_rate=2.0,
    mixed_flow_jobs=6,
)


def record(at: float, job_id: str, answered: float | None = None) -> list[Any]:
    return [at, job_id, "", "1", "{}", "", at if answered is None else answered]


def synthetic() -> tuple[dict[str, tuple[str, float]], dict[str, str], dict[str, list[list[Any]]]]:
    """A run from instant 0 (times in eighths of a second, exact in binary): bulk at 16/s, rated
    at its 8/s, slots with both slots always busy (answers in 0.125 s), a quiet job every 0.5 s
    50 ms late, two flow keys at 2/s (the first with max_in_flight 1); one bulk job lost, one
    quiet job sent twice."""
    job: dict[str, tuple[str, float]] = {}
    keys: dict[str, str] = {}
    arrived: dict[str, list[list[Any]]] = {}

    def add(endpoint: str, number: int, at: float, due: float = 0.0, answered: float | None = None):
        job_id = f"{endpoint}{number}"
        job[job_id] = (endpoint, due)
        arrived[job_id] = [record(at, job_id, answered)]
        return job_id

    for n in range(100):
        add(mixed.BULK, n, (n + 1) / 16)
    job["bulk-lost"] = (mixed.BULK, 0.0)
    for n in range(40):
        add(mixed.RATED, n, n / 8)
    for n in range(80):
        at = (n // 2) / 8
        add(mixed.SLOTS, n, at, answered=at + 0.125)
    for n in range(8):
        due = 0.5 * n
        add(mixed.QUIET, n, due + 0.05, due=due)
    arrived["quiet0"].append(record(0.3, "quiet0"))
    for key_number, key in enumerate(("k0000", "k0001")):
        for n in range(6):
            at = 0.5 * n + 0.01 * key_number
            keys[add(mixed.FLOWS, 10 * key_number + n, at, answered=at + 0.01)] = key
    return job, keys, arrived


def test_summarise_judges_each_endpoint() -> None:
    job, keys, arrived = synthetic()
    out = mixed.summarise(PLAN, 0.0, job, keys, arrived)
    assert (out["jobs"], out["delivered"], out["lost"], out["duplicates"]) == (241, 240, 1, 1)
    assert out["unlimited_rate"] == pytest.approx(16.0)
    assert out["quiet_lateness_ms"]["p99"] == pytest.approx(50.0)
    rated = out["rated"]
    assert rated["allowed_rate"] == 8.0
    assert rated["ratios"] == [1.0, 1.0, 1.0]
    assert rated["bound_use"] <= 1.0
    slots = out["slots"]
    assert slots["max_concurrent"] == 2
    assert slots["busy"] == pytest.approx(1.0)
    flows = out["flows"]
    assert flows["keys_over_rate"] == 0
    assert flows["single_max_concurrent"] == 1
    assert flows["ratios"] == [pytest.approx(1.0)]
    assert out["endpoints"][mixed.BULK] == {"jobs": 101, "delivered": 100, "last_s": 6.25}


def test_a_bound_exceeded_misses_its_target() -> None:
    job, keys, arrived = synthetic()
    # Three slots busy at once, and five starts of a flow key in one second.
    arrived["slots0"][0][-1] = 0.25
    arrived["flows3"] = [record(0.625, "flows3", 0.635)]
    arrived["flows4"] = [record(0.75, "flows4", 0.76)]
    out = mixed.summarise(PLAN, 0.0, job, keys, arrived)
    assert out["slots"]["max_concurrent"] == 3
    assert out["flows"]["keys_over_rate"] == 1
    uses = targets.bound_uses(out)
    assert uses["max_in_flight"] == 1.5
    assert uses["flow rate"] > 1.0
    found = {t.key: t for t in targets.evaluate({"mixed_1": out})}
    assert not found["Mixed 1 bounds (%)"].passed
    assert found["Mixed 1 bounds (%)"].measured == pytest.approx(150.0)


def test_mixed_targets_pass_and_miss_on_their_figures() -> None:
    job, keys, arrived = synthetic()
    out = mixed.summarise(PLAN, 0.0, job, keys, arrived)
    out.update(flows_skipped=None, dispatchers=1)
    found = {t.key: t for t in targets.evaluate({"mixed_1": out})}
    assert found["Mixed 1 rate (%)"].passed
    assert found["Mixed 1 slots busy (%)"].passed
    assert found["Mixed 1 quiet p99 (s)"].measured == pytest.approx(0.05)
    assert found["Mixed 1 flows (%)"].passed
    assert found["Mixed 1 bounds (%)"].passed
    assert not found["Mixed 1 lost + duplicated"].passed  # one lost, one repeated
    assert found["Mixed 1 lost + duplicated"].measured == 2
    assert found["Mixed 2 rate (%)"].detail == "not run"


def test_skipped_flows_miss_and_say_why() -> None:
    job, _, arrived = synthetic()
    out = mixed.summarise(PLAN, 0.0, job, {}, arrived)
    reason = "the server refuses the `flow` field (400: ['Unknown field.'])"
    out.update(flows_skipped=reason, dispatchers=1)
    results = {"mixed_1": out, "flow_cost": {"skipped": reason}}
    found = {t.key: t for t in targets.evaluate(results)}
    for key in ("Mixed 1 flows (%)", "Flow cost PostgreSQL", "Flow cost claim"):
        assert not found[key].passed
        assert math.isnan(found[key].measured)
        assert found[key].detail == f"skipped: {reason}"
    assert "flow keys not checked" in found["Mixed 1 bounds (%)"].detail
    assert {"Mixed 1 flows (%)", "Flow cost claim"} <= targets.flow_keys()


def cost_round(keys: int, wall_s: float, postgres_s: float, claim_ms: float) -> dict[str, Any]:
    cpu = {"worker": 2.0, "postgres": postgres_s, "web": 0.1, "machine": 5.0, "wall": 10.0}
    return {
        "keys": keys,
        "jobs": 1000,
        "delivered": 1000,
        "lost": 0,
        "duplicates": 0,
        "wall_s": wall_s,
        "cpu": cpu,
        "claims_per_delivery": 0.05,
        "claim_ms_per_delivery": claim_ms,
    }


def test_flow_cost_compares_many_keys_with_few() -> None:
    cost = {
        "keys": [10, 500],
        "jobs": 1000,
        "rounds": {
            "10": cost_round(10, 1.0, 0.5, 0.2),
            "500": cost_round(500, 1.25, 0.55, 0.25),
        },
    }
    figures = targets.flow_cost_figures(cost)
    assert figures["500"]["wall_ms"] == pytest.approx(1.25)
    assert figures["10"]["postgres_ms"] == pytest.approx(0.5)
    found = {t.key: t for t in targets.evaluate({"flow_cost": cost})}
    assert found["Flow cost PostgreSQL"].passed
    assert found["Flow cost PostgreSQL"].measured == pytest.approx(1.1)
    assert not found["Flow cost claim"].passed
    assert found["Flow cost claim"].measured == pytest.approx(1.25)
    text = report._flow_cost({"flow_cost": cost})
    assert "| 500 keys | 1,000 | 1,000 | 0 | 0 | 0.250 | 1.250 | 0.550 | 2.000 | 0.050 |" in text


def test_the_mixed_section_has_a_row_per_limit() -> None:
    job, keys, arrived = synthetic()
    out = mixed.summarise(PLAN, 0.0, job, keys, arrived)
    cpu = {"worker": 1.0, "postgres": 0.5, "machine": 2.0, "wall": 5.0}
    out.update(flows_skipped=None, dispatchers=1, cpu=cpu)
    results = {"plan": dataclasses.asdict(PLAN), "mixed_1": out}
    text = report._mixed(results)
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| 1 disp")]
    assert "| 1 dispatcher: rated" in rows
    assert "| 1 dispatcher: slots (busy)" in rows
    assert "| 1 dispatcher: flows" in rows
    assert "not measured" not in text


def test_the_method_says_how_long_each_plan_takes() -> None:
    presets = {"refactor": ["accept", "burst_1"], "mixed": ["mixed_1", "mixed_2"]}
    results = {
        "plan": {"name": "full"},
        "only": ["mixed_1", "mixed_2"],
        "elapsed_s": 240.0,
        "seconds": {"mixed_1": 100.0, "mixed_2": 110.0},
        "presets": presets,
        "all_scenarios": ["accept", "burst_1", "mixed_1", "mixed_2"],
    }
    earlier = [
        {"date": "d1", "plan": "full", "minutes": 19.5, "seconds": {"accept": 60, "burst_1": 90}},
        {"date": "d2", "plan": "quick", "minutes": 1.5, "seconds": {"accept": 6, "burst_1": 9}},
    ]
    text = report._durations(results, earlier)
    assert "This partial run took 4.0 min with the full plan." in text
    assert (
        "every scenario of the full plan (`make bench`, or `--quick`) took 19.5 min on d1" in text
    )
    assert "`make bench ONLY=refactor` runs accept, burst_1 (2.5 min on d1)" in text
    assert "`make bench ONLY=mixed` runs mixed_1, mixed_2 (3.5 min in this run)" in text
    whole = report._durations({**results, "only": None}, [])
    assert whole.startswith("- This whole run took 4.0 min")
    assert "ONLY=refactor` runs accept, burst_1 (not yet timed)" in whole


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code = status
        self.body = body

    def json(self) -> Any:
        return self.body

    def raise_for_status(self) -> None:
        assert self.status_code < 400, self.body


class FakeReceiver:
    """Records a delivery of every job the fake system was given, at its due time."""

    def __init__(self) -> None:
        self.delivered: list[list[Any]] = []

    def reset(self) -> None:
        self.delivered = []

    def records(self, since: int = 0) -> list[list[Any]]:
        return self.delivered[since:]


class FakeSystem:
    """Just what mixed.measure and mixed.flow_cost use of a System, over a server that takes a
    job's `flow` field (or refuses it) and delivers each job once, at its due time."""

    url = "http://fake"

    def __init__(self, receiver: FakeReceiver, flows: bool = True) -> None:
        self.receiver = receiver
        self.flows = flows
        self.workers = [object()]
        self.session = self
        self.items: list[dict[str, Any]] = []
        self.quiesced = 0

    def post(self, url: str, json: Any, timeout: float) -> FakeResponse:
        if url.endswith("/insert") and "flow" in json and not self.flows:
            body = {"error": {"code": "invalid_request", "fields": {"flow": ["Unknown field."]}}}
            return FakeResponse(400, body)
        return FakeResponse(200, {"id": "probe"})

    def patch(self, url: str, json: Any, timeout: float) -> FakeResponse:
        return FakeResponse(200, {})

    def get(self, url: str, timeout: float) -> FakeResponse:
        return FakeResponse(200, {"flows": [{"key": "k0000"}, {"key": "k0001"}]})

    def add_worker(self) -> None:
        self.workers.append(object())

    def wait_workers_active(self, grace: float) -> int:
        return len(self.workers)

    def quiesce(self) -> None:
        self.quiesced += 1

    def insert_batch(self, items: list[dict[str, Any]]) -> list[str]:
        ids = [f"job{len(self.items) + n}" for n in range(len(items))]
        for job_id, item in zip(ids, items, strict=True):
            due = scenarios.epoch(item["timestamp"])
            at = due + 0.001 * (len(self.items) % 7)
            self.receiver.delivered.append([at, job_id, "", "1", "{}", "", at + 0.002])
            self.items.append(item)
        return ids

    def cpu_meter(self) -> Any:
        return self

    def read(self) -> dict[str, float | None]:
        return {"worker": 1.0, "postgres": 1.0, "machine": 2.0, "wall": 1.0}

    def scrape_metrics(self) -> list[dict[str, float | None]]:
        now = time.time()
        arrived = sum(1 for record in self.receiver.delivered if record[0] <= now)
        return [{"claims": 10.0, "claim_seconds": arrived / 1000, "delivered": float(arrived)}]


TINY = dataclasses.replace(
    scenarios.QUICK,
    mixed_lead=0.2,
    mixed_bulk=40,
    mixed_rated_jobs=20,
    mixed_slot_jobs=20,
    mixed_slow_jobs=2,
    mixed_quiet_seconds=0.3,
    mixed_flow_keys=8,
    mixed_flow_jobs=3,
    flow_cost_keys=(2, 20),
    flow_cost_jobs=40,
    settle=0,
    delivery_deadline=5,
)


def test_the_flow_parts_run_when_the_server_takes_the_field() -> None:
    receiver = FakeReceiver()
    system: Any = FakeSystem(receiver)
    collector = scenarios.Collector(receiver)  # type: ignore[arg-type]
    out = mixed.measure(system, collector, TINY, 2)
    assert len(system.workers) == 2
    flows = [item for item in system.items if item["endpoint"] == mixed.FLOWS]
    assert len(flows) == 24
    assert flows[0]["flow"] == {"key": "k0000", "rate": 2, "max_in_flight": 1}
    assert flows[3]["flow"] == {"key": "k0001", "rate": 2}
    assert out["flows_skipped"] is None
    assert out["flows_listed"] == 2
    assert out["flows"]["keys"] == 8
    assert (out["lost"], out["duplicates"]) == (0, 0)
    system.items = []
    cost = mixed.flow_cost(system, collector, TINY)
    assert cost["keys"] == [2, 20]
    assert {item["flow"]["key"] for item in system.items} == {
        *(f"c2-{n}" for n in range(2)),
        *(f"c20-{n}" for n in range(20)),
    }
    for part in cost["rounds"].values():
        assert (part["delivered"], part["lost"], part["duplicates"]) == (40, 0, 0)
    results = {"plan": dataclasses.asdict(TINY), "mixed_2": out, "flow_cost": cost}
    found = {t.key: t for t in targets.evaluate(results)}
    assert not math.isnan(found["Flow cost claim"].measured)
    assert "skipped" not in found["Mixed 2 flows (%)"].detail
    assert "| 2 dispatchers: flows |" in report._mixed(results)
    assert "| 20 keys |" in report._flow_cost(results)


def test_the_flow_parts_are_skipped_when_the_server_refuses_the_field() -> None:
    receiver = FakeReceiver()
    system: Any = FakeSystem(receiver, flows=False)
    collector = scenarios.Collector(receiver)  # type: ignore[arg-type]
    out = mixed.measure(system, collector, TINY, 1)
    assert "Unknown field." in out["flows_skipped"]
    assert out["flows"] is None
    assert not [item for item in system.items if "flow" in item]
    assert out["delivered"] == out["jobs"] == 40 + 20 + 20 + 2 + 3
    assert "Unknown field." in mixed.flow_cost(system, collector, TINY)["skipped"]

"""The benchmark's comparison of a run's target figures with the range of the last full runs in
its history, and how a partial (`--only`) run is recorded so that no comparison takes it for a
full one."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from tests.bench import compare, history, report, run, targets


def past(date: str, figures: dict[str, float | None], plan: str = "full") -> dict[str, Any]:
    return {"date": date, "plan": plan, "code": "c0de", "note": "", "targets": figures}


ACCEPT = "Accept 8 (%)"
P99 = "Steady p99 (ms)"


def test_the_range_is_over_the_last_three_full_runs_that_have_the_figure() -> None:
    earlier = [
        past("d1", {ACCEPT: 10.0}),
        past("d2", {ACCEPT: 30.0}),
        past("d3", {ACCEPT: 32.0}),
        past("d4", {ACCEPT: None}),  # the scenario failed in that run
        past("d5", {P99: 6.0}),  # a run from before the target existed
        past("d6", {ACCEPT: 35.0}),
    ]
    (found,) = compare.compare(earlier, {ACCEPT: 31.0})
    assert (found.low, found.high, found.dates) == (30.0, 35.0, ("d2", "d3", "d6"))
    assert found.status == compare.INSIDE


def test_quick_and_partial_runs_form_no_range() -> None:
    earlier = [
        past("full", {ACCEPT: 30.0}),
        past("quick", {ACCEPT: 90.0}, "quick"),
        {**past("partial", {ACCEPT: 80.0}, "partial"), "sizes": "full", "scenarios": ["accept"]},
        # Written by a harness that kept the plan's name and listed the scenarios.
        {**past("listed", {ACCEPT: 70.0}), "scenarios": ["accept"]},
    ]
    (found,) = compare.compare(earlier, {ACCEPT: 31.0})
    assert found.dates == ("full",)
    assert found.status == compare.ABOVE
    assert [history.is_full(r) for r in earlier] == [True, False, False, False]


@pytest.mark.parametrize(
    ("measured", "status"),
    [(4.99, compare.BELOW), (5.0, compare.INSIDE), (7.0, compare.INSIDE), (7.01, compare.ABOVE)],
)
def test_the_range_bounds_are_inside(measured: float, status: str) -> None:
    earlier = [past("a", {P99: 7.0}), past("b", {P99: 5.0}), past("c", {P99: 6.0})]
    (found,) = compare.compare(earlier, {P99: measured})
    assert found.status == status


def test_only_the_figures_measured_are_compared_and_each_may_lack_a_range() -> None:
    earlier = [past("a", {ACCEPT: 30.0, P99: 6.0})]
    found = compare.compare(earlier, {P99: 6.0, "New target": 1.0})
    assert [c.key for c in found] == [P99, "New target"]
    assert found[1].status is None
    assert (found[1].low, found[1].high, found[1].dates) == (None, None, ())
    assert compare.compare(earlier, {}) == []


def test_the_verdict_says_whether_every_figure_lands_inside() -> None:
    earlier = [past("a", {ACCEPT: 30.0, P99: 6.0}), past("b", {ACCEPT: 34.0, P99: 8.0})]
    inside = compare.compare(earlier, {ACCEPT: 31.0, P99: 7.0})
    assert compare.all_inside(inside)
    assert compare.verdict(inside).startswith("Every one of the 2 figures this run measured")

    mixed = compare.compare(earlier, {ACCEPT: 40.0, P99: 7.0, "New target": 1.0})
    assert not compare.all_inside(mixed)
    sentence = compare.verdict(mixed)
    assert sentence.startswith("Not every figure lands inside")
    assert "2 of 3" in sentence
    assert f"{ACCEPT} above" in sentence
    assert "New target (no earlier full run)" in sentence

    assert not compare.all_inside([])
    assert "no target figure" in compare.verdict([])


def test_a_failed_scenario_keeps_the_verdict_from_saying_every_figure_is_inside() -> None:
    earlier = [past("a", {ACCEPT: 30.0}), past("b", {ACCEPT: 34.0})]
    inside = compare.compare(earlier, {ACCEPT: 31.0})
    assert not compare.all_inside(inside, ["steady_empty"])
    assert compare.verdict(inside, ["steady_empty"]) == (
        "Every figure this run measured lands inside the last three full runs' range, but "
        "steady_empty failed, so its figures are missing."
    )
    above = compare.compare(earlier, {ACCEPT: 40.0})
    assert compare.verdict(above, ["burst_1", "burst_2"]).endswith(
        "(Accept 8 (%) above), and burst_1, burst_2 failed, so their figures are missing."
    )
    assert "(steady_empty failed" in compare.verdict([], ["steady_empty"])


def test_a_scenario_not_run_has_no_figure_and_partial_loss_totals_are_left_out() -> None:
    assert compare.figures({}) == {}
    accept = {
        "accept": {
            "8": {"insert": {"rate": 3456.789}, "noop": {"rate": 10000.0}},
        }
    }
    assert compare.figures(accept) == {ACCEPT: 34.57}
    assert not targets.losses_complete(accept)


def test_a_partial_run_is_recorded_as_partial_with_its_scenarios(tmp_path: pathlib.Path) -> None:
    results = {"date": "d9", "plan": {"name": "full"}, "only": ["accept", "burst_1"]}
    entry = history.entry(results, "refactor")
    assert (entry["plan"], entry["sizes"], entry["scenarios"]) == (
        "partial",
        "full",
        ["accept", "burst_1"],
    )
    assert not history.is_full(entry)
    full = history.entry({"date": "d8", "plan": {"name": "full"}}, "")
    assert history.is_full(full)
    assert "scenarios" not in full and "sizes" not in full

    path = tmp_path / history.FILE_NAME
    path.write_text(json.dumps([past("d7", {ACCEPT: 30.0})]))  # an entry of the old shape
    runs = history.record(path, full)
    runs = history.record(path, entry)
    assert [r["date"] for r in json.loads(path.read_text())] == ["d7", "d8", "d9"]
    table = history.render(runs)
    assert "| d7 |" in table and "| d8 |" in table
    assert "| d9 (only accept, burst_1) |" in table


def test_the_report_section_compares_and_says_whether_every_figure_is_inside() -> None:
    results = {
        "plan": {"name": "full"},
        "only": ["accept"],
        "accept": {"8": {"insert": {"rate": 3100.0}, "noop": {"rate": 10000.0}}},
    }
    earlier = [past("a", {ACCEPT: 30.0}), past("b", {ACCEPT: 32.0})]
    text = report._comparison(results, earlier)
    assert text.startswith(report.COMPARISON_HEADING + "\n")
    assert "Every range is over the runs of a and b." in text
    assert "| Accept 8 (%) | 31.00 | 30.00 | 32.00 | inside |" in text
    assert "The figure this run measured lands inside" in text
    assert "| Lost" not in text


def test_only_takes_scenarios_and_presets_in_run_order() -> None:
    assert run.selected("refactor") == (
        "instruments",
        "accept",
        "steady_empty",
        "burst_1",
        "burst_2",
    )
    assert run.selected("burst_2,instruments") == ("instruments", "burst_2")
    assert run.selected(",".join(run.SCENARIOS)) is None
    for wrong in ("burst", "", "refactor,steady"):
        with pytest.raises(ValueError):
            run.selected(wrong)
    with pytest.raises(SystemExit):
        run.parse_args(["--only", "bursts", "--output", "elsewhere.md"])
    with pytest.raises(SystemExit):
        run.parse_args(["--only", "refactor"])  # the full report's default path
    args = run.parse_args(["--only", "refactor", "--output", "elsewhere.md"])
    assert args.only == "refactor"


def partial(date: str, scenarios: list[str], figures: dict[str, float | None]) -> dict[str, Any]:
    return {**past(date, figures, plan=history.PARTIAL), "sizes": "full", "scenarios": scenarios}


def test_the_run_before_is_the_latest_partial_run_of_the_same_scenarios() -> None:
    same, other = ["instruments", "accept"], ["burst_1"]
    earlier = [
        partial("old", same, {ACCEPT: 30.0}),
        past("full", {ACCEPT: 31.0}),
        partial("before", same, {ACCEPT: 32.0}),
        partial("elsewhere", other, {ACCEPT: 33.0}),
    ]

    before = compare.same_run_before(earlier, same)

    assert before is not None and before["date"] == "before"
    assert compare.same_run_before(earlier, ["steady_empty"]) is None
    assert compare.same_run_before(earlier, None) is None


def test_the_report_shows_the_run_before_beside_the_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    scenarios = ["instruments", "accept"]
    earlier = [past(f"d{n}", {ACCEPT: 30.0 + n}) for n in range(3)]
    earlier.append(partial("just before", scenarios, {ACCEPT: 34.5}))
    results = {"plan": {"name": "full"}, "only": scenarios, "errors": {}}
    # The figures a run of these scenarios measured, without running them.
    monkeypatch.setattr(compare, "figures", lambda measured: {ACCEPT: 33.0})

    text = report._comparison(results, earlier)

    assert "Before: the run of just before" in text
    assert f"It lands 1 of its 1 figures outside the same ranges ({ACCEPT} above)." in text
    header, _, row = [line for line in text.splitlines() if line.startswith("|")][:3]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert [cell.strip() for cell in header.strip("|").split("|")][:3] == [
        "Figure",
        "Measured",
        "Before",
    ]
    assert cells[:3] == [ACCEPT, "33.00", "34.50"]
    assert cells[-1] == compare.ABOVE

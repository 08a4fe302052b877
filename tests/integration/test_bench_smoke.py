"""`python -m tests.bench --quick` runs end to end and writes a well-formed report (no timings
are asserted: those belong to the report)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests import support
from tests.bench import compare, history, plot, postgres, report, run, scenarios, targets

pytestmark = [pytest.mark.e2e, pytest.mark.long]

NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?%?$")


def tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table as rows of cells, the header row first, the rule row dropped."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= set("-:") for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def section(text: str, heading: str) -> str:
    """The text under `heading`, up to the next second-level heading."""
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


@pytest.mark.timeout(300)
def test_quick_run_writes_every_section_with_numbers(
    server_url: str, tmp_path: pathlib.Path
) -> None:
    output = tmp_path / "benchmarks.md"
    # Earlier runs beside the report, with every figure (the history table's cells are numbers):
    # the full one forms every range, the quick and the partial one none.
    accept = [f"Accept {clients} (%)" for clients in scenarios.QUICK.clients]
    keys = [*accept, *(t.key for t in targets.evaluate({})), "Backlog / empty p99"]
    full = dict.fromkeys(keys, 1e6) | {"Accept 8 (%)": 1.0}
    earlier = [
        earlier_run("full", full),
        earlier_run("quick", dict.fromkeys(keys, -1.0)),
        {**earlier_run("partial", dict.fromkeys(keys, -1.0)), "scenarios": ["accept"]},
    ]
    (tmp_path / history.FILE_NAME).write_text(json.dumps(earlier))
    env = dict(os.environ, DATABASE_URL=server_url)
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--quick", "--output", str(output)],
        cwd=support.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    text = output.read_text()

    for heading in report.SECTIONS:
        assert re.search(rf"^{re.escape(heading)}", text, re.MULTILINE), heading
    assert "## Errors" not in text
    parsed = tables(text)
    assert len(parsed) >= 10
    # Until the server takes a job's `flow` field, the flow targets are skipped: they read n/a,
    # in the targets table (their detail says why) and in the history's columns.
    skipped = "Skipped: the server refuses the `flow` field" in text
    for rows in parsed:
        header, body = rows[0], rows[1:]
        assert body, header
        for row in body:
            assert len(row) == len(header), row
            for name, cell in zip(header[1:], row[1:], strict=True):
                if name in report.TEXT_COLUMNS:
                    continue
                if name in report.MISSING_COLUMNS and cell == "n/a":
                    continue
                if skipped and cell == "n/a" and skipped_flow_cell(header, row, name):
                    continue
                # A ratio of two zero counts has no value; every other cell is a number.
                if name == "Pending / empty" and row[1] == row[2] == "0":
                    assert cell == "n/a", row
                else:
                    assert NUMBER.match(cell), f"{name}: {cell!r} in {row}"
    verdicts = [
        row[header.index("Result")]
        for header, *body in parsed
        if "Result" in header
        for row in body
    ]
    assert len(verdicts) >= 13
    assert set(verdicts) <= {"PASS", "MISS"}
    check_durability_stated(text, server_url)
    check_burst_section(section(text, report.BURST_HEADING))
    check_retention_section(section(text, report.RETENTION_HEADING))
    check_comparison_section(section(text, report.COMPARISON_HEADING), full)
    recorded = json.loads((tmp_path / history.FILE_NAME).read_text())
    assert recorded[:-1] == earlier
    assert recorded[-1]["plan"] == "quick"
    assert "scenarios" not in recorded[-1]
    listed = {row[0] for row in tables(section(text, "## Targets"))[0][1:]}
    retention = {t.name for t in targets.evaluate({}) if t.key.startswith(("Prune", "Retention"))}
    assert len(retention) == 3
    assert retention <= listed
    if plot.available():
        assert (tmp_path / "lateness.png").stat().st_size > 0
        assert "](lateness.png)" in text


def skipped_flow_cell(header: list[str], row: list[str], name: str) -> bool:
    """A cell of a flow target the run skipped: its row in the targets table, or its column in
    the history table."""
    if name in targets.flow_keys():
        return True
    return name == "Measured" and row[header.index("Detail")].startswith("skipped: ")


def earlier_run(plan: str, figures: dict[str, float]) -> dict[str, object]:
    return {"date": f"earlier {plan}", "plan": plan, "code": None, "note": "", "targets": figures}


def check_comparison_section(text: str, full: dict[str, float]) -> None:
    """Only the earlier full run forms a range, so each figure is above or below it (a quick
    run's figures are far from a full run's)."""
    (rows,) = tables(text)
    assert rows[0] == ["Figure", "Measured", "Min", "Max", "Range check"]
    keys = [row[0] for row in rows[1:]]
    assert {"Accept 8 (%)", "Burst 2 dispatchers (%)", "Steady p99 (ms)", "Lost"} <= set(keys)
    for key, _, low, high, check in rows[1:]:
        assert low == high == report.num(full[key], 2), key
        assert check == (compare.ABOVE if key == "Accept 8 (%)" else compare.BELOW), key
    assert "over the runs of earlier full." in text
    assert "Not every figure lands inside" in text
    assert "No earlier full run has" not in text


@pytest.mark.timeout(300)
def test_a_partial_run_is_recorded_as_partial(server_url: str, tmp_path: pathlib.Path) -> None:
    """`--only refactor` runs the scenarios behind the insert, steady and burst figures and
    records the run, in the history given, as partial."""
    output, kept = tmp_path / "report" / "benchmarks.md", tmp_path / "kept.json"
    command = [sys.executable, "-m", "tests.bench", "--quick", "--only", "refactor"]
    done = subprocess.run(
        [*command, "--output", str(output), "--history", str(kept)],
        cwd=support.ROOT,
        env=dict(os.environ, DATABASE_URL=server_url),
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert not (output.parent / history.FILE_NAME).exists()
    (recorded,) = json.loads(kept.read_text())
    assert recorded["plan"] == "partial"
    assert recorded["sizes"] == "quick"
    assert recorded["scenarios"] == list(run.PRESETS["refactor"])
    assert recorded["targets"]["Burst 2 dispatchers (%)"] is not None
    assert recorded["targets"]["Pages p95 (ms)"] is None
    text = output.read_text()
    assert "--only instruments,accept,steady_empty,burst_1,burst_2" in text
    assert "This run measured no target figure" not in section(text, report.COMPARISON_HEADING)


def check_durability_stated(text: str, server_url: str) -> None:
    """The report names each durability setting of the server it ran on, and says plainly when
    one is off (the test suite's server turns them off)."""
    facts = postgres.server_facts(server_url)
    machine = tables(section(text, "## Machine"))[0]
    (durability,) = [row[1] for row in machine if row[0] == "Durability"]
    for name in postgres.DURABILITY:
        assert f"{name} {facts[name]}" in durability, name
    header = text[: text.index("## Machine")]
    for statement in (durability, header):
        assert ("NOT DURABLE" in statement) == bool(postgres.not_durable(facts)), statement


def check_burst_section(text: str) -> None:
    """A row per number of dispatchers in the summary and cost tables, a row per run in the
    last; a dispatcher count for each delivery and for "dispatcher active"."""
    summary, costs, each = tables(text)
    labels = [targets.dispatchers_label(n) for n in targets.BURST_DISPATCHERS]
    assert [row[0] for row in summary[1:]] == labels
    assert [row[0] for row in costs[1:]] == labels
    runs = scenarios.QUICK.burst_runs
    assert [row[0] for row in each[1:]] == [
        f"{label}, run {number}" for label in labels for number in range(1, runs + 1)
    ]
    header = costs[0]
    for count, row in zip(targets.BURST_DISPATCHERS, costs[1:], strict=True):
        by_each = row[header.index("Delivered by each")]
        assert by_each == "n/a" or len(by_each.split(" / ")) == count, row
        assert 1 <= int(row[header.index('Logged "dispatcher active"')]) <= count, row


def check_retention_section(text: str) -> None:
    """A row per round, the median and range of each figure over the rounds, and the checks with
    every job fed accounted for."""
    rounds, spread, checks = tables(text)
    assert [row[0] for row in rounds[1:]] == [
        f"Round {number}" for number in range(1, scenarios.QUICK.retention_rounds + 1)
    ]
    assert rounds[0][2:4] == ["Delivered (/s)", "Prune rate (/s)"]
    assert spread[0] == ["Measure", "Median", "Min", "Max"]
    assert {"Delivery rate (/s)", "Prune rate / delivery rate"} <= {row[0] for row in spread}
    values = {row[0]: row[1] for row in checks[1:]}
    fed = int(values["Jobs fed"].replace(",", ""))
    assert fed > 0
    delivered, lost = (int(values[name].replace(",", "")) for name in ("Delivered", "Lost"))
    assert delivered + lost == fed

"""`python -m tests.bench --quick` runs end to end and writes a well-formed report (no timings
are asserted: those belong to the report)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests import support
from tests.bench import plot, report

pytestmark = pytest.mark.e2e

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


@pytest.mark.timeout(300)
def test_quick_run_writes_every_section_with_numbers(
    server_url: str, tmp_path: pathlib.Path
) -> None:
    output = tmp_path / "benchmarks.md"
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
    for rows in parsed:
        header, body = rows[0], rows[1:]
        assert body, header
        for row in body:
            assert len(row) == len(header), row
            for name, cell in zip(header[1:], row[1:], strict=True):
                if name in report.TEXT_COLUMNS:
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
    assert len(verdicts) >= 12
    assert set(verdicts) <= {"PASS", "MISS"}
    if plot.available():
        assert (tmp_path / "lateness.png").stat().st_size > 0
        assert "](lateness.png)" in text

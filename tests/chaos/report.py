"""The soak's report in Markdown: faults injected, invariants checked, violations; `update`
writes it into docs/reliability.md between its markers, leaving the rest of the page alone."""

from __future__ import annotations

import collections
import datetime as dt
import pathlib
from typing import TYPE_CHECKING

from tests.chaos import checker, faults

if TYPE_CHECKING:
    from tests.chaos.runner import Result

BEGIN = "<!-- chaos report: written by `make chaos` from here -->"
END = "<!-- chaos report: to here -->"
# Violations shown per invariant (the count is always in full).
SHOWN = 5


def render(result: Result) -> str:
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    held = {job_id for fault in result.faults for job_id in fault.held}
    verdict = "FAILED" if result.failed else "passed"
    lines = [
        f"### Run of {today}: seed {result.seed}, {result.duration:g} s of faults,"
        f" {result.dispatchers} dispatchers ({verdict})",
        "",
        f"The run took {result.took:.0f} s. {result.jobs:,} jobs ({result.inserted:,} inserted"
        f" through the API, the rest cron ticks; {result.refused:,} inserts refused while the web"
        f" process or PostgreSQL was away), {result.arrivals:,} attempts received. The jobs due"
        f" by the end {'finished' if result.drained else 'did NOT all finish'} within the drain.",
        "",
        faults_table(result),
        "",
        f"{result.repeats:,} deliveries were answered 2xx again; killed, cut or stopped"
        f" dispatchers held {len(held):,} in all (the bound on duplicates).",
        "",
        findings_table(result.findings),
    ]
    for finding in result.findings:
        if finding.violations and finding.pending:
            lines += [
                "",
                f"Known: `{finding.name}` is expected to fail until fixed: {finding.pending}.",
            ]
    shown = [f for f in result.findings if f.violations]
    if shown:
        lines += ["", "Violations (the first of each):", ""]
        for finding in shown:
            for example in finding.examples[:SHOWN]:
                lines.append(f"- `{finding.name}`: {example}")
    if result.errors or result.notes:
        lines += ["", "The harness noted:", ""]
        lines += [f"- error: {_one_line(error)}" for error in result.errors]
        lines += [f"- {note}" for note in result.notes]
    return "\n".join(lines)


def faults_table(result: Result) -> str:
    injected = collections.Counter(fault.kind for fault in result.faults)
    rows = ["| Fault | Injected | Skipped (target busy or none) |", "| --- | ---: | ---: |"]
    for kind in faults.KINDS:
        rows.append(f"| `{kind}` | {injected[kind]} | {result.skipped.get(kind, 0)} |")
    rows.append(f"| all | {sum(injected.values())} | {sum(result.skipped.values())} |")
    return "\n".join(rows)


def findings_table(findings: list[checker.Finding]) -> str:
    rows = ["| Invariant | Checked | Violations |", "| --- | ---: | ---: |"]
    for finding in findings:
        count = f"{finding.violations:,}"
        if finding.violations and finding.pending:
            count += " (known: see below)"
        rows.append(f"| `{finding.name}`: {finding.rule} | {finding.checked:,} | {count} |")
    return "\n".join(rows)


def update(path: pathlib.Path, text: str) -> None:
    """Put `text` between the page's markers (appended with them if the page has none)."""
    page = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{BEGIN}\n\n{text}\n\n{END}"
    if BEGIN in page and END in page:
        head, _, rest = page.partition(BEGIN)
        _, _, tail = rest.partition(END)
        page = head + block + tail
    else:
        page = page.rstrip("\n") + ("\n\n" if page else "") + block + "\n"
    path.write_text(page, encoding="utf-8")


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-3:])

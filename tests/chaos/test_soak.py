"""The soak's short form: a fixed seed, faults for 18 s, at most a minute in all; each invariant
is its own test over the one run. Its logs and run.json stay in pytest's temporary directory
(`python -m tests.chaos --check <dir>/run.json` checks them again)."""

from __future__ import annotations

import pathlib

import pytest

from tests.chaos import checker, faults, runner

pytestmark = [pytest.mark.e2e, pytest.mark.long]

SEED = 22
DURATION = 18.0
DRAIN = 25.0
LIMIT = 60.0


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("chaos")


@pytest.fixture(scope="module")
def soak(kept: pathlib.Path) -> runner.Result:
    result = runner.run(SEED, DURATION, drain_seconds=DRAIN, limit=LIMIT, keep=kept)
    print(f"short soak: {result.took:.0f}s, {len(result.faults)} faults, {result.jobs} jobs")
    return result


def test_the_short_soak_injects_every_kind_of_fault_and_drains(soak: runner.Result) -> None:
    assert soak.errors == []
    assert soak.drained
    assert soak.jobs > 100 and soak.arrivals > 100
    # A fault waits for its target while another holds it: the last few may find none in time.
    injected = {fault.kind for fault in soak.faults}
    assert len(injected) >= len(faults.available_kinds()) - 2, soak.skipped


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(reason=checker.PENDING[name], strict=False)
            if name in checker.PENDING
            else (),
        )
        for name in checker.RULES
    ],
)
def test_invariant(soak: runner.Result, kept: pathlib.Path, name: str) -> None:
    finding = next(f for f in soak.findings if f.name == name)
    assert finding.checked > 0
    assert finding.violations == 0, "\n".join([*finding.examples, f"(the run is in {kept})"])

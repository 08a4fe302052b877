"""The suite fails when the code breaks our lint, type or layering rules (see `make lint`)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from tests import support

BIN = pathlib.Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "scheduler", "tests"],
        ["ruff", "format", "--check", "scheduler", "tests"],
        ["mypy"],
        ["lint-imports", "--no-cache"],
    ],
    ids=["ruff", "ruff-format", "mypy", "import-layers"],
)
def test_tool_passes(command: list[str]) -> None:
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=support.ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

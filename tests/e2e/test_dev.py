"""`scheduler dev`, the README's first command: everything starts and the demo job arrives."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import pytest

from tests import support

pytestmark = pytest.mark.e2e


def test_dev_runs_the_procfile_and_shows_a_delivery(db_url: str, tmp_path: pathlib.Path) -> None:
    env = support.base_env(db_url, "")
    del env["ENDPOINT"], env["SECRET"]
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(pathlib.Path(sys.executable).parent / "scheduler"),
                "dev",
                "--port",
                str(support.free_port()),
                "--receiver-port",
                str(support.free_port()),
                "--data-dir",
                str(tmp_path / "state"),
            ],
            cwd=support.ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            support.wait_until(lambda: "delivery #1 of job" in log.read_text(), timeout=40)
        finally:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(30)
    output = log.read_text()
    secret = (tmp_path / "state" / "secret").read_text().strip()
    assert f"SECRET={secret}" in output
    assert '"body": {"hello": "from the scheduler"}' in output
    assert "web" in output and "worker" in output and "receiver" in output

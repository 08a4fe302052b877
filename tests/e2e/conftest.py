"""The Procfile's web and worker processes against a fresh database and a real receiver."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from scheduler import client
from tests import support


class System:
    """The running processes and a client for the API."""

    def __init__(self, db_url: str, receiver: support.Receiver, logs: pathlib.Path) -> None:
        self.db_url = db_url
        self.receiver = receiver
        self.logs = logs
        self.port = support.free_port()
        self.env = support.base_env(
            db_url,
            receiver.url,
            PORT=str(self.port),
            WEB_CONCURRENCY="1",
            SCHEDULER_POLL_INTERVAL="0.5",
            SCHEDULER_SHUTDOWN_GRACE="10",
        )
        self.processes: list[support.Process] = []
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = client.Client(self.url, support.SECRET)

    def start(self, name: str, ready: str = "dispatcher active", **env: str) -> support.Process:
        """Start a Procfile process and wait until it serves (web) or logs `ready` (worker)."""
        process = support.Process(name, dict(self.env, **env), self.logs).start()
        self.processes.append(process)
        if name == "web":
            support.wait_until(self._web_answers, timeout=20, interval=0.1)
        else:
            support.wait_until(lambda: ready in process.output(), timeout=20, interval=0.05)
        return process

    def _web_answers(self) -> bool:
        try:
            return requests.get(self.url + "/", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def call(self, method: str, path: str, payload: Any = None) -> requests.Response:
        return requests.request(
            method,
            self.url + path,
            json=payload,
            headers={"Scheduler-Secret": support.SECRET},
            timeout=10,
        )

    def insert(self, timestamp: str, body: Any) -> str:
        return self.client.insert(body, at=timestamp)

    def stop_all(self) -> None:
        self.client.close()
        for process in self.processes:
            if process.proc is not None and process.proc.poll() is None:
                process.stop()


@pytest.fixture
def system(db_url: str, receiver: support.Receiver, tmp_path: pathlib.Path) -> Iterator[System]:
    running = System(db_url, receiver, tmp_path)
    yield running
    running.stop_all()

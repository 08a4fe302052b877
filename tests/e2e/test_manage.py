"""Management actions end to end: batches, run now, retry, pause and resume, readiness."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import requests

from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e


def test_batch_is_delivered_and_run_now_skips_the_wait(system: System) -> None:
    system.start("web")
    system.start("worker")
    batch = system.call(
        "POST", "/jobs/batch", {"jobs": [{"delay": 0.5, "body": i} for i in range(50)]}
    )
    assert batch.status_code == 200
    ids = batch.json()["ids"]
    later = system.client.insert("later", delay=3600)
    system.client.run(later)
    support.wait_until(
        lambda: set(ids) | {later} <= {r.json["id"] for r in system.receiver.received()},
        timeout=15,
    )
    assert system.client.get(later).state == "delivered"


def test_a_failed_job_is_delivered_after_retry(system: System) -> None:
    healthy = False
    system.receiver.respond = lambda request: (200 if healthy else 500, 0.0)
    system.start("web")
    system.start("worker", SCHEDULER_RETRY_BASE="0.1", SCHEDULER_RETRY_CAP="0.2")
    job_id = system.client.insert(delay=0, max_attempts=2)
    support.wait_until(lambda: system.client.get(job_id).state == "failed", timeout=10)
    healthy = True
    system.client.retry(job_id)
    support.wait_until(lambda: system.client.get(job_id).state == "delivered", timeout=10)
    history = system.client.get(job_id).history or []
    assert [(a.attempt, a.status_code) for a in history] == [(1, 500), (2, 500), (3, 200)]


def test_paused_cron_stops_and_resumes_without_catching_up(system: System) -> None:
    system.start("web")
    system.start("worker")
    system.client.put_cron("tick", "* * * * * *")
    system.receiver.wait_for(2, timeout=10)
    assert system.client.pause_cron("tick").paused is True
    paused_at = time.time()
    time.sleep(2.5)
    during = [r for r in system.receiver.received() if r.arrived_at > paused_at + 0.5]
    assert during == []
    resumed_at = time.time()
    system.client.resume_cron("tick")
    system.receiver.wait_for(len(system.receiver.received()) + 2, timeout=10)
    ticks = [
        r.headers["Scheduler-Scheduled-At"]
        for r in system.receiver.received()
        if r.arrived_at > resumed_at
    ]
    stamps = [dt.datetime.fromisoformat(tick).timestamp() for tick in ticks]
    assert all(stamp >= int(resumed_at) for stamp in stamps), "a tick from the pause was sent"


def test_cron_run_fires_once_now(system: System) -> None:
    system.start("web")
    system.start("worker")
    system.client.put_cron("yearly", "@yearly")
    job_id = system.client.run_cron("yearly")
    (request,) = system.receiver.wait_for(1, timeout=10)
    assert request.json == {"id": "", "cron_id": "yearly", "body": None}
    assert request.headers["Scheduler-Delivery-Id"] == job_id


def test_readiness_follows_the_dispatcher(system: System) -> None:
    system.start("web", SCHEDULER_HEARTBEAT_MAX_AGE="2")
    never = requests.get(system.url + "/readyz", timeout=5)
    assert never.status_code == 503
    assert "No dispatcher" in never.json()["error"]["message"]
    assert requests.get(system.url + "/healthz", timeout=5).json() == {"status": "ok"}
    worker = system.start("worker")
    support.wait_until(
        lambda: requests.get(system.url + "/readyz", timeout=5).status_code == 200, timeout=10
    )
    worker.kill()
    support.wait_until(
        lambda: requests.get(system.url + "/readyz", timeout=5).status_code == 503, timeout=10
    )
    stale = requests.get(system.url + "/readyz", timeout=5).json()
    assert "heartbeat" in stale["error"]["message"]

"""End to end: the web's /metrics (gunicorn multiprocess mode), the dispatcher's metrics port,
and JSON logs from both processes."""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import socket

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from scheduler.worker import metrics
from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def at(seconds: float) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


BEARER = {"Authorization": f"Bearer {support.SECRET}"}


def scrape(url: str, headers: dict[str, str] = BEARER) -> Samples:
    """Every sample at `url`, keyed by name and labels; the secret as Prometheus sends it."""
    response = requests.get(url, headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_for_state(db_url: str, job_id: str, state: str) -> None:
    def reached() -> bool:
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return row == (state,)

    support.wait_until(reached, timeout=10, interval=0.05)


def test_web_and_dispatcher_metrics_after_one_delivery(system: System) -> None:
    metrics_port = support.free_port()
    web_process = system.start("web", WEB_CONCURRENCY="2")
    system.start("worker", SCHEDULER_METRICS_PORT=str(metrics_port))
    dispatcher_url = f"http://127.0.0.1:{metrics_port}/metrics"

    # Both metrics endpoints want the secret, as a bearer token or in Scheduler-Secret.
    for url in (system.url + "/metrics", dispatcher_url):
        for wrong in ({}, {"Authorization": "Bearer wrong-secret"}, {"Scheduler-Secret": "x"}):
            response = requests.get(url, headers=wrong, timeout=5)
            assert response.status_code == 401, (url, wrong)
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert scrape(url, {"Scheduler-Secret": support.SECRET})
        assert scrape(url, BEARER)

    refused = requests.post(
        system.url + "/insert", json={"timestamp": at(60), "body": {}}, timeout=5
    )
    assert refused.status_code == 401
    job_id = system.insert(at(0.3), {"n": 1})
    for _ in range(20):
        assert requests.get(system.url + "/healthz", timeout=5).status_code == 200
    (request,) = system.receiver.wait_for(1, timeout=15)
    assert request.json["id"] == job_id
    wait_for_state(system.db_url, job_id, "delivered")

    # Any worker may answer a scrape; multiprocess mode makes each answer the sum of all of them.
    for _ in range(4):
        web = scrape(system.url + "/metrics")
        requests_total = "scheduler_http_requests_total"
        assert value(web, requests_total, method="POST", route="/insert", status="200") == 1
        assert value(web, requests_total, method="POST", route="/insert", status="401") == 1
        assert value(web, requests_total, method="GET", route="/healthz", status="200") == 20
        duration_count = "scheduler_http_request_duration_seconds_count"
        assert value(web, duration_count, method="POST", route="/insert") == 2
        assert value(web, duration_count, method="GET", route="/healthz") == 20

    assert requests.get(system.url + "/no/such/route", timeout=5).status_code == 404
    web = scrape(system.url + "/metrics")
    assert value(web, requests_total, method="GET", route="unmatched", status="404") == 1

    # SIGHUP replaces every worker: the counts of the workers that served live on in their files.
    assert web_process.proc is not None
    web_process.proc.send_signal(signal.SIGHUP)
    support.wait_until(lambda: web_process.output().count("Worker exiting") >= 2, timeout=20)
    web = scrape(system.url + "/metrics")
    assert value(web, requests_total, method="GET", route="/healthz", status="200") == 20
    assert value(web, requests_total, method="POST", route="/insert", status="200") == 1

    # The outcome is counted once it is stored, a moment after the state poll can see it.
    support.wait_until(
        lambda: value(scrape(dispatcher_url), "scheduler_deliveries_total", outcome="delivered"),
        timeout=5,
    )
    worker = scrape(dispatcher_url)
    assert value(worker, "scheduler_deliveries_total", outcome="delivered") == 1
    assert value(worker, "scheduler_deliveries_total", outcome="retry") == 0
    assert value(worker, "scheduler_deliveries_total", outcome="failed") == 0
    assert value(worker, "scheduler_delivery_duration_seconds_count") == 1
    assert value(worker, "scheduler_firing_lateness_seconds_count") == 1
    lateness = value(worker, "scheduler_firing_lateness_seconds_sum")
    assert lateness is not None
    assert lateness >= 0
    print(f"firing lateness of a job inserted 0.3 s ahead: {lateness * 1000:.1f} ms")
    assert value(worker, "scheduler_dispatcher_leader") == 1
    assert value(worker, "scheduler_claim_queries_total") >= 1
    claim_seconds = value(worker, "scheduler_claim_seconds_total")
    assert claim_seconds is not None
    assert claim_seconds > 0
    assert value(worker, "scheduler_due_jobs") == 0
    assert value(worker, "scheduler_cron_ticks_total") == 0


def test_retries_failures_and_cron_ticks_are_counted(system: System) -> None:
    metrics_port = support.free_port()
    system.receiver.respond = lambda request: (500, 0.0)
    system.start("web")
    system.start(
        "worker",
        SCHEDULER_METRICS_PORT=str(metrics_port),
        SCHEDULER_RETRY_BASE="0.05",
        SCHEDULER_RETRY_CAP="0.1",
    )
    dispatcher_url = f"http://127.0.0.1:{metrics_port}/metrics"
    response = system.call("POST", "/insert", {"timestamp": at(0), "body": {}, "max_attempts": 2})
    assert response.status_code == 200, response.text
    wait_for_state(system.db_url, response.json()["id"], "failed")
    support.wait_until(
        lambda: value(scrape(dispatcher_url), "scheduler_deliveries_total", outcome="failed"),
        timeout=5,
    )
    worker = scrape(dispatcher_url)
    assert value(worker, "scheduler_deliveries_total", outcome="retry") == 1
    assert value(worker, "scheduler_deliveries_total", outcome="failed") == 1
    assert value(worker, "scheduler_deliveries_total", outcome="delivered") == 0
    assert value(worker, "scheduler_delivery_duration_seconds_count") == 2
    # The retry waited by design; only the first attempt says how late the dispatcher fired.
    assert value(worker, "scheduler_firing_lateness_seconds_count") == 1

    system.receiver.respond = lambda request: (200, 0.0)
    assert system.call("POST", "/cron", {"jobs": [{"id": "tick", "spec": "* * * * * *"}]}).ok
    support.wait_until(
        lambda: len([r for r in system.receiver.received() if r.json["cron_id"]]) >= 2, timeout=10
    )
    assert system.call("POST", "/cron", {"jobs": []}).ok
    worker = scrape(dispatcher_url)
    ticks = value(worker, "scheduler_cron_ticks_total")
    assert ticks is not None
    assert ticks >= 2


def test_due_jobs_gauge_counts_jobs_waiting_for_a_slot(system: System) -> None:
    metrics_port = support.free_port()
    system.receiver.respond = lambda request: (200, 6.0 if "slow" in request.json["body"] else 0.0)
    system.start("web")
    system.start(
        "worker",
        SCHEDULER_METRICS_PORT=str(metrics_port),
        SCHEDULER_DELIVERY_THREADS="1",
        SCHEDULER_RECONCILE_INTERVAL="1",
    )
    dispatcher_url = f"http://127.0.0.1:{metrics_port}/metrics"
    system.insert(at(0), {"slow": 1})
    system.receiver.wait_for(1, timeout=10)
    # One thread has two slots: the slow job holds one, the next job is claimed into the other,
    # and the third waits in the table, due.
    system.insert(at(0), {"claimed": 2})
    system.insert(at(0), {"waiting": 3})

    support.wait_until(
        lambda: value(scrape(dispatcher_url), "scheduler_due_jobs") == 1, timeout=5, interval=0.1
    )
    system.receiver.wait_for(3, timeout=20)
    support.wait_until(
        lambda: value(scrape(dispatcher_url), "scheduler_due_jobs") == 0, timeout=5, interval=0.1
    )


def served_port(process: support.Process) -> int:
    found = support.wait_until(
        lambda: re.search(r"metrics served on port (\d+)", process.output()), timeout=10
    )
    return int(found.group(1))


def taken_ports(count: int) -> list[socket.socket]:
    """`count` listening sockets on consecutive ports."""
    while True:
        base = support.free_port()
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("0.0.0.0", port))
                sock.listen()
            return held
        except OSError:
            for sock in held:
                sock.close()


def test_dispatchers_on_one_host_take_successive_ports_and_none_free_costs_only_metrics(
    system: System,
) -> None:
    port = support.free_port()
    first = system.start("worker", SCHEDULER_METRICS_PORT=str(port))
    second = system.start("worker", SCHEDULER_METRICS_PORT=str(port))
    assert served_port(first) == port
    assert served_port(second) > port
    leader = scrape(f"http://127.0.0.1:{served_port(first)}/metrics")
    assert value(leader, "scheduler_dispatcher_leader") == 1
    member = scrape(f"http://127.0.0.1:{served_port(second)}/metrics")
    assert value(member, "scheduler_dispatcher_leader") == 0
    assert value(member, "scheduler_due_jobs") == 0

    held = taken_ports(metrics.PORT_RANGE)
    try:
        base = held[0].getsockname()[1]
        third = system.start("worker", SCHEDULER_METRICS_PORT=str(base))
        assert third.proc is not None
        assert third.proc.poll() is None
        assert f"cannot serve metrics on ports {base} to {base + metrics.PORT_RANGE - 1}" in (
            third.output()
        )
    finally:
        for sock in held:
            sock.close()
    assert third.stop() == 0


def test_json_logs_from_both_processes_carry_ids_and_no_secrets(system: System) -> None:
    # DEBUG: each insert and each delivered attempt is logged at that level.
    web = system.start("web", SCHEDULER_LOG_FORMAT="json", SCHEDULER_LOG_LEVEL="DEBUG")
    worker = system.start(
        "worker",
        SCHEDULER_LOG_FORMAT="json",
        SCHEDULER_LOG_LEVEL="DEBUG",
        SCHEDULER_METRICS_PORT="0",
    )
    marker = "body-marker-6f1c2a"
    job_id = system.insert(at(0.2), {"marker": marker})
    refused = requests.post(
        system.url + "/insert", json={"timestamp": at(60), "body": {}}, timeout=5
    )
    assert refused.status_code == 401
    system.receiver.wait_for(1, timeout=15)
    wait_for_state(system.db_url, job_id, "delivered")
    assert web.stop() == 0
    assert worker.stop() == 0

    entries = []
    for process in (web, worker):
        output = process.output()
        assert support.SECRET not in output
        assert marker not in output
        for line in output.splitlines():
            entry = json.loads(line)  # every line, gunicorn's own included, is one JSON object
            assert {"ts", "level", "logger", "message"} <= set(entry), line
            entries.append(entry)
    messages = {(e["logger"], e["message"]) for e in entries}
    assert (
        "gunicorn.error",
        f"Workers listen at http://0.0.0.0:{system.port} (a socket each, SO_REUSEPORT)",
    ) in messages
    actions = {(e.get("action"), e.get("job_id")) for e in entries}
    assert ("insert_job", job_id) in actions
    assert ("deliver", job_id) in actions
    assert ("auth_failed", None) in actions
    (delivered,) = [e for e in entries if e.get("action") == "deliver"]
    assert delivered["status"] == 200
    assert delivered["attempt"] == 1
    assert isinstance(delivered["duration_ms"], int)
    assert any(e["logger"] == "gunicorn.error" for e in entries)

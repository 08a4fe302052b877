"""End to end: per-job HTTP options and response callbacks, through the Procfile's web and
dispatcher and real receivers. One system serves the whole module; each test looks only at its
own jobs."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import itertools
import json
import pathlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests

from scheduler import signing
from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e

HOOKS_SECRET = "hooks-secret-0123456789"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
# An answer longer than a callback carries (16 KiB), its lines numbered.
BIG_BODY = b"".join(b"%07d\n" % n for n in range(3000))
NOT_UTF8 = b"\xff\xfe\x00\x81 not text \xc3"
# An answer whose characters each take more bytes in JSON than in the answer.
ESCAPED_BODY = ('"\\\n\x01\u00e9\u2028<' * 400).encode()
SECRET_ANSWER_HEADERS = {"Set-Cookie": "session=answer-cookie", "X-Api-Key": "answer-key"}
# The fields of a callback's `job`: no body, no history.
JOB_FIELDS = {
    "id",
    "cron_id",
    "endpoint",
    "state",
    "attempts",
    "last_status",
    "last_error",
    "last_error_kind",
    "timestamp",
    "created_at",
    "finished_at",
}
# The endpoints of the system, each with its own receiver. `main` is the default endpoint; `deep`
# has credentials, a base path and a query in its URL; `hooks` takes callbacks (with a secret of
# its own), `badhooks` refuses them; `notices` takes failure notifications; `big`, `binary` and
# `flaky` answer as their names say, and `escaped` with characters JSON escapes.
NAMED = ("deep", "hooks", "badhooks", "notices", "big", "binary", "flaky", "escaped")
# Answers the default endpoint holds until a test sets their event (`.../held/<name>`).
HELD: dict[str, threading.Event] = {}


def route_by_path(request: support.Received) -> tuple[int, float]:
    """The default endpoint answers as its path says: `.../status/<code>`, after
    `.../stall/<seconds>` or once `.../held/<name>` is released, else 200 at once."""
    parts = request.path.partition("?")[0].split("/")
    status, stall = 200, 0.0
    for name, value in itertools.pairwise(parts):
        if name == "status":
            status = int(value)
        elif name == "stall":
            stall = float(value)
        elif name == "held":
            HELD[value].wait(timeout=30)
    return status, stall


@pytest.fixture(scope="module")
def receivers() -> Iterator[dict[str, support.Receiver]]:
    made = {name: support.Receiver() for name in ("main", *NAMED)}
    made["main"].respond = route_by_path
    made["badhooks"].respond = lambda request: (500, 0.0)
    made["flaky"].respond = lambda request: (500, 0.0)
    made["big"].answer = (BIG_BODY, "text/plain")
    made["big"].headers_for = lambda request: {**SECRET_ANSWER_HEADERS, "X-Request-Id": "r-1"}
    made["binary"].respond = lambda request: (500, 0.0)
    made["binary"].answer = (NOT_UTF8, "application/octet-stream")
    made["escaped"].answer = (ESCAPED_BODY, "text/plain; charset=utf-8")
    yield made
    for receiver in made.values():
        receiver.close()


@contextlib.contextmanager
def running_system(
    server_url: str,
    template_db: str,
    receivers: dict[str, support.Receiver],
    logs: pathlib.Path,
    **env: str,
) -> Iterator[System]:
    """The web and a dispatcher on a fresh database, with the endpoints NAMED."""
    urls = {name: receivers[name].url for name in NAMED}
    # Credentials in an endpoint's URL are the operator's: never copied into a callback.
    urls["deep"] = urls["deep"].replace("http://", "http://user:deep-password@") + "/v1?src=sched"
    with support.fresh_database(server_url, template_db) as db_url:
        running = System(db_url, receivers["main"], logs)
        running.env.update(
            SCHEDULER_ENDPOINTS=" ".join(f"{name}={url}" for name, url in urls.items()),
            SCHEDULER_ENDPOINT_SECRET_HOOKS=HOOKS_SECRET,
            SCHEDULER_FAILURE_ENDPOINT="notices",
            **env,
        )
        running.start("web")
        running.start("worker")
        try:
            yield running
        finally:
            running.stop_all()


@pytest.fixture(scope="module")
def system(
    server_url: str,
    template_db: str,
    receivers: dict[str, support.Receiver],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[System]:
    with running_system(
        server_url,
        template_db,
        receivers,
        tmp_path_factory.mktemp("logs"),
        # The default attempt: 2 s in all, a 1 s wait for any read.
        SCHEDULER_CONNECT_TIMEOUT="1",
        SCHEDULER_READ_TIMEOUT="1",
        SCHEDULER_MAX_TIMEOUT="10",
        # One attempt unless a job asks for more (callbacks and notices included), and a
        # default backoff far longer than any test waits.
        SCHEDULER_MAX_ATTEMPTS="1",
        SCHEDULER_RETRY_BASE="600",
        SCHEDULER_RETRY_CAP="600",
    ) as running:
        yield running


def insert(system: System, **job: Any) -> str:
    job.setdefault("delay", 0)
    response = system.call("POST", "/insert", job)
    assert response.status_code == 200, response.text
    job_id: str = response.json()["id"]
    return job_id


def deliveries_of(receiver: support.Receiver, job_id: str) -> list[support.Received]:
    return [r for r in receiver.received() if r.headers.get("Scheduler-Delivery-Id") == job_id]


def wait_for_delivery(receiver: support.Receiver, job_id: str) -> support.Received:
    found: list[support.Received] = support.wait_until(
        lambda: deliveries_of(receiver, job_id), timeout=15
    )
    return found[0]


def messages_about(receiver: support.Receiver, job_id: str) -> list[support.Received]:
    """Callbacks or failure notices `receiver` got about the job."""
    return [r for r in receiver.received() if r.json["job"]["id"] == job_id]


def wait_for_message(receiver: support.Receiver, job_id: str) -> support.Received:
    found: list[support.Received] = support.wait_until(
        lambda: messages_about(receiver, job_id), timeout=15
    )
    return found[0]


def row(system: System, job_id: str) -> dict[str, Any]:
    with psycopg.connect(system.db_url, row_factory=psycopg.rows.dict_row) as conn:
        found = conn.execute(
            "SELECT state, attempts, last_status, last_error, last_error_kind, run_at,"
            " created_at, finished_at, next_attempt_at, updated_at, event, endpoint,"
            " max_attempts FROM jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
    assert found is not None
    return found


def wait_for_state(system: System, job_id: str, state: str) -> dict[str, Any]:
    found: dict[str, Any] = support.wait_until(
        lambda: (current := row(system, job_id))["state"] == state and current, timeout=15
    )
    return found


def attempts_of(system: System, job_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(system.db_url) as conn:
        return conn.execute(
            "SELECT attempt, status_code, error_kind, duration_ms FROM delivery_attempts"
            " WHERE job_id = %s ORDER BY attempt",
            (job_id,),
        ).fetchall()


def messages_made_about(system: System, job_id: str) -> list[tuple[str, str]]:
    """(event, endpoint) of every callback and failure notice made about the job."""
    with psycopg.connect(system.db_url) as conn:
        return conn.execute(
            "SELECT event, endpoint FROM jobs WHERE event IS NOT NULL"
            " AND body -> 'job' ->> 'id' = %s ORDER BY event, endpoint",
            (job_id,),
        ).fetchall()


def moment(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# --- path, method, headers and signatures -----------------------------------------------------


def test_a_path_is_joined_under_the_endpoint_s_base_path_and_query(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    nested = insert(system, endpoint="deep", path="orders/42;v=2?expand=items&next=%2Fhome")
    leading = insert(system, endpoint="deep", path="/a/b.json")
    request = wait_for_delivery(receivers["deep"], nested)
    assert request.path == "/hook/v1/orders/42;v=2?src=sched&expand=items&next=%2Fhome"
    assert request.method == "POST"
    assert wait_for_delivery(receivers["deep"], leading).path == "/hook/v1/a/b.json?src=sched"
    header = request.headers[signing.HEADER]
    signing.verify(request.body, header, support.SECRET, method="POST", target=request.path)
    with pytest.raises(signing.SignatureMismatch):
        wrong = "/hook/v1/orders/43;v=2?src=sched&expand=items&next=%2Fhome"
        signing.verify(request.body, header, support.SECRET, method="POST", target=wrong)
    assert request.json == {"id": nested, "cron_id": "", "body": None}
    assert wait_for_state(system, nested, "delivered")["attempts"] == 1


def test_each_method_is_sent_with_a_v2_signature_over_method_and_target(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    jobs = {
        method: insert(system, method=method, path=f"by-method/{method.lower()}", body=method)
        for method in ("POST", "PUT", "PATCH", "DELETE")
    }
    # A method of its own binds the request even without a path.
    jobs["PUT without a path"] = insert(system, method="put", body="no path")
    for label, job_id in jobs.items():
        request = wait_for_delivery(receivers["main"], job_id)
        method = label.split()[0]
        assert request.method == method
        header = request.headers[signing.HEADER]
        assert "v2=" in header and "v1=" not in header
        signing.verify(request.body, header, support.SECRET, method=method, target=request.path)
        with pytest.raises(signing.SignatureMismatch):
            other = "PATCH" if method != "PATCH" else "PUT"
            signing.verify(request.body, header, support.SECRET, method=other, target=request.path)
        with pytest.raises(signing.MissingMethodOrTarget):
            signing.verify(request.body, header, support.SECRET)
    assert wait_for_delivery(receivers["main"], jobs["DELETE"]).path == "/hook/by-method/delete"
    assert wait_for_delivery(receivers["main"], jobs["PUT without a path"]).path == "/hook"


def test_jobs_that_set_neither_method_nor_path_keep_the_v1_signature(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    plain = insert(system, body={"plain": True})
    explicit_post = insert(system, method="POST", body="post")
    with_headers = insert(system, headers={"X-Only": "headers"}, timeout=5)
    for job_id in (plain, explicit_post, with_headers):
        request = wait_for_delivery(receivers["main"], job_id)
        header = request.headers[signing.HEADER]
        assert "v1=" in header and "v2=" not in header, header
        signing.verify(request.body, header, support.SECRET)
        assert request.method == "POST" and request.path == "/hook"


def test_headers_arrive_as_given_and_are_never_logged(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    headers = {
        "X-Tenant": "acme",
        "authorization": "Bearer job-secret-value-1",
        "X-Api-Key": "job-secret-value-2",
        "User-Agent": "tenant-agent/2.0",
        "Accept": "application/vnd.acme+json",
        "x-lower-case": "Mixed Case Value",
        "X-Empty": "",
    }
    job_id = insert(system, headers=headers, body=1)
    request = wait_for_delivery(receivers["main"], job_id)
    for name, value in headers.items():
        assert request.headers[name] == value, name
    # Ours are still there, and theirs replaced ours of the same name.
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Scheduler-Attempt"] == "1"
    assert "scheduler-dispatch" not in str(request.headers)
    signing.verify(request.body, request.headers[signing.HEADER], support.SECRET)
    wait_for_state(system, job_id, "delivered")
    shown = system.call("GET", f"/jobs/{job_id}").json()["headers"]
    assert shown["authorization"] == shown["X-Api-Key"] == "[redacted]"
    for process in system.processes:
        output = process.output()
        assert "job-secret-value" not in output, process.name


def test_the_running_web_refuses_bad_options_naming_them(system: System) -> None:
    bad = [
        ({"path": "../admin"}, ["path"]),
        ({"method": "GET"}, ["method"]),
        ({"headers": {"Host": "evil.example"}}, ["headers", "Host"]),
        ({"headers": {"X-A": "a\r\nX-B: b"}}, ["headers", "X-A"]),
        ({"timeout": 10.5}, ["timeout"]),  # SCHEDULER_MAX_TIMEOUT is 10
        ({"retry": {"base": 2, "cap": 1}}, ["retry", "cap"]),
        ({"callback": "nowhere"}, ["callback"]),
    ]
    for option, names in bad:
        response = system.call("POST", "/insert", {"delay": 0, "body": "refused", **option})
        assert response.status_code == 400, (option, response.text)
        named: Any = response.json()["error"]["fields"]
        for name in names:
            named = named[name]
        assert named, option
    with psycopg.connect(system.db_url) as conn:
        stored = conn.execute("SELECT count(*) FROM jobs WHERE body = '\"refused\"'").fetchone()
    assert stored == (0,)


# --- timeout and retry ------------------------------------------------------------------------


def test_a_slow_answer_within_the_job_s_timeout_is_delivered_once(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    patient = insert(system, path="slow/stall/2.5", timeout=8, max_attempts=3)
    impatient = insert(system, path="slow/stall/2.5", max_attempts=1)
    delivered = wait_for_state(system, patient, "delivered")
    failed = wait_for_state(system, impatient, "failed")
    assert (delivered["attempts"], delivered["last_status"]) == (1, 200)
    (attempt,) = attempts_of(system, patient)
    assert attempt[:3] == (1, 200, None)
    assert attempt[3] >= 2500, "the answer came 2.5 s after the request"
    assert len(deliveries_of(receivers["main"], patient)) == 1
    # The same endpoint without a timeout of its own meets the default read timeout (1 s).
    assert failed["last_error_kind"] == "timeout"


def test_a_job_timeout_shorter_than_the_default_cuts_its_attempt(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    # The default would wait 1 s for the answer, which comes after 0.8 s.
    job_id = insert(system, path="stall/0.8", timeout=0.3, max_attempts=1)
    failed = wait_for_state(system, job_id, "failed")
    assert (failed["last_error_kind"], failed["last_status"]) == ("timeout", None)
    assert failed["last_error"].startswith("timeout")
    ((attempt, status, kind, _),) = attempts_of(system, job_id)
    assert (attempt, status, kind) == (1, None, "timeout")
    assert len(deliveries_of(receivers["main"], job_id)) == 1


def test_a_job_s_own_backoff_replaces_the_default(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    flaky = receivers["flaky"]

    def fail_and_pause(request: support.Received) -> tuple[int, float]:
        # Paused before the answer, the endpoint holds the retry back until the test has read
        # when it is due.
        if len(flaky.received()) == 1:
            assert system.call("POST", "/endpoints/flaky/pause").status_code == 200
        return 500, 0.0

    flaky.respond = fail_and_pause
    job_id = insert(system, endpoint="flaky", retry={"base": 1, "cap": 2}, max_attempts=2)
    waiting = support.wait_until(
        lambda: (
            (current := row(system, job_id))["state"] == "scheduled"
            and current["attempts"] == 1
            and current
        ),
        timeout=15,
    )
    # Set together, by the statement that scheduled the retry: the delay it drew.
    delay = (waiting["next_attempt_at"] - waiting["updated_at"]).total_seconds()
    assert 0 <= delay <= 2, f"{delay} s: not within the job's cap (the default's is 600 s)"
    assert system.call("POST", "/endpoints/flaky/resume").status_code == 200
    failed = wait_for_state(system, job_id, "failed")
    assert failed["attempts"] == 2
    assert [a[:2] for a in attempts_of(system, job_id)] == [(1, 500), (2, 500)]


# --- callbacks --------------------------------------------------------------------------------


def check_job_part(system: System, job: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The callback's `job` holds exactly its fields, as the database has them."""
    assert set(job) == JOB_FIELDS
    stored = row(system, job_id)
    assert job["id"] == job_id and job["state"] == stored["state"]
    assert (job["attempts"], job["last_status"]) == (stored["attempts"], stored["last_status"])
    assert (job["last_error"], job["last_error_kind"]) == (
        stored["last_error"],
        stored["last_error_kind"],
    )
    assert moment(job["timestamp"]) == stored["run_at"]
    assert moment(job["created_at"]) == stored["created_at"]
    assert moment(job["finished_at"]) == stored["finished_at"]
    return stored


def test_a_delivered_job_s_callback_tells_its_answer_signed_for_the_callback_endpoint(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    job = {
        "delay": 0,
        "endpoint": "deep",
        "body": {"n": 1},
        "path": "answer",
        "headers": {"Authorization": "Bearer never-copied"},
        "callback": "hooks",
    }
    trace = {"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01", "tracestate": "vendor=1"}
    response = requests.post(
        system.url + "/insert",
        json=job,
        headers={"Scheduler-Secret": support.SECRET, **trace},
        timeout=10,
    )
    job_id = response.json()["id"]
    callback = wait_for_message(receivers["hooks"], job_id)
    message = callback.json
    assert set(message) == {"event", "job", "response"}
    assert message["event"] == "job.delivered"
    stored = check_job_part(system, message["job"], job_id)
    assert (stored["state"], stored["attempts"], stored["last_status"]) == ("delivered", 1, 200)
    assert (message["job"]["cron_id"], message["job"]["endpoint"]) == (None, "deep")
    response = message["response"]
    assert set(response) == {"status", "headers", "body", "truncated"}
    assert (response["status"], response["body"], response["truncated"]) == (200, "ok", False)
    assert response["headers"]["Content-Length"] == "2"
    # Sent as a delivery to the callback endpoint: signed with its secret, never the raw one,
    # and nothing of the job's own request.
    assert callback.method == "POST" and callback.path == "/hook"
    assert callback.headers["Scheduler-Event"] == "job.delivered"
    signing.verify(callback.body, callback.headers[signing.HEADER], HOOKS_SECRET)
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(callback.body, callback.headers[signing.HEADER], support.SECRET)
    assert "Scheduler-Secret" not in callback.headers
    sent = str(callback.headers) + callback.body.decode()
    assert "never-copied" not in sent and "deep-password" not in sent
    # In the job's trace: a child of its context, as each of its own attempts is.
    assert callback.headers["traceparent"].split("-")[1] == TRACE_ID
    assert callback.headers["tracestate"] == "vendor=1"
    made = row(system, callback.headers["Scheduler-Delivery-Id"])
    assert (made["event"], made["endpoint"], made["max_attempts"]) == ("job.delivered", "hooks", 1)
    assert len(messages_about(receivers["hooks"], job_id)) == 1


def test_a_failed_job_makes_its_callback_and_its_failure_notice(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    job_id = insert(
        system,
        path="status/500",
        headers={"X-Api-Key": "never-told"},
        max_attempts=1,
        callback="hooks",
    )
    callback = wait_for_message(receivers["hooks"], job_id)
    notice = wait_for_message(receivers["notices"], job_id)
    for message in (callback, notice):
        assert b"never-told" not in message.body
    assert callback.json["event"] == "job.failed"
    assert callback.headers["Scheduler-Event"] == "job.failed"
    stored = check_job_part(system, callback.json["job"], job_id)
    assert (stored["state"], stored["last_status"]) == ("failed", 500)
    assert (stored["last_error"], stored["last_error_kind"]) == ("HTTP 500", "http_500")
    response = callback.json["response"]
    assert (response["status"], response["body"], response["truncated"]) == (500, "nope", False)
    assert notice.json["event"] == "job.failed" and "response" not in notice.json
    assert messages_made_about(system, job_id) == [
        ("job.failed", "hooks"),
        ("job.failed", "notices"),
    ]


def test_a_callback_carries_16_kib_of_the_answer_and_none_of_its_secret_headers(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    job_id = insert(system, endpoint="big", callback="hooks")
    response = wait_for_message(receivers["hooks"], job_id).json["response"]
    assert response["status"] == 200 and response["truncated"] is True
    assert response["body"] == BIG_BODY[: 16 * 1024].decode()
    assert "encoding" not in response
    headers = {name.lower(): value for name, value in response["headers"].items()}
    assert headers["x-request-id"] == "r-1"
    assert headers["content-length"] == str(len(BIG_BODY))
    assert "set-cookie" not in headers and "x-api-key" not in headers
    raw = wait_for_message(receivers["hooks"], job_id).body.decode()
    for value in SECRET_ANSWER_HEADERS.values():
        assert value not in raw


def test_a_callback_carries_an_answer_that_is_not_utf8_in_base64(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    job_id = insert(system, endpoint="binary", callback="hooks")
    message = wait_for_message(receivers["hooks"], job_id).json
    assert message["event"] == "job.failed"
    response = message["response"]
    assert (response["status"], response["encoding"], response["truncated"]) == (
        500,
        "base64",
        False,
    )
    assert base64.b64decode(response["body"]) == NOT_UTF8


def test_a_cancelled_job_makes_no_callback(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    waiting = insert(system, delay=3600, callback="hooks")
    # One cancelled while its attempt runs, which then fails: a cancel wins over a failure.
    HELD["cancelled"] = threading.Event()
    sending = insert(
        system, path="status/500/held/cancelled", timeout=10, max_attempts=1, callback="hooks"
    )
    wait_for_delivery(receivers["main"], sending)
    for job_id in (waiting, sending):
        assert system.call("DELETE", f"/jobs/{job_id}").status_code == 204
    HELD["cancelled"].set()
    wait_for_state(system, waiting, "cancelled")
    assert wait_for_state(system, sending, "cancelled")["last_status"] == 500
    # A callback or notice would have been made by the statement that settled the job.
    assert messages_made_about(system, waiting) == []
    assert messages_made_about(system, sending) == []


def test_a_callback_that_fails_makes_no_callback_and_no_failure_notice(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    job_id = insert(system, callback="badhooks")
    wait_for_state(system, job_id, "delivered")
    refused = wait_for_message(receivers["badhooks"], job_id)
    callback_id = refused.headers["Scheduler-Delivery-Id"]
    failed = wait_for_state(system, callback_id, "failed")
    assert (failed["event"], failed["last_status"]) == ("job.delivered", 500)
    assert messages_made_about(system, callback_id) == []
    assert messages_made_about(system, job_id) == [("job.delivered", "badhooks")]


def test_a_cron_with_options_and_a_callback_delivers_its_runs_with_them(
    system: System, receivers: dict[str, support.Receiver]
) -> None:
    cron = {
        "spec": "* * * * * *",
        "path": "cron/run",
        "method": "PUT",
        "headers": {"X-Cron": "yes"},
        "timeout": 5,
        "callback": "hooks",
    }
    assert system.call("PUT", "/cron/with-options", cron).status_code == 200

    def first_run() -> support.Received | None:
        runs = [r for r in receivers["main"].received() if r.json.get("cron_id") == "with-options"]
        return runs[0] if runs else None

    run: support.Received = support.wait_until(first_run, timeout=15)
    assert system.call("DELETE", "/cron/with-options").status_code in (200, 204)
    assert (run.method, run.path, run.headers["X-Cron"]) == ("PUT", "/hook/cron/run", "yes")
    signing.verify(
        run.body, run.headers[signing.HEADER], support.SECRET, method="PUT", target=run.path
    )
    job_id = run.headers["Scheduler-Delivery-Id"]
    callback = wait_for_message(receivers["hooks"], job_id).json
    assert callback["event"] == "job.delivered"
    assert (callback["job"]["cron_id"], callback["job"]["state"]) == ("with-options", "delivered")
    assert callback["response"]["status"] == 200


@pytest.mark.parametrize("endpoint", ["big", "escaped"])
def test_a_callback_stays_within_scheduler_max_body_bytes(
    server_url: str,
    template_db: str,
    receivers: dict[str, support.Receiver],
    tmp_path: pathlib.Path,
    endpoint: str,
) -> None:
    limit = 2048
    env = {"SCHEDULER_MAX_BODY_BYTES": str(limit)}
    with running_system(server_url, template_db, receivers, tmp_path, **env) as small:
        job_id = insert(small, endpoint=endpoint, callback="hooks")
        callback = wait_for_message(receivers["hooks"], job_id)
    assert len(callback.body) <= limit
    message = json.loads(callback.body)
    assert message["job"]["id"] == job_id and message["job"]["state"] == "delivered"
    response = message["response"]
    assert response["status"] == 200 and response["truncated"] is True
    answer = receivers[endpoint].answer
    assert answer is not None
    # Cut, not mangled or dropped: the start of the answer, as text.
    assert response["body"] and answer[0].decode().startswith(response["body"])

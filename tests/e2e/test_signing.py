"""Signed deliveries end to end, secret rotation on both sides, and the demo receiver's check."""

from __future__ import annotations

import contextlib
import io
import threading

import pytest
import requests

from scheduler import receiver, signing
from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e


def test_deliveries_are_signed_and_verify(system: System) -> None:
    system.start("web")
    system.start("worker")
    system.insert("2020-01-01T00:00:00Z", {"signed": True})
    (request,) = system.receiver.wait_for(1, timeout=10)
    header = request.headers[signing.HEADER]
    assert header.count("v1=") == 1
    signing.verify(request.body, header, support.SECRET)
    assert request.headers["Scheduler-Secret"] == support.SECRET
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(request.body + b" ", header, support.SECRET)


def test_rotation_signs_with_both_secrets_and_accepts_both(system: System) -> None:
    new, old = "new-secret-aaaaaaaa", support.SECRET
    system.env["SECRET"] = f"{new},{old}"
    system.start("web")
    system.start("worker", SCHEDULER_SEND_RAW_SECRET="false")
    for secret in (new, old):
        response = requests.post(
            system.url + "/insert",
            json={"delay": 0, "body": secret},
            headers={"Scheduler-Secret": secret},
            timeout=5,
        )
        assert response.status_code == 200
    refused = requests.post(
        system.url + "/insert",
        json={"delay": 0},
        headers={"Scheduler-Secret": "x" * 20},
        timeout=5,
    )
    assert refused.status_code == 401
    received = system.receiver.wait_for(2, timeout=10)
    for request in received:
        header = request.headers[signing.HEADER]
        assert header.count("v1=") == 2
        signing.verify(request.body, header, [new])
        signing.verify(request.body, header, [old])
        assert "Scheduler-Secret" not in request.headers


def test_demo_receiver_accepts_only_signed_deliveries() -> None:
    server = receiver.make_server("127.0.0.1", 0, ("demo-secret-123",))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        thread.start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        body = b'{"id": "j1", "cron_id": "", "body": {"a": 1}}'
        good = {signing.HEADER: signing.sign(body, ["demo-secret-123"]), "Scheduler-Attempt": "1"}
        bad = {signing.HEADER: signing.sign(body, ["someone-else"])}
        assert requests.post(url, data=body, headers=good, timeout=5).status_code == 200
        assert requests.post(url, data=body, headers=bad, timeout=5).status_code == 401
        assert requests.post(url, data=body, timeout=5).status_code == 401
        server.shutdown()
        server.server_close()
    printed = output.getvalue()
    assert "delivery #1 of job j1" in printed and '{"a": 1}' in printed
    assert printed.count("rejected a delivery") == 2


def test_demo_receiver_checks_the_method_and_target_of_v2_deliveries() -> None:
    server = receiver.make_server("127.0.0.1", 0, ("demo-secret-123",))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    body = b'{"id": "j2", "cron_id": "", "body": null}'
    target = "/orders/42%2Fb?src=x"

    def send(method: str, path: str, header: str) -> int:
        headers = {signing.HEADER: header}
        return requests.request(
            method, base + path, data=body, headers=headers, timeout=5
        ).status_code

    put = signing.sign_request("PUT", target, body, ["demo-secret-123"])
    delete = signing.sign_request("DELETE", "/orders/42", body, ["demo-secret-123"])
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        thread.start()
        assert send("PUT", target, put) == 200
        assert send("PATCH", target, put) == 401
        assert send("PUT", "/orders/42/b?src=x", put) == 401
        assert send("DELETE", "/orders/42", delete) == 200
        assert send("POST", "/orders/42", delete) == 401
        server.shutdown()
        server.server_close()
    printed = output.getvalue()
    assert f"of job j2 (PUT {target}, " in printed and "of job j2 (DELETE /orders/42, " in printed
    assert printed.count("rejected a delivery") == 3

"""Both metrics endpoints want the secret: the web's /metrics (through the app) and the
dispatcher's port (its real server), each refusing a scrape without it and serving one with
`Authorization: Bearer` or Scheduler-Secret; SCHEDULER_METRICS_PUBLIC=true opens them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator

import pytest
import requests
from flask.testing import FlaskClient

from scheduler import config
from scheduler.web import app as app_module
from scheduler.worker import metrics as dispatch_metrics
from tests import support

OTHER_SECRET = "rotated-secret-98765"
SECRETS = (support.SECRET, OTHER_SECRET)
# (headers, served?)
CREDENTIALS = [
    pytest.param({}, False, id="none"),
    pytest.param({"Authorization": f"Bearer {support.SECRET}"}, True, id="bearer"),
    pytest.param({"Authorization": f"bearer  {OTHER_SECRET} "}, True, id="bearer-second-secret"),
    pytest.param({"Scheduler-Secret": support.SECRET}, True, id="scheduler-secret"),
    pytest.param({"Scheduler-Secret": OTHER_SECRET}, True, id="scheduler-secret-second"),
    pytest.param({"Authorization": "Bearer wrong-secret-000"}, False, id="wrong-bearer"),
    pytest.param({"Authorization": f"Basic {support.SECRET}"}, False, id="basic-scheme"),
    pytest.param({"Authorization": support.SECRET}, False, id="no-scheme"),
    pytest.param({"Scheduler-Secret": "wrong-secret-000"}, False, id="wrong-header"),
    pytest.param(
        {"Authorization": "Bearer wrong-secret-000", "Scheduler-Secret": support.SECRET},
        True,
        id="either-form-suffices",
    ),
]

# A scrape: headers in, (status, Content-Type, WWW-Authenticate, body) out.
Scrape = Callable[[dict[str, str]], tuple[int, str, str | None, bytes]]


def web_scrape(client: FlaskClient) -> Scrape:
    def scrape(headers: dict[str, str]) -> tuple[int, str, str | None, bytes]:
        response = client.get("/metrics", headers=headers)
        return (
            response.status_code,
            response.content_type,
            response.headers.get("WWW-Authenticate"),
            response.data,
        )

    return scrape


@pytest.fixture
def dispatcher_metrics() -> Iterator[Callable[[bool], Scrape]]:
    """Start the dispatcher's metrics server (public or not) on a free port."""
    servers: list[dispatch_metrics.MetricsServer] = []

    def start(public: bool) -> Scrape:
        port = support.free_port()
        server = dispatch_metrics.serve(port, SECRETS, public)
        assert server is not None
        servers.append(server)

        def scrape(headers: dict[str, str]) -> tuple[int, str, str | None, bytes]:
            response = requests.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=5)
            return (
                response.status_code,
                response.headers["Content-Type"],
                response.headers.get("WWW-Authenticate"),
                response.content,
            )

        return scrape

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def web_client(settings: config.Settings) -> Iterator[Callable[[bool], Scrape]]:
    apps = []

    def start(public: bool) -> Scrape:
        flask_app = app_module.create_app(
            dataclasses.replace(settings, secrets=SECRETS, metrics_public=public)
        )
        apps.append(flask_app)
        return web_scrape(flask_app.test_client())

    yield start
    for flask_app in apps:
        flask_app.extensions["scheduler.database"].pool.close()


@pytest.fixture(params=["web", "dispatcher"])
def endpoint(
    request: pytest.FixtureRequest,
    web_client: Callable[[bool], Scrape],
    dispatcher_metrics: Callable[[bool], Scrape],
) -> Callable[[bool], Scrape]:
    return web_client if request.param == "web" else dispatcher_metrics


@pytest.mark.parametrize(("headers", "served"), CREDENTIALS)
def test_metrics_are_served_only_with_the_secret(
    endpoint: Callable[[bool], Scrape], headers: dict[str, str], served: bool
) -> None:
    status, content_type, challenge, body = endpoint(False)(headers)
    if served:
        assert status == 200
        assert content_type.startswith("text/plain")
        assert b"# TYPE " in body
    else:
        assert status == 401
        assert content_type == "application/json"
        assert challenge is not None and challenge.startswith("Bearer")
        error = json.loads(body)["error"]
        assert error["code"] == "unauthorized"
        assert "Authorization: Bearer" in error["message"]
        assert support.SECRET.encode() not in body


def test_public_metrics_need_no_secret(endpoint: Callable[[bool], Scrape]) -> None:
    status, content_type, _, body = endpoint(True)({})
    assert status == 200
    assert content_type.startswith("text/plain")
    assert b"# TYPE " in body

"""Who may use the dashboard: login, sessions in the database, CSRF, the login limit across
workers, trusted proxies, read-only mode, security headers and HTML error pages."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from scheduler import config
from scheduler.web import app as app_module
from scheduler.web.dashboard import auth
from tests import support

Db = psycopg.Connection[tuple[Any, ...]]
OLD_SECRET = "old-secret-0123456789"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]*)"')
TEST_ACTION = "/ui/test-action"


@contextlib.contextmanager
def started(settings: config.Settings) -> Iterator[Flask]:
    """Another app on the same database: what a second gunicorn worker is."""
    flask_app = app_module.create_app(settings)
    try:
        yield flask_app
    finally:
        flask_app.extensions["scheduler.database"].pool.close()


@pytest.fixture
def actions() -> list[str]:
    return []


def add_test_routes(flask_app: Flask, actions: list[str]) -> None:
    """A dashboard action that records being run, and an audit and a crash to observe."""

    def act() -> str:
        actions.append("acted")
        auth.audit("test", 3, filter_state="failed")
        return "done"

    def crash() -> str:
        raise RuntimeError("boom")

    flask_app.add_url_rule(TEST_ACTION, "test_action", act, methods=["POST"])
    flask_app.add_url_rule("/ui/test-crash", "test_crash", crash)


@pytest.fixture
def dashboard(app: Flask, actions: list[str]) -> FlaskClient:
    add_test_routes(app, actions)
    return app.test_client()


def form_token(response: TestResponse) -> str:
    found = CSRF_INPUT.search(response.get_data(as_text=True))
    assert found, response.get_data(as_text=True)
    return found.group(1)


def log_in(
    client: FlaskClient, secret: str = support.SECRET, next_url: str | None = None, **kw: Any
) -> TestResponse:
    page = client.get("/ui/login", **kw)
    assert page.status_code == 200
    data = {"csrf_token": form_token(page), "secret": secret}
    if next_url is not None:
        data["next"] = next_url
    return client.post("/ui/login", data=data, **kw)


def page_token(client: FlaskClient, **kw: Any) -> str:
    """The CSRF token of the session's forms (the logout form's)."""
    page = client.get("/ui/", **kw)
    assert page.status_code == 200, page.status
    return form_token(page)


def session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie(auth.SESSION_COOKIE, path="/ui")
    assert cookie is not None
    return cookie.value


def set_cookie_header(response: TestResponse, name: str) -> str:
    (header,) = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    return header


def sessions(db: Db) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT id_sha256, client_address, expires_at - created_at FROM dashboard_sessions"
    ).fetchall()


def logged_in(client: FlaskClient) -> bool:
    response = client.get("/ui/")
    assert response.status_code in (200, 303)
    return response.status_code == 200


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/ui/", "/ui/login?next=/ui/"),
        ("/ui", "/ui/login?next=/ui"),
        ("/ui/jobs?state=failed", "/ui/login?next=/ui/jobs?state%3Dfailed"),
        ("/ui/no/such/page", "/ui/login?next=/ui/no/such/page"),
        ("/ui/logout", "/ui/login?next=/ui/logout"),
    ],
)
def test_before_login_every_dashboard_url_leads_to_the_login_page(
    client: FlaskClient, path: str, location: str
) -> None:
    response = client.get(path)

    assert response.status_code == 303
    assert response.headers["Location"] == location
    assert response.headers["Cache-Control"] == "no-store"


def test_a_post_before_login_leads_to_the_login_page_and_runs_nothing(
    dashboard: FlaskClient, actions: list[str]
) -> None:
    response = dashboard.post(TEST_ACTION, data={"csrf_token": "anything"})

    assert (response.status_code, response.headers["Location"]) == (303, "/ui/login")
    assert actions == []


def test_the_login_page_and_static_files_need_no_login(client: FlaskClient) -> None:
    page = client.get("/ui/login")
    css = client.get("/ui/static/dashboard.css")
    script = client.get("/ui/static/dashboard.js")

    assert page.status_code == 200 and page.mimetype == "text/html"
    assert 'type="password" name="secret"' in page.get_data(as_text=True)
    assert (css.status_code, css.mimetype) == (200, "text/css")
    assert script.status_code == 200


@pytest.mark.parametrize("secret", [support.SECRET, OLD_SECRET])
def test_each_rotated_secret_logs_in(
    settings: config.Settings, db: Db, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scheduler")
    rotated = dataclasses.replace(settings, secrets=(support.SECRET, OLD_SECRET))
    with started(rotated) as flask_app:
        client = flask_app.test_client()
        response = log_in(client, secret)

        assert (response.status_code, response.headers["Location"]) == (303, "/ui/")
        assert logged_in(client)
    ((digest, address, lifetime),) = sessions(db)
    assert address == "127.0.0.1"
    assert lifetime.total_seconds() == 12 * 3600
    (line,) = [r for r in caplog.records if getattr(r, "action", None) == "dashboard_login"]
    assert line.session == digest[: auth.SESSION_REFERENCE_LENGTH]  # type: ignore[attr-defined]
    assert session_cookie(client) not in caplog.text


def test_a_wrong_secret_is_refused_and_logged_without_the_value(
    client: FlaskClient, db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tried = "guess-" + support.SECRET

    response = log_in(client, tried)

    assert response.status_code == 403
    assert "That is not the secret." in response.get_data(as_text=True)
    assert client.get_cookie(auth.SESSION_COOKIE, path="/ui") is None
    assert sessions(db) == []
    assert not logged_in(client)
    failed = [r for r in caplog.records if getattr(r, "action", None) == "dashboard_login_failed"]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING
    assert failed[0].client_address == "127.0.0.1"  # type: ignore[attr-defined]
    for record in caplog.records:
        assert tried not in record.getMessage()
        assert tried not in repr(vars(record))
    assert tried not in caplog.text


def test_failed_logins_are_limited_per_address_across_workers(
    settings: config.Settings, db: Db
) -> None:
    limit = auth.LOGIN_FAILURE_LIMIT
    with started(settings) as first, started(settings) as second:
        clients = [first.test_client(), second.test_client()]
        for attempt in range(limit):
            assert log_in(clients[attempt % 2], "wrong-secret-1234").status_code == 403

        for client in clients:
            refused = log_in(client, "wrong-secret-1234")
            assert refused.status_code == 429
            assert refused.mimetype == "text/html"
            assert 0 < int(refused.headers["Retry-After"]) <= auth.LOGIN_FAILURE_WINDOW
            assert "Too many failed logins" in refused.get_data(as_text=True)
            # Even the right secret waits: the limit is on guesses, not on wrong ones.
            assert log_in(client, support.SECRET).status_code == 429
        # Another address is not held back.
        other = log_in(clients[0], support.SECRET, environ_base={"REMOTE_ADDR": "192.0.2.7"})
        assert other.status_code == 303

        counted = db.execute("SELECT client_address, failures FROM dashboard_login_failures")
        assert sorted(counted) == [("127.0.0.1", limit), ("192.0.2.7", 0)]
        db.execute(
            "UPDATE dashboard_login_failures SET window_started_at = now() - %s * interval '1s'",
            (auth.LOGIN_FAILURE_WINDOW + 1,),
        )
        assert log_in(clients[1], support.SECRET).status_code == 303
    # The login that got in pruned the windows that had passed.
    assert db.execute("SELECT count(*) FROM dashboard_login_failures").fetchone() == (1,)


def test_ipv6_clients_are_counted_by_their_64(client: FlaskClient, db: Db) -> None:
    log_in(client, "wrong-secret-1234", environ_base={"REMOTE_ADDR": "2001:db8:1:2::5"})
    log_in(client, "wrong-secret-1234", environ_base={"REMOTE_ADDR": "2001:db8:1:2::6"})

    assert db.execute(
        "SELECT client_address, failures FROM dashboard_login_failures"
    ).fetchall() == [("2001:db8:1:2::/64", 2)]


def test_logout_ends_the_session_in_the_database(client: FlaskClient, db: Db) -> None:
    log_in(client)
    cookie = session_cookie(client)

    response = client.post("/ui/logout", data={"csrf_token": page_token(client)})

    assert (response.status_code, response.headers["Location"]) == (303, "/ui/login")
    assert "Max-Age=0" in set_cookie_header(response, auth.SESSION_COOKIE)
    assert sessions(db) == []
    replay = client.application.test_client()
    replay.set_cookie(auth.SESSION_COOKIE, cookie, path="/ui")
    assert replay.get("/ui/").headers["Location"] == "/ui/login?next=/ui/"


def test_an_expired_session_leads_to_the_login_page_and_is_pruned(
    client: FlaskClient, db: Db
) -> None:
    log_in(client)
    db.execute("UPDATE dashboard_sessions SET expires_at = now() - interval '1 second'")

    assert not logged_in(client)
    log_in(client)
    assert len(sessions(db)) == 1


def test_changing_the_secret_ends_old_sessions(settings: config.Settings, db: Db) -> None:
    with started(settings) as before:
        client = before.test_client()
        log_in(client)
        cookie = session_cookie(client)
    rotated = dataclasses.replace(settings, secrets=("new-secret-0123456789", support.SECRET))
    for secrets, still_in in [(settings.secrets, True), (rotated.secrets, False)]:
        with started(dataclasses.replace(settings, secrets=secrets)) as after:
            replay = after.test_client()
            replay.set_cookie(auth.SESSION_COOKIE, cookie, path="/ui")
            assert logged_in(replay) is still_in
    assert len(sessions(db)) == 1  # the row stays until it expires; its cookie opens nothing


def test_session_cookie_flags_over_http(client: FlaskClient) -> None:
    header = set_cookie_header(log_in(client), auth.SESSION_COOKIE)

    assert "; HttpOnly" in header
    assert "; SameSite=Strict" in header
    assert "; Path=/ui;" in header + ";"
    assert f"; Max-Age={12 * 3600}" in header
    assert "Secure" not in header
    fresh = client.application.test_client()
    login_form = set_cookie_header(fresh.get("/ui/login"), auth.LOGIN_COOKIE)
    assert "; HttpOnly" in login_form and "; SameSite=Strict" in login_form
    assert "; Path=/ui/login" in login_form


def test_session_cookie_is_secure_over_https(client: FlaskClient) -> None:
    response = log_in(client, base_url="https://localhost")

    assert "; Secure" in set_cookie_header(response, auth.SESSION_COOKIE)


def test_forwarded_headers_count_only_from_trusted_proxies(
    settings: config.Settings, db: Db
) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.9, 10.0.0.2"}
    peer = {"REMOTE_ADDR": "10.0.0.1"}
    with started(settings) as untrusting:
        response = log_in(untrusting.test_client(), headers=forwarded, environ_base=peer)
        assert "Secure" not in set_cookie_header(response, auth.SESSION_COOKIE)
    trusting_settings = dataclasses.replace(settings, trusted_proxies=("10.0.0.0/8",))
    with started(trusting_settings) as trusting:
        response = log_in(trusting.test_client(), headers=forwarded, environ_base=peer)
        assert "; Secure" in set_cookie_header(response, auth.SESSION_COOKIE)

    addresses = db.execute("SELECT client_address FROM dashboard_sessions ORDER BY created_at")
    assert [row[0] for row in addresses] == ["10.0.0.1", "198.51.100.9"]


def test_a_router_in_front_of_every_request_is_trusted_with_a_star(
    settings: config.Settings, db: Db
) -> None:
    heroku = dataclasses.replace(settings, trusted_proxies=("*",))
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.1, 198.51.100.20"}
    with started(heroku) as flask_app:
        response = log_in(
            flask_app.test_client(), headers=forwarded, environ_base={"REMOTE_ADDR": "10.1.2.3"}
        )

    assert "; Secure" in set_cookie_header(response, auth.SESSION_COOKIE)
    assert db.execute("SELECT client_address FROM dashboard_sessions").fetchall() == [
        ("198.51.100.20",)
    ]


def test_gunicorn_leaves_forwarded_headers_to_the_app(db_url: str, tmp_path: Any) -> None:
    """gunicorn_conf turns off gunicorn's own X-Forwarded-Proto handling, even from 127.0.0.1."""
    check = (
        "import gunicorn.config\n"
        "from gunicorn.http.message import Request\n"
        "from gunicorn.http.unreader import IterUnreader\n"
        "import scheduler.web.gunicorn_conf as conf\n"
        "def parse(cfg):\n"
        "    raw = (b'GET /ui/ HTTP/1.1\\r\\nHost: x\\r\\nX-Forwarded-Proto: https\\r\\n'\n"
        "           b'SCRIPT_NAME: /elsewhere\\r\\n\\r\\n')\n"
        "    request = Request(cfg, IterUnreader([raw]), ('127.0.0.1', 5000))\n"
        "    return request.scheme, [h for h in request.headers if h[0] == 'SCRIPT_NAME']\n"
        "ours = gunicorn.config.Config()\n"
        "for setting in gunicorn.config.KNOWN_SETTINGS:\n"
        "    if hasattr(conf, setting.name):\n"
        "        ours.set(setting.name, getattr(conf, setting.name))\n"
        "assert parse(gunicorn.config.Config())[0] == 'https'  # what the test would catch\n"
        "assert parse(ours) == ('http', []), parse(ours)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    env.update(DATABASE_URL=db_url, SECRET=support.SECRET, ENDPOINT="http://127.0.0.1:9/hook")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_a_post_without_a_valid_csrf_token_is_refused_and_runs_nothing(
    dashboard: FlaskClient, actions: list[str], db: Db
) -> None:
    log_in(dashboard)
    token = page_token(dashboard)

    for data in [{}, {"csrf_token": ""}, {"csrf_token": token[:-1] + "x"}]:
        response = dashboard.post(TEST_ACTION, data=data)
        assert response.status_code == 403
        assert response.mimetype == "text/html"
        assert "security token" in response.get_data(as_text=True)
    assert dashboard.post("/ui/logout", data={"csrf_token": "forged"}).status_code == 403
    assert actions == []
    assert len(sessions(db)) == 1 and logged_in(dashboard)

    assert dashboard.post(TEST_ACTION, data={"csrf_token": token}).status_code == 200
    assert actions == ["acted"]


def test_a_login_without_the_forms_token_is_refused(client: FlaskClient, db: Db) -> None:
    client.get("/ui/login")  # sets the form's cookie
    no_token = client.post("/ui/login", data={"secret": support.SECRET})
    other = client.application.test_client()  # a page elsewhere posting to the login form
    no_cookie = other.post(
        "/ui/login",
        data={"secret": support.SECRET, "csrf_token": form_token(client.get("/ui/login"))},
    )

    assert no_token.status_code == no_cookie.status_code == 403
    assert sessions(db) == []
    assert db.execute("SELECT count(*) FROM dashboard_login_failures").fetchone() == (0,)


def test_read_only_mode_refuses_every_action(
    settings: config.Settings, actions: list[str], db: Db
) -> None:
    with started(dataclasses.replace(settings, dashboard_readonly=True)) as flask_app:
        add_test_routes(flask_app, actions)
        client = flask_app.test_client()
        log_in(client)
        overview = client.get("/ui/")
        token = form_token(overview)

        refused = client.post(TEST_ACTION, data={"csrf_token": token})
        logged_out = client.post("/ui/logout", data={"csrf_token": token})

    assert "Read-only" in overview.get_data(as_text=True)
    assert refused.status_code == 403 and refused.mimetype == "text/html"
    assert "read-only" in refused.get_data(as_text=True)
    assert actions == []
    assert logged_out.status_code == 303
    assert sessions(db) == []


def test_switched_off_the_dashboard_is_not_there(settings: config.Settings) -> None:
    with started(dataclasses.replace(settings, dashboard=False)) as flask_app:
        client = flask_app.test_client()
        answers = [
            client.get("/ui/"),
            client.get("/ui/login"),
            client.post("/ui/login", data={"secret": support.SECRET}),
            client.get("/ui/static/dashboard.css"),
        ]
        assert not [r for r in flask_app.url_map.iter_rules() if r.rule.startswith("/ui")]

    assert [r.status_code for r in answers] == [404, 404, 404, 404]
    assert answers[0].get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/ui/login", "/ui/", "/ui/no-such-page", "/ui/logout"])
def test_dashboard_pages_carry_the_security_headers(dashboard: FlaskClient, path: str) -> None:
    if path != "/ui/login":
        log_in(dashboard)
    response = dashboard.get(path)

    assert response.mimetype == "text/html"
    for name, value in auth.SECURITY_HEADERS.items():
        assert response.headers[name] == value
    page = response.get_data(as_text=True)
    assert "<script>" not in page and "<script src=" in page
    assert " style=" not in page and "<style" not in page


def test_the_content_security_policy_allows_no_inline_code() -> None:
    policy = auth.SECURITY_HEADERS["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"


def test_dashboard_errors_are_html_pages_and_the_api_keeps_json(
    dashboard: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    log_in(dashboard)

    missing = dashboard.get("/ui/no-such-page")
    wrong_method = dashboard.get("/ui/logout")
    with caplog.at_level(logging.CRITICAL, logger="scheduler.web.app"):
        crashed = dashboard.get("/ui/test-crash")
    api_missing = dashboard.get("/no-such-page")

    assert (missing.status_code, missing.mimetype) == (404, "text/html")
    assert "Not Found" in missing.get_data(as_text=True)
    assert (wrong_method.status_code, wrong_method.mimetype) == (405, "text/html")
    assert "POST" in wrong_method.headers["Allow"] and "GET" not in wrong_method.headers["Allow"]
    assert (crashed.status_code, crashed.mimetype) == (500, "text/html")
    assert "boom" not in crashed.get_data(as_text=True)
    assert api_missing.status_code == 404
    assert api_missing.get_json()["error"]["code"] == "not_found"


def test_a_database_outage_is_a_503_page(app: Flask) -> None:
    client = app.test_client()
    log_in(client)
    app.extensions["scheduler.database"].pool.close()

    response = client.get("/ui/")

    assert (response.status_code, response.mimetype) == (503, "text/html")
    assert response.headers["Retry-After"] == str(app_module.RETRY_AFTER_SECONDS)
    assert "database is unavailable" in response.get_data(as_text=True)


def test_the_json_api_does_not_accept_the_dashboards_cookie(client: FlaskClient) -> None:
    log_in(client)
    cookie = f"{auth.SESSION_COOKIE}={session_cookie(client)}"

    refused = client.get("/jobs", headers={"Cookie": cookie})
    accepted = client.get("/jobs", headers={"Scheduler-Secret": support.SECRET, "Cookie": cookie})

    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "unauthorized"
    assert accepted.status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/ui/",
        "/\\evil.example/",
        "/ui\\..\\..\\evil",
        "http:/ui/",
        "/ui/../evil",
        "/ui/%2e%2e/evil",
        "/elsewhere",
        "javascript:alert(1)",
        "/ui/\r\nLocation: https://evil.example/",
        " /ui/",
        "",
    ],
)
def test_next_never_leads_off_the_dashboard(client: FlaskClient, target: str) -> None:
    form = client.get("/ui/login", query_string={"next": target})
    assert 'name="next" value="/ui/"' in form.get_data(as_text=True)

    response = log_in(client, next_url=target)

    assert response.headers["Location"] == "/ui/"


def test_next_leads_back_to_the_dashboard_page_asked_for(client: FlaskClient) -> None:
    asked = '/ui/jobs?state=failed&q="><script>alert(1)</script>'
    form = client.get("/ui/login", query_string={"next": asked}).get_data(as_text=True)

    assert "<script>alert" not in form
    assert "&#34;&gt;&lt;script&gt;" in form
    location = log_in(client, next_url=asked).headers["Location"]
    assert location == "/ui/jobs?state=failed&q=%22%3E%3Cscript%3Ealert(1)%3C/script%3E"
    # Once logged in, the login page itself sends on.
    again = client.get("/ui/login", query_string={"next": "/ui/crons"})
    assert (again.status_code, again.headers["Location"]) == (303, "/ui/crons")


def test_actions_are_audited_with_a_session_reference(
    dashboard: FlaskClient, db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scheduler.web.dashboard")
    log_in(dashboard)
    dashboard.post(TEST_ACTION, data={"csrf_token": page_token(dashboard)})

    (line,) = [r for r in caplog.records if getattr(r, "action", None) == "dashboard_test"]
    ((digest, _, _),) = sessions(db)
    fields: dict[str, Any] = vars(line)
    assert line.name == "scheduler.web.dashboard" and line.levelno == logging.INFO
    assert fields["session"] == digest[: auth.SESSION_REFERENCE_LENGTH]
    assert (fields["count"], fields["filter_state"]) == (3, "failed")
    assert session_cookie(dashboard) not in caplog.text


def test_logging_out_is_audited(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scheduler")
    log_in(client)
    client.post("/ui/logout", data={"csrf_token": page_token(client)})

    logged = [getattr(r, "action", None) for r in caplog.records]
    assert [action for action in logged if action] == ["dashboard_login", "dashboard_logout"]

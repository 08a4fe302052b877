"""The dashboard's pages and actions through Flask's test client, on a real database: what each
page shows, pagination, escaping, and that every action changes exactly what it says."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import itertools
import json
import logging
import re
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from scheduler import config
from scheduler.web.dashboard import forms, pages
from tests import support
from tests.integration import test_dashboard_auth

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
JOB_LINK = re.compile(r'href="/ui/jobs/([0-9a-z]{26})"')

HEADERS = {"Scheduler-Secret": support.SECRET}

pytestmark = pytest.mark.usefixtures("signed_in")


@pytest.fixture
def signed_in(client: FlaskClient) -> None:
    """The test client holds a dashboard session."""
    answer = test_dashboard_auth.log_in(client)
    assert answer.status_code == 303, answer.data


def csrf_of(page: bytes) -> str:
    found = CSRF_FIELD.search(page.decode())
    assert found, "the page carries a form with a CSRF token"
    return found.group(1)


def post_form(client: FlaskClient, url: str, data: dict[str, Any], page: str = "/ui/jobs") -> Any:
    token = csrf_of(client.get(page).data)
    return client.post(url, data={**data, "csrf_token": token})


def insert(client: FlaskClient, count: int, **fields: Any) -> list[str]:
    jobs = [{"timestamp": "2099-01-01T00:00:00Z", "body": {"n": n}, **fields} for n in range(count)]
    answer = client.post("/jobs/batch", json={"jobs": jobs}, headers=HEADERS)
    assert answer.status_code == 200, answer.json
    ids: list[str] = answer.json["ids"]
    return ids


def fail(db: psycopg.Connection[Any], ids: list[str], status: int = 503) -> None:
    db.execute(
        "UPDATE jobs SET state = 'failed', attempts = 1, max_attempts = 1, last_status = %s,"
        " last_error = %s, last_error_kind = %s, finished_at = now() WHERE id = ANY(%s)",
        (status, f"HTTP {status}", f"http_{status}", ids),
    )


def states(db: psycopg.Connection[Any], ids: list[str]) -> dict[str, str]:
    rows = db.execute("SELECT id, state FROM jobs WHERE id = ANY(%s)", (ids,)).fetchall()
    return {str(job_id): str(state) for job_id, state in rows}


def test_overview_counts_jobs_by_state_and_lists_endpoints(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    ids = insert(client, 7)
    fail(db, ids[:2])
    page = client.get("/ui/").data.decode()
    assert re.search(r'href="/ui/jobs\?state=scheduled">5<', page)
    assert re.search(r'href="/ui/jobs\?state=failed">2<', page)
    assert "≈" not in page, "a small table is counted exactly"
    assert 'href="/ui/jobs?endpoint=default">default<' in page
    assert "No dispatcher is alive" in page


def test_overview_lists_each_dispatcher_with_its_threads_down(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    db.execute(
        "INSERT INTO dispatchers (id, host, pid, threads_down) VALUES"
        " ('well', 'h1', 1, '{}'), ('ailing', 'h2', 2, '{\"claim\": \"restarting\"}')"
    )
    page = client.get("/ui/").data.decode()
    assert "No dispatcher is alive" not in page
    rows = {
        row.split("<code>")[1].split("</code>")[0]: row
        for row in page.split("<tr>")
        if "<code>" in row and ("well" in row or "ailing" in row)
    }
    assert "claim restarting" in rows["ailing"]
    assert "none" in rows["well"] and "restarting" not in rows["well"]


def test_overview_shows_each_endpoint_s_weight(client: FlaskClient) -> None:
    assert (
        client.patch("/endpoints/default", json={"weight": 2.5}, headers=HEADERS).status_code == 200
    )
    page = client.get("/ui/").data.decode()
    assert "<th>weight</th>" in page
    row = re.search(r'endpoint=default">default</a></td>(.*?)</tr>', page, re.DOTALL)
    assert row and "<td>2.5</td>" in row.group(1)


def test_overview_estimates_states_on_a_large_table(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    db.execute(
        "INSERT INTO jobs (id, body, run_at, state, max_attempts, next_attempt_at)"
        " SELECT lpad(n::text, 26, '0'), '{}', now(), CASE WHEN n % 4 = 0 THEN 'failed'"
        " ELSE 'delivered' END, 1, now() FROM generate_series(1, 120000) AS n"
    )
    db.execute("ANALYZE jobs")
    page = client.get("/ui/").data.decode()
    delivered = re.search(r'state=delivered">≈ ([0-9,]+)<', page)
    assert delivered, "a large table's counts are marked as estimates"
    assert abs(int(delivered.group(1).replace(",", "")) - 90_000) < 9_000
    assert "estimates from PostgreSQL" in page


def test_job_list_pages_newest_first_without_repeats(client: FlaskClient) -> None:
    ids = insert(client, forms.PAGE_SIZE * 2 + 3)
    seen: list[str] = []
    url: str | None = "/ui/jobs"
    while url:
        page = client.get(url).data.decode()
        seen += JOB_LINK.findall(page)
        found = re.search(r'href="([^"]+)" rel="next"', page)
        url = html.unescape(found.group(1)) if found else None
    assert seen == sorted(ids, reverse=True)


def test_job_list_filters_and_explains_a_bad_filter(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    ids = insert(client, 4)
    fail(db, ids[:1])
    failed = client.get("/ui/jobs?state=failed").data.decode()
    assert JOB_LINK.findall(failed) == [ids[0]]
    bad = client.get("/ui/jobs?state=lost&after=yesterday")
    assert bad.status_code == 400
    text = bad.data.decode()
    assert "Must be one of" in text
    assert "Not a date and time" in text
    window = client.get("/ui/jobs?after=2098-12-31T00:00&before=2099-01-02T00:00")
    assert len(JOB_LINK.findall(window.data.decode())) == 4
    empty = client.get("/ui/jobs?after=2099-01-02T00:00")
    assert JOB_LINK.findall(empty.data.decode()) == []


def test_looking_up_an_id_opens_its_page(client: FlaskClient) -> None:
    (job_id,) = insert(client, 1)
    answer = client.get(f"/ui/jobs?id={job_id}")
    assert answer.status_code == 303
    assert answer.headers["Location"].endswith(f"/ui/jobs/{job_id}")
    assert client.get("/ui/jobs/0000000000000000000000000x").status_code == 404


def test_job_page_shows_the_body_as_text_never_as_markup(client: FlaskClient) -> None:
    hostile = '</pre><script>alert("x")</script><img src=x onerror=alert(1)>'
    document = {"timestamp": "2099-01-01T00:00:00Z", "body": {"note": hostile, "n": 0}}
    raw = json.dumps(document).replace('"n": 0', '"n": 1.10')
    answer = client.post("/insert", data=raw, content_type="application/json", headers=HEADERS)
    page = client.get(f"/ui/jobs/{answer.json['id']}").data.decode()
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    shown = re.search(r'<pre class="body">(.*?)</pre>', page, re.DOTALL)
    assert shown, "the body is on the page"
    assert json.loads(html.unescape(shown.group(1)))["note"] == hostile
    assert '"n": 1.10' in html.unescape(shown.group(1)), "numbers show exactly as stored"


def test_job_actions_run_retry_and_cancel(
    client: FlaskClient, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    first, second, third = insert(client, 3)
    fail(db, [second])
    caplog.set_level(logging.INFO, "scheduler.web.dashboard")
    page = f"/ui/jobs/{first}"
    ran = post_form(client, f"/ui/jobs/{first}/run", {}, page)
    assert ran.status_code == 303
    assert db.execute(
        "SELECT next_attempt_at <= now() FROM jobs WHERE id = %s", (first,)
    ).fetchone() == (True,)
    assert post_form(client, f"/ui/jobs/{second}/retry", {}, page).status_code == 303
    assert post_form(client, f"/ui/jobs/{third}/cancel", {}, page).status_code == 303
    assert states(db, [first, second, third]) == {
        first: "scheduled",
        second: "scheduled",
        third: "cancelled",
    }
    refused = post_form(client, f"/ui/jobs/{third}/cancel", {}, page)
    assert refused.status_code == 409
    assert b"<html" in refused.data
    actions = [
        r.action for r in caplog.records if getattr(r, "action", "").startswith("dashboard_")
    ]
    assert actions == ["dashboard_run_job", "dashboard_retry_job", "dashboard_cancel_job"]


def confirmed_count(page: bytes, element: str) -> int:
    found = re.search(rf'id="{element}">([0-9,]+)<', page.decode())
    assert found, page.decode()
    return int(found.group(1).replace(",", ""))


def test_bulk_retry_counts_then_retries_exactly_those_jobs(
    client: FlaskClient, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    mine = insert(client, 30, endpoint="default")
    others = insert(client, 5)
    fail(db, mine)
    fail(db, others)
    for second, job_id in enumerate(others):  # a cron has one job per tick
        db.execute(
            "UPDATE jobs SET cron_id = 'other', run_at = run_at + make_interval(secs => %s)"
            " WHERE id = %s",
            (second, job_id),
        )
    confirmation = client.get("/ui/jobs/retry?cron_id=")
    assert confirmed_count(confirmation.data, "retry-count") == 35
    narrowed = client.get("/ui/jobs/retry?cron_id=other")
    assert confirmed_count(narrowed.data, "retry-count") == 5
    form = dict(re.findall(r'name="(\w+)" value="([^"]*)"', confirmation.data.decode()))
    late = insert(client, 1)
    fail(db, late)  # failed after the confirmation was shown: not counted, so not retried
    db.execute("UPDATE jobs SET finished_at = now() + interval '1 second' WHERE id = %s", late)
    caplog.set_level(logging.INFO, "scheduler.web.dashboard")
    done = client.post("/ui/jobs/retry", data=form)
    assert done.status_code == 303
    assert "count=35" in done.headers["Location"]
    assert set(states(db, mine + others).values()) == {"scheduled"}
    assert states(db, late) == {late[0]: "failed"}
    (line,) = [r for r in caplog.records if getattr(r, "action", "") == "dashboard_bulk_retry"]
    assert line.count == 35  # type: ignore[attr-defined]
    shown = client.get(done.headers["Location"]).data.decode()
    assert "35 failed jobs were re-queued." in shown


def test_bulk_retry_stops_at_its_cap(
    client: FlaskClient, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forms, "MAX_BULK_RETRY", 25)
    monkeypatch.setattr(forms, "RETRY_BATCH", 10)
    ids = insert(client, 40)
    fail(db, ids)
    confirmation = client.get("/ui/jobs/retry")
    assert confirmed_count(confirmation.data, "retry-count") == 25
    assert "of more than that" in confirmation.data.decode()
    form = dict(re.findall(r'name="(\w+)" value="([^"]*)"', confirmation.data.decode()))
    client.post("/ui/jobs/retry", data=form)
    after = states(db, ids)
    assert sorted(after.values()).count("scheduled") == 25
    assert all(after[job_id] == "scheduled" for job_id in sorted(ids, reverse=True)[:25])


def test_bulk_cancel_confirms_what_can_still_be_cancelled(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    ids = insert(client, 4)
    fail(db, ids[:1])
    token = csrf_of(client.get("/ui/jobs").data)
    confirmation = client.post("/ui/jobs/cancel", data={"ids": ids, "csrf_token": token})
    assert confirmation.status_code == 200
    assert confirmed_count(confirmation.data, "cancel-count") == 3
    assert set(states(db, ids).values()) == {"failed", "scheduled"}, "confirming changes nothing"
    form = re.findall(r'name="(\w+)" value="([^"]*)"', confirmation.data.decode())
    done = client.post("/ui/jobs/cancel", data=_multi(form))
    assert "count=3" in done.headers["Location"]
    assert sorted(states(db, ids).values()) == ["cancelled"] * 3 + ["failed"]


def test_a_job_being_delivered_is_cancelled_once_and_shows_the_cancel_as_requested(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    waiting, delivering = insert(client, 2)
    db.execute("UPDATE jobs SET state = 'delivering' WHERE id = %s", (delivering,))
    page = f"/ui/jobs/{delivering}"
    button = f'action="/ui/jobs/{delivering}/cancel"'
    assert button in client.get(page).data.decode()
    token = csrf_of(client.get("/ui/jobs").data)
    confirmation = client.post(
        "/ui/jobs/cancel", data={"ids": [waiting, delivering], "csrf_token": token}
    )
    assert confirmed_count(confirmation.data, "cancel-count") == 2
    done = post_form(client, f"/ui/jobs/{delivering}/cancel", {}, page)
    assert done.status_code == 303 and "done=cancel_requested" in done.headers["Location"]
    assert states(db, [delivering]) == {delivering: "delivering"}
    shown = client.get(done.headers["Location"]).data.decode()
    assert "Cancel requested" in shown and "no other attempt starts" in shown
    assert button not in shown
    assert post_form(client, f"/ui/jobs/{delivering}/cancel", {}, page).status_code == 409


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


def put_cron(client: FlaskClient, cron_id: str, spec: str, **fields: Any) -> None:
    answer = client.put(f"/cron/{cron_id}", json={"spec": spec, **fields}, headers=HEADERS)
    assert answer.status_code == 200, answer.json


def test_crons_show_words_and_the_next_five_fire_times(client: FlaskClient) -> None:
    put_cron(client, "nightly", "0 30 2 * * *", timezone="Europe/Paris")
    listing = client.get("/ui/crons").data.decode()
    assert "At 02:30 (Europe/Paris)" in listing
    page = client.get("/ui/crons/nightly").data.decode()
    times = re.findall(r"<li>(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", page)
    assert len(times) == 5
    days = [dt.datetime.fromisoformat(t) for t in times]
    assert all(
        b - a in (dt.timedelta(days=1), dt.timedelta(hours=23), dt.timedelta(hours=25))
        for a, b in itertools.pairwise(days)
    )
    assert "overwrites this edit" in page


def test_cron_actions_pause_resume_run_and_delete(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    put_cron(client, "tick", "*/5 * * * *")
    page = "/ui/crons/tick"
    post_form(client, "/ui/crons/tick/pause", {}, page)
    assert db.execute("SELECT paused FROM crons WHERE id = 'tick'").fetchone() == (True,)
    assert "Paused: it does not fire" in client.get(page).data.decode()
    post_form(client, "/ui/crons/tick/resume", {}, page)
    assert db.execute("SELECT paused FROM crons WHERE id = 'tick'").fetchone() == (False,)
    post_form(client, "/ui/crons/tick/run", {}, page)
    assert db.execute("SELECT count(*) FROM jobs WHERE cron_id = 'tick'").fetchone() == (1,)
    confirmation = client.get("/ui/crons/tick/delete")
    assert b"Delete cron tick" in confirmation.data
    assert db.execute("SELECT count(*) FROM crons").fetchone() == (1,)
    post_form(client, "/ui/crons/tick/delete", {}, "/ui/crons/tick/delete")
    assert db.execute("SELECT count(*) FROM crons").fetchone() == (0,)
    assert client.get(page).status_code == 404


def test_editing_a_cron_shows_problems_on_the_form_and_changes_nothing(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    put_cron(client, "report", "0 0 9 * * mon-fri")
    page = "/ui/crons/report"
    fields = {
        "spec": "0 0 21 * * *",
        "timezone": "Mars/Olympus",
        "jitter": "0",
        "overlap": "allow",
        "endpoint": "default",
    }
    refused = post_form(client, "/ui/crons/report/edit", fields, page)
    assert refused.status_code == 400
    text = html.unescape(refused.data.decode())
    assert "unknown time zone 'Mars/Olympus'" in text
    assert 'value="0 0 21 * * *"' in text, "what was typed stays in the form"
    negative = post_form(client, "/ui/crons/report/edit", {**fields, "jitter": "-1"}, page)
    assert "Must be between 0 and" in negative.data.decode()
    assert db.execute("SELECT spec FROM crons").fetchone() == ("0 0 9 * * mon-fri",)
    saved = post_form(
        client,
        "/ui/crons/report/edit",
        {**fields, "timezone": "Asia/Tokyo", "jitter": "PT1M"},
        page,
    )
    assert saved.status_code == 303
    row = db.execute("SELECT spec, timezone, jitter FROM crons").fetchone()
    assert row == ("CRON_TZ=Asia/Tokyo 0 0 21 * * *", "Asia/Tokyo", 60.0)
    bad_spec = post_form(
        client,
        "/ui/crons/report/edit",
        {**fields, "spec": "61 * * * *", "timezone": "", "jitter": "0"},
        page,
    )
    assert bad_spec.status_code == 400
    assert "Invalid spec" in html.unescape(bad_spec.data.decode())


def test_failed_jobs_grouped_by_kind_with_redrive_of_one_group(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    unavailable = insert(client, 3)
    refused = insert(client, 2)
    fail(db, unavailable, 503)
    fail(db, refused)
    db.execute(
        "UPDATE jobs SET last_status = NULL, last_error = 'connection failed: refused',"
        " last_error_kind = 'refused' WHERE id = ANY(%s)",
        (refused,),
    )
    page = client.get("/ui/failed").data.decode()
    rows = re.findall(r"<code>(\w+)</code></a></td>\s*<td>([^<]+)</td>\s*<td[^>]*>(\d+)<", page)
    assert [(kind, int(count)) for kind, _, count in rows] == [("http_503", 3), ("refused", 2)]
    assert "Service Unavailable" in rows[0][1]
    assert "127.0.0.1" not in page, "groups show the kind, never the raw error text"
    listed = client.get("/ui/jobs?state=failed&error_kind=refused").data.decode()
    assert sorted(JOB_LINK.findall(listed)) == sorted(refused)
    confirmation = client.get("/ui/jobs/retry?error_kind=refused")
    assert confirmed_count(confirmation.data, "retry-count") == 2
    form = dict(re.findall(r'name="(\w+)" value="([^"]*)"', confirmation.data.decode()))
    client.post("/ui/jobs/retry", data=form)
    assert set(states(db, refused).values()) == {"scheduled"}
    assert set(states(db, unavailable).values()) == {"failed"}
    assert client.get("/ui/jobs?error_kind=lost").status_code == 400


def test_overview_charts_the_last_hour_from_the_rollup(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    buckets = [0] * 16
    buckets[3] = 10  # ten first attempts between 5 and 10 ms late
    for dispatcher, delivered in (("a", 7), ("b", 5)):
        db.execute(
            "INSERT INTO delivery_minutes (minute, dispatcher_id, delivered, failed, retried,"
            " lateness) VALUES (date_trunc('minute', now()) - interval '5 minutes', %s, %s, 1,"
            " 2, %s)",
            (dispatcher, delivered, buckets),
        )
    page = client.get("/ui/").data.decode()
    assert "12 delivered, 2 failed for good, 4 failed and retried" in " ".join(page.split())
    assert page.count('<rect class="bar"') == 1, "one minute had deliveries"
    assert len(re.findall(r'<circle class="dot dot-p99"', page)) == 1
    assert len(re.findall(r'<circle class="dot dot-p50"', page)) == 1


def test_crons_list_pages_in_id_order(
    client: FlaskClient, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "CRONS_PER_PAGE", 2)
    for name in ("c-a", "c-b", "c-c", "c-d", "c-e"):
        put_cron(client, name, "@hourly")
    seen: list[str] = []
    url: str | None = "/ui/crons"
    while url:
        page = client.get(url).data.decode()
        seen += re.findall(r'href="/ui/crons/(c-\w)"', page)
        found = re.search(r'href="([^"]+)" rel="next"', page)
        url = html.unescape(found.group(1)) if found else None
    assert seen == ["c-a", "c-b", "c-c", "c-d", "c-e"]
    assert client.get("/ui/crons?after=..").status_code == 400


def test_read_only_pages_show_everything_and_offer_no_action(
    settings: config.Settings, client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    ids = insert(client, 2)
    fail(db, ids[:1])
    put_cron(client, "tick", "@hourly")
    with test_dashboard_auth.started(
        dataclasses.replace(settings, dashboard_readonly=True)
    ) as flask_app:
        reader = flask_app.test_client()
        test_dashboard_auth.log_in(reader)
        shown = {
            url: reader.get(url).data.decode()
            for url in (
                "/ui/jobs",
                f"/ui/jobs/{ids[0]}",
                f"/ui/jobs/{ids[1]}",
                "/ui/failed",
                "/ui/crons/tick",
            )
        }
        refused = reader.post(
            "/ui/jobs/cancel",
            data={
                "ids": ids[1:],
                "confirmed": "yes",
                "csrf_token": csrf_of(reader.get("/ui/").data),
            },
        )
    assert all(ids[0] in page for page in list(shown.values())[:2])
    for url, page in shown.items():
        forms_here = re.findall(r'<form[^>]*method="post"[^>]*action="([^"]+)"', page)
        assert forms_here == ["/ui/logout"], (url, forms_here)
        assert "Retry" not in page.replace("Read-only", ""), url
    assert refused.status_code == 403
    assert states(db, ids[1:]) == {ids[1]: "scheduled"}


def test_an_endpoint_s_flow_keys_are_listed_most_due_first(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    insert(client, 2, flow={"key": "<tenant-1>", "rate": 2})
    insert(client, 1, flow={"key": "tenant-2", "max_in_flight": 3})
    db.execute("UPDATE jobs SET next_attempt_at = now() - interval '1 minute'")
    overview = client.get("/ui/").data.decode()
    assert 'href="/ui/endpoints/default/flows">flow keys<' in overview
    page = client.get("/ui/endpoints/default/flows").data.decode()
    rows = re.findall(r"<tr>\s*<td><code>(.*?)</code></td>(.*?)</tr>", page, re.DOTALL)
    assert [key for key, _ in rows] == ["&lt;tenant-1&gt;", "tenant-2"]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", rest) for _, rest in rows]
    assert [cell[:4] for cell in cells] == [["2/s", "none", "2", "0"], ["none", "3", "1", "0"]]
    assert client.get("/ui/endpoints/nowhere/flows").status_code == 404


def job_form(page: bytes) -> dict[str, str]:
    """The job page's edit form as a browser would send it untouched."""
    text = page.decode()
    values = {
        name: html.unescape(value)
        for name, value in re.findall(
            r'<input type="[a-z]+" name="([a-z_]+)" value="([^"]*)"', text
        )
    }
    body = re.search(r'<textarea name="body"[^>]*>(.*?)</textarea>', text, re.DOTALL)
    assert body, "the page has the edit form"
    chosen = dict(
        re.findall(
            r'<select name="([a-z_]+)">.*?<option value="([^"]+)" selected>', text, re.DOTALL
        )
    )
    assert set(chosen) == {"endpoint", "method"}
    return {**values, "body": html.unescape(body.group(1)), **chosen}


def test_editing_a_job_saves_only_what_changed(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    (job_id,) = insert(client, 1, flow={"key": "tenant-1", "rate": 2})
    page = f"/ui/jobs/{job_id}"
    form = job_form(client.get(page).data)
    assert (form["timestamp"], form["max_attempts"], form["flow_key"], form["flow_rate"]) == (
        "2099-01-01T00:00:00Z",
        "8",
        "tenant-1",
        "2",
    )
    assert json.loads(form["body"]) == {"n": 0}
    # Meanwhile the job moves (an application's edit, a debounced insert): the form's untouched
    # time must not move it back.
    moved = client.patch(f"/jobs/{job_id}", json={"delay": 60}, headers=HEADERS)
    assert moved.status_code == 200
    form["body"] = '{\r\n  "n": 1, "exact": 1.50\r\n}'
    form["max_attempts"] = "5"
    saved = client.post(f"/ui/jobs/{job_id}/edit", data=form)
    assert saved.status_code == 303
    assert "done=job_saved" in saved.headers["Location"]
    row = db.execute(
        "SELECT body::text, max_attempts, next_attempt_at < '2099-01-01', flow_key FROM jobs"
    ).fetchone()
    assert row == ('{"n": 1, "exact": 1.50}', 5, True, "tenant-1")
    assert "The job was saved." in client.get(saved.headers["Location"]).data.decode()
    form = job_form(client.get(page).data)
    form.update(flow_key="", timestamp="2098-05-01T10:30", endpoint="default")
    assert client.post(f"/ui/jobs/{job_id}/edit", data=form).status_code == 303
    row = db.execute("SELECT next_attempt_at, flow_key FROM jobs").fetchone()
    assert row == (dt.datetime(2098, 5, 1, 10, 30, tzinfo=dt.UTC), None)


def test_a_refused_job_edit_shows_its_problems_beside_what_was_typed(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    (job_id,) = insert(client, 1)
    form = job_form(client.get(f"/ui/jobs/{job_id}").data)
    before = db.execute("SELECT body, max_attempts, next_attempt_at FROM jobs").fetchone()
    unchanged = client.post(f"/ui/jobs/{job_id}/edit", data=form)
    assert unchanged.status_code == 400
    assert "Nothing to save" in unchanged.data.decode()
    for changes, problem in [
        ({"body": '{"n": 1,}'}, "Not valid JSON"),
        ({"body": '{"n": 1e400}'}, "At /n: The number 1e400"),
        ({"timestamp": "tomorrow"}, "Not a date and time"),
        ({"max_attempts": "0"}, "Must be greater than or equal to 1"),
        ({"flow_key": "k", "flow_rate": "fast"}, "Not a valid number."),
        ({"endpoint": "nowhere"}, "Unknown endpoint"),
    ]:
        refused = client.post(f"/ui/jobs/{job_id}/edit", data={**form, **changes})
        assert refused.status_code == 400, changes
        text = html.unescape(refused.data.decode())
        assert problem in text, (changes, text[-3000:])
        typed = next(iter(changes.values()))
        assert typed in text, "what was typed stays in the form"
    assert db.execute("SELECT body, max_attempts, next_attempt_at FROM jobs").fetchone() == before


def test_a_job_that_is_not_waiting_has_no_edit_form_and_refuses_one(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    (job_id,) = insert(client, 1)
    form = job_form(client.get(f"/ui/jobs/{job_id}").data)
    db.execute("UPDATE jobs SET state = 'delivering', attempts = 1")
    assert 'name="body"' not in client.get(f"/ui/jobs/{job_id}").data.decode()
    refused = client.post(f"/ui/jobs/{job_id}/edit", data={**form, "max_attempts": "3"})
    assert refused.status_code == 409
    assert "is delivering" in html.unescape(refused.data.decode())
    db.execute("UPDATE jobs SET state = 'scheduled'")
    spent = client.post(f"/ui/jobs/{job_id}/edit", data={**form, "max_attempts": "1"})
    assert spent.status_code == 409
    assert "Must be more than the 1 attempts" in html.unescape(spent.data.decode())


def test_a_read_only_dashboard_offers_no_job_edit_and_refuses_one(
    settings: config.Settings, client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    (job_id,) = insert(client, 1)
    form = job_form(client.get(f"/ui/jobs/{job_id}").data)
    with test_dashboard_auth.started(
        dataclasses.replace(settings, dashboard_readonly=True)
    ) as flask_app:
        reader = flask_app.test_client()
        test_dashboard_auth.log_in(reader)
        page = reader.get(f"/ui/jobs/{job_id}").data.decode()
        token = csrf_of(page.encode())
        refused = reader.post(
            f"/ui/jobs/{job_id}/edit", data={**form, "max_attempts": "3", "csrf_token": token}
        )
    assert 'name="body"' not in page and "/edit" not in page
    assert refused.status_code == 403
    assert db.execute("SELECT max_attempts FROM jobs").fetchone() == (8,)


def test_a_cron_page_shows_its_lifecycle_and_an_edit_keeps_it(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    bounds = {"start_at": "2030-01-01T00:00:00Z", "end_at": "2030-02-01T00:00:00Z", "max_runs": 3}
    put_cron(client, "report", "0 0 12 * * *", **bounds)
    page = client.get("/ui/crons/report").data.decode()
    assert "0 of 3 (3 left)" in page
    assert "2030-01-01" in page and "2030-02-01" in page
    assert "2030-01-01 12:00:00" in page, "the next fire times start at its start"
    listed = client.get("/ui/crons").data.decode()
    assert "active (3 runs left)" in listed

    post_form(client, "/ui/crons/report/edit", {"spec": "0 0 13 * * *"}, "/ui/crons/report")
    kept = db.execute("SELECT spec, max_runs, end_at IS NOT NULL FROM crons").fetchone()
    assert kept == ("0 0 13 * * *", 3, True), "what the form does not show is kept"


OPTIONS = {
    "path": "/orders/42?src=x",
    "method": "PUT",
    "headers": {"Authorization": "Bearer abc", "X-Tenant": "t1"},
    "timeout": 120,
    "retry": {"base": 5, "cap": 3600},
    "callback": "default",
}


def test_a_job_page_shows_how_the_job_is_sent_with_secrets_redacted(
    settings: config.Settings, client: FlaskClient
) -> None:
    (job_id,) = insert(client, 1, **OPTIONS)
    page = html.unescape(client.get(f"/ui/jobs/{job_id}").data.decode())
    assert "<code>PUT</code>" in page
    assert '<code class="target">http://127.0.0.1:9/hook/orders/42?src=x</code>' in page
    assert "<code>X-Tenant: t1</code>" in page
    assert "<code>Authorization: [redacted]</code>" in page and "Bearer abc" not in page
    assert "120 s per attempt" in page and "base 5 s, cap 3600 s" in page
    assert "default <span" in page.split("<dt>Callback</dt>")[1][:20]
    (plain,) = insert(client, 1)
    page = client.get(f"/ui/jobs/{plain}").data.decode()
    assert (
        "<code>POST</code>" in page
        and '<code class="target">http://127.0.0.1:9/hook</code>' in page
    )
    shown = page.split('<dl class="details">')[1].split("</dl>")[0]
    assert "none of its own" in shown and shown.count("the dispatcher's default") == 2
    # An endpoint's URL may hold a password: the page never shows it.
    billing = config.Endpoint(
        "billing", "https://app:hunter2@billing.example/in", (support.SECRET,)
    )
    with test_dashboard_auth.started(
        dataclasses.replace(settings, named_endpoints=(billing,))
    ) as flask_app:
        reader = flask_app.test_client()
        test_dashboard_auth.log_in(reader)
        (billed,) = insert(reader, 1, endpoint="billing", path="v2")
        page = html.unescape(reader.get(f"/ui/jobs/{billed}").data.decode())
    assert "https://app:[redacted]@billing.example/in/v2" in page and "hunter2" not in page


def test_callbacks_and_failure_notifications_are_marked_as_the_scheduler_s(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    (about,) = insert(client, 1, callback="default")
    callback = {"event": "job.failed", "job": {"id": about}, "response": None}
    notice = {"event": "job.failed", "job": {"id": about}}
    for job_id, body in (("0" * 25 + "1", callback), ("0" * 25 + "2", notice)):
        db.execute(
            "INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, event)"
            " VALUES (%s, %s, now(), now(), 8, 'job.failed')",
            (job_id, json.dumps(body)),
        )
    page = client.get(f"/ui/jobs/{'0' * 25}1").data.decode()
    assert "A callback (<code>job.failed</code>)" in page
    assert f'about job <a href="/ui/jobs/{about}">' in page
    page = client.get(f"/ui/jobs/{'0' * 25}2").data.decode()
    assert "A failure notification (<code>job.failed</code>)" in page
    plain = client.get(f"/ui/jobs/{about}").data.decode()
    assert "sent by the scheduler" not in plain
    listed = client.get("/ui/jobs").data.decode()
    assert listed.count("(job.failed)</span>") == 2


def test_editing_a_job_s_path_method_and_timeout_keeps_what_the_form_does_not_show(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    (job_id,) = insert(client, 1, **OPTIONS)
    page = f"/ui/jobs/{job_id}"
    form = job_form(client.get(page).data)
    assert (form["path"], form["method"], form["timeout"]) == ("/orders/42?src=x", "PUT", "120")
    saved = client.post(
        f"/ui/jobs/{job_id}/edit",
        data={**form, "path": "v2/orders/42", "method": "PATCH", "timeout": "PT1M"},
    )
    assert saved.status_code == 303
    stored = db.execute("SELECT http_options, callback FROM jobs").fetchone()
    assert stored == (
        {
            "path": "v2/orders/42",
            "method": "PATCH",
            "headers": [["Authorization", "Bearer abc"], ["X-Tenant", "t1"]],
            "timeout": 60,
            "retry": {"base": 5, "cap": 3600},
        },
        "default",
    ), "the headers keep their secret value, and the backoff and callback stay"
    form = job_form(client.get(page).data)
    assert client.post(f"/ui/jobs/{job_id}/edit", data={**form, "body": "2"}).status_code == 303
    assert db.execute("SELECT http_options ->> 'path' FROM jobs").fetchone() == ("v2/orders/42",)
    emptied = client.post(f"/ui/jobs/{job_id}/edit", data={**form, "path": "", "timeout": ""})
    assert emptied.status_code == 303
    options = db.execute("SELECT http_options FROM jobs").fetchone()
    assert options is not None and set(options[0]) == {"method", "headers", "retry"}
    form = job_form(client.get(page).data)
    for changes, problem in [
        ({"path": "../admin"}, "Must not contain '..' in the path."),
        ({"timeout": "301"}, "Must be at most 300 seconds (SCHEDULER_MAX_TIMEOUT)."),
        ({"timeout": "soon"}, "Not a number of seconds or an ISO 8601 duration"),
        ({"method": "GET"}, "Must be one of POST, PUT, PATCH, DELETE."),
    ]:
        refused = client.post(f"/ui/jobs/{job_id}/edit", data={**form, **changes})
        assert refused.status_code == 400, changes
        text = html.unescape(refused.data.decode())
        assert problem in text, (changes, text[-3000:])
    assert db.execute("SELECT http_options FROM jobs").fetchone() == options


def test_a_cron_page_shows_its_request_options_and_an_edit_keeps_them(
    client: FlaskClient, db: psycopg.Connection[Any]
) -> None:
    put_cron(client, "report", "0 0 12 * * *", **{**OPTIONS, "path": "reports"})
    page = html.unescape(client.get("/ui/crons/report").data.decode())
    assert '<code>PUT</code> <code class="target">http://127.0.0.1:9/hook/reports</code>' in page
    assert "<code>Authorization: [redacted]</code>" in page and "Bearer abc" not in page
    assert "120 s per attempt" in page and "base 5 s, cap 3600 s" in page
    before = db.execute("SELECT http_options, callback FROM crons").fetchone()
    saved = post_form(client, "/ui/crons/report/edit", {"spec": "0 0 13 * * *"}, "/ui/crons/report")
    assert saved.status_code == 303
    after = db.execute("SELECT spec, http_options, callback FROM crons").fetchone()
    assert after is not None and before is not None
    assert after == ("0 0 13 * * *", *before), "what the form does not show is kept"

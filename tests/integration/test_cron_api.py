"""GET /cron and GET /cron/next against the real app: the dispatcher's trigger code over HTTP."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from flask.testing import FlaskClient

PREVIEWS = [
    (
        "30 * * * * *",
        "2026-11-27T10:00:40Z",
        3,
        ["2026-11-27T10:01:30Z", "2026-11-27T10:02:30Z", "2026-11-27T10:03:30Z"],
    ),
    (
        "0 9 * * 0",
        "2026-11-27T10:00:00Z",
        2,
        ["2026-11-29T09:00:00Z", "2026-12-06T09:00:00Z"],
    ),
    (
        "0 0 12 ? * mon-fri",
        "2026-11-27T13:00:00+01:00",
        2,
        ["2026-11-30T12:00:00Z", "2026-12-01T12:00:00Z"],
    ),
    (
        "CRON_TZ=America/New_York 0 30 2 * * *",
        "2026-03-07T12:00:00Z",
        2,
        # 02:30 does not exist on the spring-forward day: it fires an hour later, once.
        ["2026-03-08T03:30:00-04:00", "2026-03-09T02:30:00-04:00"],
    ),
    ("@every 1h30m", "2026-11-27T10:00:00Z", 2, ["2026-11-27T10:30:00Z", "2026-11-27T12:00:00Z"]),
    ("0 0 0 30 Feb ?", "2026-11-27T10:00:00Z", 5, []),
]


@pytest.mark.parametrize(("spec", "after", "count", "expected"), PREVIEWS)
def test_cron_next_lists_fire_times(
    client: FlaskClient,
    auth: dict[str, str],
    spec: str,
    after: str,
    count: int,
    expected: list[str],
) -> None:
    response = client.get(
        "/cron/next", query_string={"spec": spec, "after": after, "count": count}, headers=auth
    )
    assert response.status_code == 200
    assert response.get_json() == {"spec": spec, "next": expected}


def test_cron_next_defaults_to_five_times_from_now(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    before = dt.datetime.now(dt.UTC)
    response = client.get("/cron/next", query_string={"spec": "* * * * * *"}, headers=auth)
    times = [dt.datetime.fromisoformat(t) for t in response.get_json()["next"]]
    assert len(times) == 5
    assert before < times[0] <= before + dt.timedelta(seconds=1)
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(times)] == [1] * 4


def test_cron_list_shows_spec_zone_and_next_fire(client: FlaskClient, auth: dict[str, str]) -> None:
    jobs = [
        {"id": "b_nightly", "spec": "CRON_TZ=Europe/Paris 0 0 3 * * *"},
        {"id": "a_never", "spec": "0 0 0 30 Feb ?"},
    ]
    assert client.post("/cron", json={"jobs": jobs}, headers=auth).status_code == 200
    listed = client.get("/cron", headers=auth).get_json()["jobs"]
    assert [job["id"] for job in listed] == ["a_never", "b_nightly"]
    never, nightly = listed
    assert never["next_fire_at"] is None and never["timezone"] == "UTC"
    assert nightly["timezone"] == "Europe/Paris"
    assert nightly["spec"] == "CRON_TZ=Europe/Paris 0 0 3 * * *"
    next_fire = dt.datetime.fromisoformat(nightly["next_fire_at"])
    local = next_fire.astimezone(dt.timezone(dt.timedelta(hours=1)))  # Paris in winter
    assert (local.hour, local.minute) == (3, 0)
    assert next_fire - dt.datetime.now(dt.UTC) <= dt.timedelta(days=1)
    assert nightly["last_fire_at"] is None

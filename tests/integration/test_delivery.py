"""delivery.deliver against a real HTTP receiver: what an attempt records of the answer."""

from __future__ import annotations

import datetime as dt

import pytest

from scheduler import config, delivery, jobs
from tests import support


def settings_for(url: str) -> config.Settings:
    return config.Settings.from_env(
        {"DATABASE_URL": "postgresql://unused/db", "SECRET": support.SECRET, "ENDPOINT": url}
    )


def one_delivery() -> jobs.Delivery:
    return jobs.Delivery(
        id=jobs.new_job_id(),
        cron_id=None,
        body='{"k": 1}',
        run_at=dt.datetime.now(dt.UTC),
        attempts=1,
        max_attempts=3,
    )


@pytest.mark.parametrize(
    ("body", "content_type", "excerpt"),
    [
        ("déjà vu".encode(), "text/plain; charset=utf-8", "déjà vu"),
        ("déjà vu".encode("latin-1"), "text/plain; charset=latin-1", "déjà vu"),
        (b'{"ok": true}', "application/json", '{"ok": true}'),
        (b"\xff\xfe broken", None, "\ufffd\ufffd broken"),
        ("déjà".encode(), "text/plain; charset=no-such-charset", "déjà"),
        (b"x" * 5000, "text/plain", "x" * delivery.EXCERPT_LENGTH),
        (b"", "text/plain", None),
    ],
)
def test_the_answer_is_kept_as_a_short_excerpt_whatever_its_encoding(
    receiver: support.Receiver, body: bytes, content_type: str | None, excerpt: str | None
) -> None:
    receiver.answer = (body, content_type)
    outcome = delivery.deliver(settings_for(receiver.url), one_delivery())
    assert outcome.ok
    assert outcome.status_code == 200
    assert outcome.response_excerpt == excerpt


def test_a_refused_connection_is_a_failed_attempt_not_an_exception() -> None:
    outcome = delivery.deliver(settings_for("http://127.0.0.1:9/hook"), one_delivery())
    assert not outcome.ok
    assert outcome.status_code is None
    assert outcome.error is not None and outcome.error.startswith("connection failed")

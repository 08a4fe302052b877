"""configure_logging: one line per event on stderr, as text or JSON, with the extra fields."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import logging.config
from collections.abc import Iterator
from typing import Any

import pytest

from scheduler import logs

DELIVERY_EXTRA = {
    "action": "deliver",
    "job_id": "01J0ABCDEF",
    "cron_id": None,
    "attempt": 2,
    "status": 200,
    "duration_ms": 41,
}


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    """What our handler writes; the root logger is put back as it was afterwards.

    sys.stderr is replaced inside the test body: pytest re-points it at its own capture when
    each test phase starts, which would undo a replacement made while setting up.
    """
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield io.StringIO()
    # Only ours: pytest swaps its own capture handlers in and out between test phases.
    for handler in root.handlers[:]:
        if handler not in before and type(handler).__module__ == logs.__name__:
            root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(stream)]


def test_json_line_has_the_base_fields_and_every_extra(stderr: io.StringIO) -> None:
    with contextlib.redirect_stderr(stderr):
        logs.configure_logging("INFO", "json")
        logging.getLogger("scheduler.worker.dispatcher").info(
            "delivered %s (attempt %d)", "01J0ABCDEF", 2, extra=DELIVERY_EXTRA
        )

    (entry,) = json_lines(stderr)
    assert list(entry)[:4] == ["ts", "level", "logger", "message"]
    assert entry["level"] == "INFO"
    assert entry["logger"] == "scheduler.worker.dispatcher"
    assert entry["message"] == "delivered 01J0ABCDEF (attempt 2)"
    assert {key: entry[key] for key in DELIVERY_EXTRA} == DELIVERY_EXTRA
    assert "traceback" not in entry
    assert entry["ts"].endswith("Z")
    ts = dt.datetime.fromisoformat(entry["ts"])
    assert ts.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - ts).total_seconds()) < 60


def test_json_exception_is_one_line_with_a_traceback_and_stack_after_the_extra_fields(
    stderr: io.StringIO,
) -> None:
    with contextlib.redirect_stderr(stderr):
        logs.configure_logging("INFO", "json")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("scheduler.web.app").exception(
                "unhandled error",
                stack_info=True,
                extra={"action": "internal_error", "job_id": "j1"},
            )

    (entry,) = json_lines(stderr)
    assert list(entry) == [
        "ts",
        "level",
        "logger",
        "message",
        "action",
        "job_id",
        "traceback",
        "stack",
    ]
    assert entry["level"] == "ERROR"
    assert entry["message"] == "unhandled error"
    assert entry["action"] == "internal_error"
    assert entry["traceback"].startswith("Traceback (most recent call last):")
    assert entry["traceback"].rstrip().endswith("ValueError: boom")
    assert entry["stack"].startswith("Stack (most recent call last):")


def test_json_encodes_any_extra_value_and_keeps_its_own_fields(stderr: io.StringIO) -> None:
    moment = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with contextlib.redirect_stderr(stderr):
        logs.configure_logging("INFO", "json")
        logging.getLogger("x").warning("odd", extra={"due": moment, "level": "spoofed", "epoch": 7})

    (entry,) = json_lines(stderr)
    assert entry["due"] == str(moment)
    assert entry["level"] == "WARNING"
    assert entry["epoch"] == 7


def test_text_line_ends_with_the_extra_fields(stderr: io.StringIO) -> None:
    with contextlib.redirect_stderr(stderr):
        logs.configure_logging("INFO", "text")
        logging.getLogger("scheduler.worker.dispatcher").info(
            "delivered %s", "01J0ABCDEF", extra=dict(DELIVERY_EXTRA, error="HTTP 500 from x=y")
        )

    (line,) = lines(stderr)
    assert (
        " INFO scheduler.worker.dispatcher: delivered 01J0ABCDEF action=deliver job_id=01J0ABCDEF"
        in line
    )
    assert line.endswith(' attempt=2 status=200 duration_ms=41 error="HTTP 500 from x=y"')
    assert "cron_id" not in line, "None values are left out of text lines"


def test_text_traceback_follows_the_line_with_its_fields(stderr: io.StringIO) -> None:
    with contextlib.redirect_stderr(stderr):
        logs.configure_logging("INFO", "text")
        try:
            raise KeyError("k")
        except KeyError:
            logging.getLogger("scheduler.worker.dispatcher").exception(
                "failed", extra={"job_id": "j1"}
            )

    first, *rest = lines(stderr)
    assert first.endswith("failed job_id=j1")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "KeyError: 'k'"


def test_records_without_extra_fields_stay_plain(stderr: io.StringIO) -> None:
    with contextlib.redirect_stderr(stderr):
        logs.configure_logging("INFO", "text")
        logging.getLogger("scheduler.migrate").info("applied migration %s", "0001_create_jobs.sql")
        logs.configure_logging("INFO", "json")
        logging.getLogger("scheduler.migrate").info("schema is up to date")

    text, as_json = lines(stderr)
    assert text.endswith(" INFO scheduler.migrate: applied migration 0001_create_jobs.sql")
    assert set(json.loads(as_json)) == {"ts", "level", "logger", "message"}


def test_configuring_again_switches_format_and_level_with_one_handler(
    stderr: io.StringIO,
) -> None:
    with contextlib.redirect_stderr(stderr):
        logs.configure_logging("INFO", "text")
        logs.configure_logging("INFO", "json")
        logs.configure_logging("WARNING", "json")
        logging.getLogger("x").info("dropped below WARNING")
        logging.getLogger("x").warning("kept")

    (entry,) = json_lines(stderr)
    assert (entry["level"], entry["logger"], entry["message"]) == ("WARNING", "x", "kept")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        logs.configure_logging("INFO", "xml")


def test_gunicorn_records_go_through_our_handler_once(stderr: io.StringIO) -> None:
    """gunicorn_conf hands gunicorn_logconfig() to gunicorn, which applies it with dictConfig."""
    gunicorn_error = logging.getLogger("gunicorn.error")
    saved = list(gunicorn_error.handlers), gunicorn_error.level, gunicorn_error.propagate
    try:
        with contextlib.redirect_stderr(stderr):
            logging.config.dictConfig(logs.gunicorn_logconfig("INFO", "json"))
            gunicorn_error.info("Booting worker with pid: %s", 42)
            logs.configure_logging("INFO", "json")  # what create_app then does in the worker
            gunicorn_error.info("Worker exiting (pid: %s)", 42)
    finally:
        gunicorn_error.handlers[:] = saved[0]
        gunicorn_error.setLevel(saved[1])
        gunicorn_error.propagate = saved[2]

    assert [(e["logger"], e["message"]) for e in json_lines(stderr)] == [
        ("gunicorn.error", "Booting worker with pid: 42"),
        ("gunicorn.error", "Worker exiting (pid: 42)"),
    ]

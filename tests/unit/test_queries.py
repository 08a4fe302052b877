"""queries.sql: how it is parsed, and that it matches what store.py uses."""

from __future__ import annotations

import re

import pytest

from scheduler import store
from tests import support

QUERIES_FILE = support.ROOT / "scheduler" / "queries.sql"
STORE_SOURCE = support.ROOT / "scheduler" / "store.py"

SAMPLE = """\
-- first_query --
-- What the first query does.
SELECT id, name
FROM things
WHERE id = %(id)s;

-- second_query --
-- A description that runs
-- over two lines.
UPDATE things SET name = %(name)s
    -- an indented comment is part of the SQL
WHERE id = %(id)s;
-- not_a_header -- because of this trailing text
"""


def test_parse_queries_splits_on_headers_and_drops_descriptions() -> None:
    queries = store.parse_queries(SAMPLE)

    assert queries == {
        "first_query": "SELECT id, name\nFROM things\nWHERE id = %(id)s",
        "second_query": (
            "UPDATE things SET name = %(name)s\n"
            "    -- an indented comment is part of the SQL\n"
            "WHERE id = %(id)s"
        ),
    }


def test_parse_queries_of_a_file_without_headers_is_empty() -> None:
    assert store.parse_queries("SELECT 1;\n") == {}


def _names_used_by_store() -> set[str]:
    source = STORE_SOURCE.read_text("utf-8")
    indexed = re.findall(r"QUERIES\[\s*\"(\w+)\"\s*\]", source)
    executed = re.findall(r"self\._execute\(\s*\"(\w+)\"", source)
    return set(indexed) | set(executed)


def test_store_uses_queries_by_name() -> None:
    used = _names_used_by_store()

    # Guards the regexes themselves: store.py uses both forms.
    assert {"lock_crons", "record_attempts", "insert_job", "list_dispatchers"} <= used


def test_every_query_store_uses_is_in_the_file() -> None:
    missing = _names_used_by_store() - set(store.QUERIES)

    assert not missing, f"store.py uses queries that queries.sql lacks: {sorted(missing)}"


def test_every_query_in_the_file_is_used_by_store() -> None:
    unused = set(store.QUERIES) - _names_used_by_store()

    assert not unused, f"queries.sql has queries store.py never runs: {sorted(unused)}"


def test_query_names_are_unique() -> None:
    headers = re.findall(r"^-- (\w+) --$", QUERIES_FILE.read_text("utf-8"), re.MULTILINE)

    duplicates = sorted({name for name in headers if headers.count(name) > 1})
    assert not duplicates
    assert len(headers) == len(store.QUERIES)


def test_the_loaded_queries_are_the_checkout_file() -> None:
    assert store.parse_queries(QUERIES_FILE.read_text("utf-8")) == store.QUERIES


@pytest.mark.parametrize("name", sorted(store.QUERIES))
def test_query_uses_only_named_placeholders(name: str) -> None:
    text = store.QUERIES[name]

    leftover = re.sub(r"%\(\w+\)s|%%", "", text)
    assert "%" not in leftover, f"{name} has a placeholder other than %(name)s"


@pytest.mark.parametrize("name", sorted(store.QUERIES))
def test_query_is_one_statement_without_select_star(name: str) -> None:
    text = store.QUERIES[name]

    assert text.strip()
    assert not re.search(r"SELECT\s+\*", text, re.IGNORECASE), f"{name} uses SELECT *"
    assert not text.endswith(";")
    assert ";" not in text, f"{name} holds more than one statement"


@pytest.mark.parametrize(
    ("paused", "open_query"),
    [
        ("claim_paused_endpoint_jobs", "claim_endpoint_jobs"),
        ("paused_endpoint_due_in", "endpoint_due_in"),
    ],
)
def test_a_paused_endpoint_query_is_its_open_one_taking_only_jobs_asked_to_run(
    paused: str, open_query: str
) -> None:
    # Written out twice so the planner sees run_requested literally; they must not drift apart.
    narrowed = re.sub(r"\s+AND run_requested$", "", store.QUERIES[paused], flags=re.MULTILINE)

    assert narrowed != store.QUERIES[paused]
    assert narrowed == store.QUERIES[open_query]


def test_every_notification_is_on_the_channel_with_a_kind_the_dispatcher_reads() -> None:
    sent = re.findall(r"pg_notify\(\s*'(\w+)',\s*'(\w)\b", QUERIES_FILE.read_text("utf-8"))

    assert len(sent) == QUERIES_FILE.read_text("utf-8").count("pg_notify(")
    assert {channel for channel, _ in sent} == {store.NOTIFY_CHANNEL}
    assert {kind for _, kind in sent} == set(store.NOTICE_KINDS)


@pytest.mark.parametrize(
    ("payload", "notice"),
    [
        ("j 1.5 1790000000.5", store.Notice(store.JOB_DUE, 1.5)),
        ("j -0.25 1790000000", store.Notice(store.JOB_DUE, -0.25)),
        ("c", store.Notice(store.CRONS_CHANGED)),
        ("b", store.Notice(store.JOBS_DUE)),
        # An earlier version's format, during a rolling deploy: look now rather than never.
        ("j 01jabc 1790000000.5", store.Notice(store.JOBS_DUE)),
        ("d 01jabc", store.Notice(store.JOBS_DUE)),
    ],
)
def test_notices_parse_and_anything_unknown_means_look_now(
    payload: str, notice: store.Notice
) -> None:
    assert store.parse_notice(payload) == notice

"""The storage modules' named-query files: how they are parsed, and that they match the code."""

from __future__ import annotations

import importlib
import re

import pytest

from scheduler.storage import deliveries, notices, queries
from tests import support

STORAGE = support.ROOT / "scheduler" / "storage"
MODULES = sorted(path.stem for path in STORAGE.glob("*.sql"))
PART = re.compile(r"\{(\w+)\}")

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
    assert queries.parse_queries(SAMPLE) == {
        "first_query": "SELECT id, name\nFROM things\nWHERE id = %(id)s",
        "second_query": (
            "UPDATE things SET name = %(name)s\n"
            "    -- an indented comment is part of the SQL\n"
            "WHERE id = %(id)s"
        ),
    }


def test_parse_queries_of_a_file_without_headers_is_empty() -> None:
    assert queries.parse_queries("SELECT 1;\n") == {}


def test_a_part_named_in_braces_is_the_query_of_that_name_and_others_are_left() -> None:
    parsed = queries.parse_queries(
        "-- columns --\n-- Shared.\nid, name\n\n"
        "-- read --\n-- Uses it.\nSELECT {columns} FROM things {where};\n"
    )

    assert parsed["read"] == "SELECT id, name FROM things {where}"
    assert queries.variant(parsed["read"], where="WHERE id = 1") == (
        "SELECT id, name FROM things WHERE id = 1"
    )


def test_a_query_that_includes_itself_is_refused() -> None:
    with pytest.raises(ValueError, match="includes itself"):
        queries.parse_queries("-- a --\n-- Loops.\nSELECT {b};\n\n-- b --\n-- Back.\n{a};\n")


def _module(name: str) -> object:
    return importlib.import_module(f"scheduler.storage.{name}")


def _source(name: str) -> str:
    return (STORAGE / f"{name}.py").read_text("utf-8")


def _run_by_name(name: str) -> set[str]:
    """The queries of `name`.sql that storage modules run by name (QUERIES["..."])."""
    own = set(re.findall(r"(?<![\w.])QUERIES\[\s*\"(\w+)\"\s*\]", _source(name)))
    for other in MODULES:
        own |= set(re.findall(rf"\b{name}\.QUERIES\[\s*\"(\w+)\"\s*\]", _source(other)))
    return own


@pytest.mark.parametrize("name", MODULES)
def test_every_query_of_a_file_is_used_and_every_name_used_exists(name: str) -> None:
    loaded = set(_module(name).QUERIES)  # type: ignore[attr-defined]
    run = _run_by_name(name)
    parts = set(PART.findall((STORAGE / f"{name}.sql").read_text("utf-8")))

    assert run, f"{name}.py runs no query by name"
    assert not run - loaded, f"{name} runs queries {name}.sql lacks: {sorted(run - loaded)}"
    unused = loaded - run - parts
    assert not unused, f"{name}.sql has queries nothing runs: {sorted(unused)}"
    # A part that is no query is a variant the module fills in with queries.variant().
    for variant in parts - loaded:
        assert re.search(rf"queries\.variant\([^)]*\b{variant}=", _source(name), re.DOTALL)


@pytest.mark.parametrize("name", MODULES)
def test_query_names_are_unique_within_a_file(name: str) -> None:
    headers = re.findall(r"^-- (\w+) --$", (STORAGE / f"{name}.sql").read_text(), re.MULTILINE)

    assert len(headers) == len(set(headers)) == len(_module(name).QUERIES)  # type: ignore[attr-defined]


def _all_queries() -> list[tuple[str, str]]:
    return [
        (f"{name}.{query}", text)
        for name in MODULES
        for query, text in _module(name).QUERIES.items()  # type: ignore[attr-defined]
    ]


@pytest.mark.parametrize(("name", "text"), _all_queries())
def test_query_uses_only_named_placeholders_and_is_one_statement(name: str, text: str) -> None:
    leftover = re.sub(r"%\(\w+\)s|%%", "", text)
    assert "%" not in leftover, f"{name} has a placeholder other than %(name)s"
    assert text.strip()
    assert not re.search(r"SELECT\s+\*", text, re.IGNORECASE), f"{name} uses SELECT *"
    assert ";" not in text, f"{name} holds more than one statement"


def test_every_notification_is_on_the_channel_with_a_kind_the_dispatcher_reads() -> None:
    text = "\n".join(path.read_text("utf-8") for path in STORAGE.glob("*.sql"))
    sent = re.findall(r"pg_notify\(\s*'(\w+)',\s*'(\w)\b", text)

    assert len(sent) == text.count("pg_notify(")
    assert {channel for channel, _ in sent} == {notices.CHANNEL}
    assert {kind for _, kind in sent} == set(notices.KINDS)


@pytest.mark.parametrize(
    ("payload", "notice"),
    [
        ("j 1.5", notices.Notice(notices.JOB_DUE, 1.5)),
        ("j -0.25", notices.Notice(notices.JOB_DUE, -0.25)),
        ("c", notices.Notice(notices.CRONS_CHANGED)),
        ("b", notices.Notice(notices.JOBS_DUE)),
        ("e", notices.Notice(notices.ENDPOINTS_CHANGED)),
        # Anything unreadable means: look now, rather than never.
        ("j soon", notices.Notice(notices.JOBS_DUE)),
        ("j 1.5 1790000000.5", notices.Notice(notices.JOBS_DUE)),
        ("d 01jabc", notices.Notice(notices.JOBS_DUE)),
    ],
)
def test_notices_parse_and_anything_unknown_means_look_now(
    payload: str, notice: notices.Notice
) -> None:
    assert notices.parse_notice(payload) == notice


@pytest.mark.parametrize(
    ("variants", "literal"),
    [
        ("CLAIM_ENDPOINT_JOBS", "AND run_requested"),
        ("ENDPOINT_DUE_IN", "AND run_requested"),
    ],
)
def test_a_paused_endpoint_query_is_its_open_one_taking_only_jobs_asked_to_run(
    variants: str, literal: str
) -> None:
    built = getattr(deliveries, variants)

    assert literal in built[True] and literal not in built[False]
    assert built[True].replace(literal, "").split() == built[False].split()

"""Error kinds: the names failures are grouped by, and what the dashboard says of each."""

from __future__ import annotations

import pytest

from scheduler import jobs


def test_every_kind_is_a_lower_case_word_with_a_sentence() -> None:
    assert {"timeout", "refused", "dns", "tls", "connection", "not_sent"} <= set(jobs.ERROR_KINDS)
    for kind, description in jobs.ERROR_KINDS.items():
        assert kind.isidentifier() and kind == kind.lower()
        assert not kind.startswith(jobs.HTTP_ERROR_KIND_PREFIX)
        assert description.endswith(".") and description[0].isupper()


@pytest.mark.parametrize(
    ("kind", "valid"),
    [
        ("timeout", True),
        ("http_503", True),
        ("http_999", True),
        ("http_50", False),
        ("http_5033", False),
        ("http_", False),
        ("HTTP 503", False),
        ("tls\n", False),
        ("", False),
    ],
)
def test_a_kind_is_a_known_name_or_an_http_status(kind: str, valid: bool) -> None:
    assert jobs.is_error_kind(kind) is valid


def test_an_http_kind_names_its_status_and_reads_as_the_status_line() -> None:
    assert jobs.http_error_kind(503) == "http_503"
    assert (
        jobs.describe_error_kind("http_503")
        == "The endpoint answered HTTP 503 Service Unavailable."
    )
    assert jobs.describe_error_kind("http_599") == "The endpoint answered HTTP 599."


def test_descriptions_cover_every_kind_and_failures_recorded_before_kinds() -> None:
    assert jobs.describe_error_kind("dns") == jobs.ERROR_KINDS["dns"]
    assert "earlier version" in jobs.describe_error_kind(None)
    assert jobs.describe_error_kind("made_up") == "Unknown kind 'made_up'."

"""W3C Trace Context: which headers a job keeps, and what each delivery attempt sends."""

from __future__ import annotations

import pytest

from scheduler import tracing

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (VALID, VALID),
        (f"00-{TRACE_ID}-{PARENT_ID}-00", f"00-{TRACE_ID}-{PARENT_ID}-00"),
        # Flags are kept as sent (bit 1 is the random flag of Trace Context level 2).
        (f"00-{TRACE_ID}-{PARENT_ID}-03", f"00-{TRACE_ID}-{PARENT_ID}-03"),
        (f"  {VALID}\t", VALID),
        # A higher version: the first four fields, read by the spec's forward-compatibility
        # rule, kept as version 00 with only the sampled flag.
        (f"01-{TRACE_ID}-{PARENT_ID}-03", f"00-{TRACE_ID}-{PARENT_ID}-01"),
        (f"cc-{TRACE_ID}-{PARENT_ID}-02-what-the-future-adds", f"00-{TRACE_ID}-{PARENT_ID}-00"),
    ],
)
def test_a_valid_traceparent_is_kept_as_version_00(header: str, expected: str) -> None:
    assert tracing.stored_context(header, None) == (expected, None)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        VALID.upper(),
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
        f"00-{'0' * 32}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"ff-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE_ID}-{PARENT_ID}-1",
        f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01",
        f"00_{TRACE_ID}_{PARENT_ID}_01",
        f"01-{TRACE_ID}-{PARENT_ID}-01x",  # a higher version still needs a dash after flags
        f"0-{TRACE_ID}-{PARENT_ID}-01",
        f"{VALID},{VALID}",  # sent twice, and combined
    ],
)
def test_a_malformed_traceparent_is_ignored_and_its_tracestate_with_it(
    header: str | None,
) -> None:
    assert tracing.stored_context(header, "congo=t61rcWkgMzE") == (None, None)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("congo=t61rcWkgMzE", "congo=t61rcWkgMzE"),
        ("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        (" ,rojo=1,, \t,congo=2 ", "rojo=1,congo=2"),  # empty members are allowed, and dropped
        ("tenant@vendor=x", "tenant@vendor=x"),
        ("k= leading spaces are the value's", "k= leading spaces are the value's"),
        ("", None),
        (" , ", None),
        (None, None),
    ],
)
def test_a_valid_tracestate_is_kept_tidied(header: str | None, expected: str | None) -> None:
    assert tracing.stored_context(VALID, header) == (VALID, expected)


@pytest.mark.parametrize(
    "header",
    [
        "novalue",
        "Upper=1",
        "k=1,k=2",  # a key appears once
        "k=a,b",
        "k=a=b",
        "k=tab\there",
        "k=é",
        "_k=1",
        "k=" + "v" * 257,
        "k" * 257 + "=1",
        ",".join(f"k{n}=1" for n in range(33)),
    ],
)
def test_a_malformed_tracestate_is_dropped_and_the_traceparent_kept(header: str) -> None:
    assert tracing.stored_context(VALID, header) == (VALID, None)


def test_a_long_tracestate_loses_whole_members_long_ones_first_then_from_the_end() -> None:
    long_member = "big=" + "x" * 200
    short = [f"k{n:02d}=" + "v" * 20 for n in range(30)]  # 24 characters each
    kept = tracing.parse_tracestate(",".join([short[0], long_member, *short[1:]]))
    assert kept is not None
    assert len(kept) <= tracing.MAX_TRACESTATE_LENGTH
    members = kept.split(",")
    assert long_member not in members
    assert members == short[: len(members)], "members are dropped from the end"
    assert len(",".join(short[: len(members) + 1])) > tracing.MAX_TRACESTATE_LENGTH


def test_each_delivery_attempt_is_a_new_span_of_the_same_trace() -> None:
    sent = [tracing.delivery_headers(VALID, "congo=t61rcWkgMzE") for _ in range(20)]
    parent_ids = set()
    for headers in sent:
        version, trace_id, parent_id, flags = headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
        assert len(parent_id) == 16 and int(parent_id, 16) != 0
        assert parent_id != PARENT_ID
        assert headers["tracestate"] == "congo=t61rcWkgMzE"
        parent_ids.add(parent_id)
    assert len(parent_ids) == len(sent)


def test_a_job_without_a_trace_sends_no_trace_headers() -> None:
    assert tracing.delivery_headers(None, None) == {}
    headers = tracing.delivery_headers(VALID, None)
    assert set(headers) == {"traceparent"}

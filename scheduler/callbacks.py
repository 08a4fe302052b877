"""What a job's callback says of the answer to its last attempt, within the size a delivery may
have (docs/api.md, "Callbacks").

The callback's message is `{"event", "job", "response"}`; storage/outcomes.sql builds it, with the
job's fields as the database holds them, around the `response` made here. Its size is counted
here as PostgreSQL writes the message (jsonb's text: `", "` and `": "` between items, the same
escapes as json.dumps without ensure_ascii), so that the whole stays within
SCHEDULER_MAX_BODY_BYTES: the answer's body is cut first, then its headers.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

from scheduler import http_options

# How much of an answer's body a callback carries (an attempt of a job with a callback reads this
# much, one without only its excerpt).
BODY_BYTES = 16 * 1024
# What jsonb cannot hold in a string: NUL. Lone surrogates cannot come from bytes decoded as
# UTF-8, but header values are decoded as latin-1 and may hold any control character.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# The length of every timestamp outcomes.sql writes into `job`: 2026-12-06T15:00:00.000000Z.
_TIMESTAMP = "0" * 27
# Cuts of a body that does not fit are searched for down to this many bytes.
_CUT_STEP = 64


@dataclasses.dataclass(frozen=True)
class Answer:
    """What an endpoint answered: its status, its headers in order, the first BODY_BYTES of its
    body, and whether more followed."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    more: bool = False


@dataclasses.dataclass(frozen=True)
class Finished:
    """The fields of a finished job that its callback's `job` carries, as far as the dispatcher
    knows them: the rest are timestamps, of fixed width."""

    id: str
    cron_id: str | None
    endpoint: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    last_error_kind: str | None


def message_size(finished: Finished, response: dict[str, Any] | None) -> int:
    """Bytes of the callback's message, as outcomes.sql writes it (jsonb's text)."""
    job = {
        **dataclasses.asdict(finished),
        "timestamp": _TIMESTAMP,
        "created_at": _TIMESTAMP,
        "finished_at": _TIMESTAMP,
    }
    message = {"event": "job." + finished.state, "job": job, "response": response}
    return len(json.dumps(message, ensure_ascii=False).encode("utf-8"))


def response_of(answer: Answer | None, finished: Finished, limit: int) -> dict[str, Any] | None:
    """The callback's `response` for `answer` (None: there was none): its status, its headers
    but the secret ones (http_options.is_secret_header), and its body as text, or in base64 when
    it is not UTF-8 text, with `truncated` when any of the answer was left out, all within a
    message of `limit` bytes."""
    if answer is None:
        return None
    headers = [
        (_storable(name), _storable(value))
        for name, value in answer.headers
        if not http_options.is_secret_header(name)
    ]
    body, more = answer.body, answer.more
    response = _response(answer.status, headers, body, more)
    if message_size(finished, response) <= limit:
        return response
    # Too large: the longest cut of the body that fits (whole kept headers first), else fewer
    # headers with no body.
    fits = _longest_fitting(
        lambda n: _response(answer.status, headers, body[:n], True), finished, limit, len(body)
    )
    if fits is not None:
        return fits
    while headers:
        headers.pop()
        response = _response(answer.status, headers, b"", True)
        if message_size(finished, response) <= limit:
            return response
    return _response(answer.status, [], b"", True)


def _longest_fitting(
    make: Callable[[int], dict[str, Any]], finished: Finished, limit: int, length: int
) -> dict[str, Any] | None:
    """make(n) for the largest n (a multiple of _CUT_STEP below `length`, or 0) whose message
    fits in `limit`; None if not even make(0) fits."""
    low, high = 0, length // _CUT_STEP
    best = None
    while low <= high:
        middle = (low + high) // 2
        candidate = make(middle * _CUT_STEP)
        if message_size(finished, candidate) <= limit:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best


def _response(
    status: int, headers: list[tuple[str, str]], body: bytes, truncated: bool
) -> dict[str, Any]:
    response: dict[str, Any] = {"status": status, "headers": _joined(headers)}
    text = _text(body, truncated)
    if text is None:
        response["body"] = base64.b64encode(body).decode("ascii")
        response["encoding"] = "base64"
    else:
        response["body"] = text
    response["truncated"] = truncated
    return response


def _text(body: bytes, truncated: bool) -> str | None:
    """`body` as text if it is UTF-8 that jsonb can hold; a body cut off may end inside a
    character, whose bytes are then left out."""
    for dropped in range(4 if truncated else 1):
        try:
            text = body[: len(body) - dropped].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return None if "\x00" in text else text
    return None


def _joined(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Headers as one object: a repeated name's values joined with `, ` (RFC 9110 5.3)."""
    joined: dict[str, str] = {}
    for name, value in headers:
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


def _storable(text: str) -> str:
    return _UNSTORABLE.sub("\ufffd", text)

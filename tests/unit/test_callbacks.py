"""What a callback tells of an answer: secret headers left out, bodies as text or base64, and a
whole message that never exceeds the limit it is given."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import callbacks

FINISHED = callbacks.Finished(
    id="01jz0000000000000000000000",
    cron_id=None,
    endpoint="default",
    state="delivered",
    attempts=1,
    last_status=200,
    last_error=None,
    last_error_kind=None,
)


def answer(body: bytes, *headers: tuple[str, str], more: bool = False) -> callbacks.Answer:
    return callbacks.Answer(200, headers, body, more)


def test_no_answer_is_a_null_response() -> None:
    assert callbacks.response_of(None, FINISHED, 10_000) is None


def test_a_text_answer_is_told_whole_without_its_secret_headers() -> None:
    told = answer(
        b'{"order": 42}',
        ("Content-Type", "application/json"),
        ("Set-Cookie", "session=abc"),
        ("X-Api-Key", "k"),
        ("Authorization", "Bearer t"),
        ("X-Request-Id", "r-1"),
    )
    assert callbacks.response_of(told, FINISHED, 10_000) == {
        "status": 200,
        "headers": {"Content-Type": "application/json", "X-Request-Id": "r-1"},
        "body": '{"order": 42}',
        "truncated": False,
    }


def test_a_body_that_is_not_utf8_or_holds_nul_goes_in_base64() -> None:
    for body in (b"\xff\xfe\x00binary", "caf\u00e9\x00".encode()):
        response = callbacks.response_of(answer(body), FINISHED, 10_000)
        assert response is not None
        assert response["encoding"] == "base64"
        assert base64.b64decode(response["body"]) == body


def test_a_body_cut_inside_a_character_loses_only_that_character() -> None:
    cut = "déjà".encode()[:-1]  # the last character's second byte is missing
    response = callbacks.response_of(answer(cut, more=True), FINISHED, 10_000)
    assert response == {"status": 200, "headers": {}, "body": "déj", "truncated": True}


def test_a_body_too_large_for_the_limit_is_cut_and_says_so() -> None:
    body = b"x" * callbacks.BODY_BYTES
    response = callbacks.response_of(answer(body), FINISHED, 4096)
    assert response is not None and response["truncated"] is True
    assert 0 < len(response["body"]) < 4096
    assert callbacks.message_size(FINISHED, response) <= 4096


def test_headers_go_once_the_body_is_gone_and_still_too_large() -> None:
    many = [(f"X-Header-{n}", "v" * 100) for n in range(40)]
    response = callbacks.response_of(answer(b"body", *many), FINISHED, 2048)
    assert response is not None and response["truncated"] is True
    assert response["body"] == ""
    assert 0 < len(response["headers"]) < 40
    assert callbacks.message_size(FINISHED, response) <= 2048


texts = st.text(st.characters(codec="utf-8"), max_size=300)


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=callbacks.BODY_BYTES),
    more=st.booleans(),
    headers=st.lists(st.tuples(texts, texts), max_size=12),
    error=st.none() | texts,
    limit=st.integers(1024, 40_000),
)
def test_the_whole_message_stays_within_its_limit(
    body: bytes, more: bool, headers: list[tuple[str, str]], error: str | None, limit: int
) -> None:
    finished = callbacks.Finished(
        "01jz0000000000000000000000", "a-cron", "billing", "failed", 8, 500, error, "http_500"
    )
    told = callbacks.Answer(500, tuple(headers), body, more)
    response = callbacks.response_of(told, finished, limit)
    assert response is not None
    smallest = {"status": 500, "headers": {}, "body": "", "truncated": True}
    if callbacks.message_size(finished, smallest) <= limit:
        assert callbacks.message_size(finished, response) <= limit
    if not response["truncated"]:
        assert told_body(response) == body
    else:
        assert body.startswith(told_body(response))


def told_body(response: dict[str, object]) -> bytes:
    if response.get("encoding") == "base64":
        return base64.b64decode(str(response["body"]))
    return str(response["body"]).encode("utf-8")

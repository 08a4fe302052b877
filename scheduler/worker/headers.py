"""Reading an answer's header block, as http.client does but without the email package for the
plain lines nearly every endpoint sends.

http.client hands each answer's header lines to email's feed parser, which cost a tenth of the
dispatcher's CPU in a burst. An answer whose lines are all `name: value` (a token, a colon, a
value without CR or LF) and that claims no multipart or message body gives the same HTTPMessage
when its pairs are stored directly; anything else (folded lines, bare CRs, a name that is not a
token, a multipart type) goes to email's parser as before. tests/worker/test_headers.py holds
the two to the same result over arbitrary header blocks.
"""

from __future__ import annotations

import email.parser
import http.client
import re
from typing import Any, BinaryIO

# http.client's bounds on a header block (its private _MAXLINE and _MAXHEADERS).
MAX_LINE = 65536
MAX_HEADERS = 100
_END = (b"\r\n", b"\n", b"")
_PLAIN_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\r\n]*)\r?\n")
# Types whose (absent) body email's parser would try to read, adding defects urllib3 reports.
_PARSED_BODIES = re.compile(rb"[ \t]*(multipart|message)/", re.IGNORECASE)
# What http.client parsed with before install(), to compare with.
stdlib_parse_headers = http.client.parse_headers


def parse_headers(fp: BinaryIO, _class: type[Any] = http.client.HTTPMessage) -> Any:
    """http.client.parse_headers: the header block from `fp`, within http.client's bounds, as
    an HTTPMessage (or `_class`)."""
    lines = []
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if line in _END:
            break
    pairs = []
    for line in lines[:-1]:
        found = _PLAIN_LINE.fullmatch(line)
        if found is None or (
            found[1].lower() == b"content-type" and _PARSED_BODIES.match(found[2])
        ):
            hstring = b"".join(lines).decode("iso-8859-1")
            return email.parser.Parser(_class=_class).parsestr(hstring)
        pairs.append(found)
    message = _class()
    for found in pairs:
        message.set_raw(found[1].decode("ascii"), found[2].decode("iso-8859-1"))
    # As email's parser leaves a message whose body it read from an empty rest.
    message.set_payload("")
    return message


def install() -> None:
    """Have http.client (every answer this process reads) parse header blocks this way."""
    http.client.parse_headers = parse_headers  # type: ignore[assignment]

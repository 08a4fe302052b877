"""W3C Trace Context: the `traceparent` and `tracestate` a job keeps from the request that
scheduled it, and the headers each of its deliveries carries; pure, no I/O.

Rules (https://www.w3.org/TR/trace-context/):

- `traceparent` version 00 is exactly `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`,
  lower-case hex, neither id all zeros. A higher version (not `ff`) is read by the spec's
  forward-compatibility rule: its first 55 characters in the version-00 layout, followed by the
  end or a `-`; what follows is not read, and only its sampled flag is kept, since a later
  version may give the other bits another meaning. It is stored, and sent, as version 00.
- Anything else is ignored, as if the header were absent: a trace is never a reason to refuse
  a job.
- `tracestate` is kept only with a valid `traceparent`, and only when valid itself: at most 32
  members `key=value` with the spec's key and value characters, no key twice. Empty members are
  dropped, and members beyond MAX_TRACESTATE_LENGTH characters are dropped whole, as the spec
  says to truncate (members over 128 characters first, then from the end).
- Each delivery attempt sends the same trace id and flags under a new parent id: the attempt is
  a span of its own.
"""

from __future__ import annotations

import dataclasses
import re
import secrets

TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"
# What the spec asks every vendor to propagate at least.
MAX_TRACESTATE_LENGTH = 512
MAX_TRACESTATE_MEMBERS = 32
# The spec's truncation order: members longer than this go first.
LONG_MEMBER = 128

_VERSION_00_LENGTH = 55
_LAYOUT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE_ID = "0" * 32
_ZERO_PARENT_ID = "0" * 16
_SAMPLED = 0x01
_KEY = re.compile(r"[a-z0-9][a-z0-9_\-*/@]{0,255}")
# Printable ASCII but `,` and `=`, ending with a character other than a space.
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_OWS = " \t"


@dataclasses.dataclass(frozen=True)
class TraceParent:
    """A valid traceparent, in version 00."""

    trace_id: str
    parent_id: str
    flags: str

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"

    def child(self) -> TraceParent:
        """The same trace and flags under a new, random parent id."""
        return dataclasses.replace(self, parent_id=new_parent_id())


def new_parent_id() -> str:
    """8 random bytes as hex, never all zeros (which the spec forbids)."""
    while True:
        parent_id = secrets.token_hex(8)
        if parent_id != _ZERO_PARENT_ID:
            return parent_id


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The traceparent `value` holds, or None when it is absent or malformed."""
    if value is None:
        return None
    value = value.strip(_OWS)
    match = _LAYOUT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE_ID or parent_id == _ZERO_PARENT_ID:
        return None
    if version == "00":
        if len(value) != _VERSION_00_LENGTH:
            return None
    else:
        if len(value) > _VERSION_00_LENGTH and value[_VERSION_00_LENGTH] != "-":
            return None
        flags = f"{int(flags, 16) & _SAMPLED:02x}"
    return TraceParent(trace_id, parent_id, flags)


def parse_tracestate(value: str | None) -> str | None:
    """`value` as it is kept: valid members joined by `,` and cut to MAX_TRACESTATE_LENGTH, or
    None when it is absent, empty or malformed."""
    if value is None:
        return None
    members: list[str] = []
    keys: set[str] = set()
    for item in value.split(","):
        member = item.strip(_OWS)
        if not member:
            continue
        key, equals, text = member.partition("=")
        if not equals or not _KEY.fullmatch(key) or not _VALUE.fullmatch(text) or key in keys:
            return None
        keys.add(key)
        members.append(member)
    if not members or len(members) > MAX_TRACESTATE_MEMBERS:
        return None
    return ",".join(_truncated(members)) or None


def _truncated(members: list[str]) -> list[str]:
    """Whole members dropped until they fit: the long ones first, then from the end."""
    kept = list(members)
    while kept and len(",".join(kept)) > MAX_TRACESTATE_LENGTH:
        longest = next((m for m in reversed(kept) if len(m) > LONG_MEMBER), None)
        kept.remove(longest if longest is not None else kept[-1])
    return kept


def stored_context(
    traceparent: str | None, tracestate: str | None
) -> tuple[str | None, str | None]:
    """What a job keeps of a request's trace headers: (traceparent, tracestate), each None when
    absent or ignored."""
    parent = parse_traceparent(traceparent)
    if parent is None:
        return None, None
    return parent.header(), parse_tracestate(tracestate)


def delivery_headers(traceparent: str | None, tracestate: str | None) -> dict[str, str]:
    """The trace headers of one delivery attempt of a job that keeps this context; none when it
    keeps no traceparent."""
    parent = parse_traceparent(traceparent)
    if parent is None:
        return {}
    headers = {TRACEPARENT_HEADER: parent.child().header()}
    if tracestate:
        headers[TRACESTATE_HEADER] = tracestate
    return headers

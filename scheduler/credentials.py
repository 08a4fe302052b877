"""The shared secret as a credential: one constant-time check for the API and both metrics ports."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from scheduler import errors

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger(__name__)

SECRET_HEADER = "Scheduler-Secret"
METRICS_REFUSED = (
    f"Metrics need the secret: send Authorization: Bearer <secret> or {SECRET_HEADER} "
    "(or set SCHEDULER_METRICS_PUBLIC=true)."
)


def matches(given: str, secrets: tuple[str, ...]) -> bool:
    """True when `given` is one of `secrets`."""
    # Digests have one length whatever was sent, and every secret is compared without stopping
    # early, so the time taken reveals neither the length nor the closeness of a guess.
    given_digest = _digest(given)
    matched = False
    for secret_digest in _digests(secrets):
        matched |= hmac.compare_digest(given_digest, secret_digest)
    return matched


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


@functools.cache
def _digests(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(_digest(secret) for secret in secrets)


def bearer_token(authorization: str) -> str:
    """The token of an `Authorization: Bearer <token>` header; empty for any other scheme."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class MetricsGuard:
    """Serves a metrics WSGI app to scrapers that send the secret, as a bearer token (what
    Prometheus' `authorization` setting sends) or in Scheduler-Secret; 401 to others."""

    def __init__(self, app: WSGIApplication, secrets: tuple[str, ...], public: bool) -> None:
        self.app = app
        self.secrets = secrets
        self.public = public

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.public or self._authorized(environ):
            return self.app(environ, start_response)
        logger.warning(
            "refused a metrics scrape without the secret from %s",
            environ.get("REMOTE_ADDR"),
            extra={"action": "auth_failed"},
        )
        body = errors.http_body("unauthorized", METRICS_REFUSED).encode("utf-8")
        start_response(
            "401 Unauthorized",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("WWW-Authenticate", 'Bearer realm="metrics"'),
            ],
        )
        return [body]

    def _authorized(self, environ: WSGIEnvironment) -> bool:
        bearer = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
        header = environ.get("HTTP_SCHEDULER_SECRET", "")
        # Both are checked (an absent one is empty, never a secret), so the time taken does not
        # tell which one was tried.
        return matches(bearer, self.secrets) | matches(header, self.secrets)

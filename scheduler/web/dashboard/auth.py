"""Who may use the dashboard: login with the secret, sessions kept in the database, CSRF tokens,
the limit on failed logins, the security headers of every page, and the audit log of actions."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
from typing import Any
from urllib.parse import unquote, urlsplit

import itsdangerous
from flask import abort, g, make_response, redirect, render_template, request, url_for
from werkzeug import Response
from werkzeug.exceptions import TooManyRequests

from scheduler import credentials
from scheduler.storage import dashboard as logins
from scheduler.web import http
from scheduler.web.dashboard.blueprint import PREFIX, bp

logger = logging.getLogger(__name__)
# Actions taken in the dashboard, on the package's logger so operators can route them as one.
audit_logger = logging.getLogger("scheduler.web.dashboard")

SESSION_COOKIE = "scheduler_session"
LOGIN_COOKIE = "scheduler_login"
LOGIN_PATH = PREFIX + "/login"
CSRF_FIELD = "csrf_token"
SECRET_FIELD = "secret"
NEXT_FIELD = "next"
DEFAULT_TARGET = PREFIX + "/"
# At most this many failed logins per client address per window, across every web worker.
LOGIN_FAILURE_LIMIT = 10
LOGIN_FAILURE_WINDOW = 15 * 60.0
# One host commonly holds a whole IPv6 /64, so failures are counted per /64.
IPV6_CLIENT_PREFIX = 64
# How long a login form stays valid: its CSRF token's lifetime.
LOGIN_FORM_SECONDS = 24 * 3600
TOKEN_BYTES = 32
SESSION_REFERENCE_LENGTH = 12
MAX_TARGET_LENGTH = 2048
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
CSRF_REFUSED = (
    "This form's security token is missing or out of date, so nothing was changed. "
    "Reload the page and try again."
)
READONLY_REFUSED = "The dashboard is read-only (SCHEDULER_DASHBOARD_READONLY): nothing was changed."
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")


@dataclasses.dataclass(frozen=True)
class Session:
    """A logged-in browser, known by the SHA-256 of its session id."""

    id_sha256: str
    csrf_token: str

    @property
    def reference(self) -> str:
        """What logs name the session by: never the id itself, which is a bearer credential."""
        return self.id_sha256[:SESSION_REFERENCE_LENGTH]


def is_dashboard_request() -> bool:
    """True when the request's path is under the dashboard's prefix, routed or not."""
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


def current_session() -> Session | None:
    """The session of this request, once the guard has looked it up."""
    session: Session | None = g.get("dashboard_session")
    return session


def csrf_token() -> str:
    """The token this page's forms carry in their `csrf_token` field."""
    login_token: str | None = g.get("login_csrf_token")
    if login_token is not None:
        return login_token
    session = current_session()
    return session.csrf_token if session is not None else ""


def audit(action: str, count: int, **fields: Any) -> None:
    """Log an action taken in the dashboard: what, by which session, on how many jobs or crons.

    `fields` are added to the line as they are; they must not be named like a LogRecord
    attribute (`message`, `name`, `args`...).
    """
    session = current_session()
    reference = session.reference if session is not None else None
    audit_logger.info(
        "dashboard %s, %d affected, by session %s",
        action,
        count,
        reference,
        extra={"action": "dashboard_" + action, "session": reference, "count": count, **fields},
    )


def local_target(value: str | None) -> str:
    """`value` if it is a dashboard path of this site (with its query), else the overview: what
    `next` may redirect to after login, so that it never leads off the dashboard."""
    if not value or len(value) > MAX_TARGET_LENGTH or not _PRINTABLE_ASCII.fullmatch(value):
        return DEFAULT_TARGET
    parts = urlsplit(value)
    # A backslash reads as a slash to browsers; `//host` is another site.
    if parts.scheme or parts.netloc or "\\" in value or value.startswith("//"):
        return DEFAULT_TARGET
    if not (parts.path == PREFIX or parts.path.startswith(PREFIX + "/")):
        return DEFAULT_TARGET
    # Browsers resolve dot segments, percent-encoded too: /ui/%2e%2e/x is /x.
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        return DEFAULT_TARGET
    return value


def rate_limit_key(address: str) -> str:
    """The client address failed logins are counted against: an IPv6 address by its /64."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(parsed)


@functools.cache
def _serializer(all_secrets: tuple[str, ...], salt: str) -> itsdangerous.URLSafeTimedSerializer:
    # Every accepted secret goes into the key, so any change of SECRET (adding the new value to
    # rotate, dropping the old one) ends every session and every login form.
    key = hmac.new(
        ",".join(all_secrets).encode("utf-8"), b"scheduler dashboard cookies", hashlib.sha256
    ).digest()
    return itsdangerous.URLSafeTimedSerializer(key, salt=salt)


def _signed(salt: str) -> itsdangerous.URLSafeTimedSerializer:
    return _serializer(http.settings().secrets, salt)


def _read_signed(salt: str, cookie: str | None, max_age: float) -> str | None:
    if not cookie:
        return None
    try:
        value = _signed(salt).loads(cookie, max_age=math.ceil(max_age))
    except itsdangerous.BadData:
        return None
    return value if isinstance(value, str) else None


def _sha256(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def _tokens_match(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def _set_cookie(response: Response, name: str, value: str, max_age: float, path: str) -> None:
    response.set_cookie(
        name,
        value,
        max_age=math.ceil(max_age),
        path=path,
        # Decided by the proxies middleware: the scheme the client used, behind a router too.
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )


def _look_up_session() -> Session | None:
    settings = http.settings()
    session_id = _read_signed(
        "session", request.cookies.get(SESSION_COOKIE), settings.dashboard_session_seconds
    )
    if session_id is None:
        return None
    digest = _sha256(session_id)
    token = logins.dashboard_session_csrf_token(http.database(), digest)
    return Session(digest, token) if token is not None else None


def _to_login() -> Response:
    target = None
    if request.method in SAFE_METHODS:
        query = request.query_string.decode("latin-1")
        target = local_target(request.path + ("?" + query if query else ""))
    return redirect(url_for("dashboard.login", next=target), 303)


@bp.before_app_request
def guard() -> Response | None:
    """Before login every dashboard URL (unknown ones too) leads to the login page; every POST
    needs its form's CSRF token; read-only mode refuses every action."""
    if not is_dashboard_request() or request.endpoint == "dashboard.static":
        return None
    settings = http.settings()
    if request.method not in SAFE_METHODS:
        request.max_content_length = settings.max_body_bytes
    g.dashboard_session = _look_up_session()
    if request.endpoint == "dashboard.login":
        if request.method not in SAFE_METHODS:
            expected = _read_signed("login", request.cookies.get(LOGIN_COOKIE), LOGIN_FORM_SECONDS)
            if not _tokens_match(request.form.get(CSRF_FIELD), expected):
                abort(403, CSRF_REFUSED)
        return None
    session = current_session()
    if session is None:
        return _to_login()
    if request.method in SAFE_METHODS:
        return None
    if not _tokens_match(request.form.get(CSRF_FIELD), session.csrf_token):
        logger.warning(
            "refused a dashboard %s of %s without a valid CSRF token",
            request.method,
            request.path,
            extra={"action": "dashboard_csrf_refused", "session": session.reference},
        )
        abort(403, CSRF_REFUSED)
    if settings.dashboard_readonly and request.endpoint != "dashboard.logout":
        abort(403, READONLY_REFUSED)
    return None


@bp.after_app_request
def add_security_headers(response: Response) -> Response:
    if is_dashboard_request():
        response.headers.update(SECURITY_HEADERS)
    return response


@bp.app_context_processor
def template_values() -> dict[str, Any]:
    return {
        "csrf_token": csrf_token,
        "readonly": http.settings().dashboard_readonly,
        "logged_in": current_session() is not None,
    }


def _login_form(target: str, status: int = 200, problem: str | None = None) -> Response:
    token = _read_signed("login", request.cookies.get(LOGIN_COOKIE), LOGIN_FORM_SECONDS)
    g.login_csrf_token = token or secrets.token_urlsafe(TOKEN_BYTES)
    page = render_template("dashboard/login.html", next=target, problem=problem)
    response = make_response(page, status)
    _set_cookie(
        response,
        LOGIN_COOKIE,
        _signed("login").dumps(g.login_csrf_token),
        LOGIN_FORM_SECONDS,
        LOGIN_PATH,
    )
    return response


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    """The login form; POSTed with one of the secrets, a new session and on to `next`."""
    target = local_target(request.values.get(NEXT_FIELD))
    if request.method == "GET":
        if current_session() is not None:
            return redirect(target, 303)
        return _login_form(target)
    settings = http.settings()
    database = http.database()
    logins.prune_dashboard_logins(database, LOGIN_FAILURE_WINDOW)
    address = request.remote_addr or ""
    counted_as = rate_limit_key(address)
    retry_after = logins.reserve_login_attempt(
        database, counted_as, LOGIN_FAILURE_LIMIT, LOGIN_FAILURE_WINDOW
    )
    if retry_after is not None:
        logger.warning(
            "refused a dashboard login from %s: %d failed logins within %d minutes",
            address,
            LOGIN_FAILURE_LIMIT,
            LOGIN_FAILURE_WINDOW // 60,
            extra={"action": "dashboard_login_limited", "client_address": address},
        )
        wait = max(1, math.ceil(retry_after))
        raise TooManyRequests(
            f"Too many failed logins from your address: try again in {_duration(wait)}.",
            retry_after=wait,
        )
    if not credentials.matches(request.form.get(SECRET_FIELD, ""), settings.secrets):
        # Never the value tried: it may be a secret of another system, or a near miss.
        logger.warning(
            "failed dashboard login from %s",
            address,
            extra={"action": "dashboard_login_failed", "client_address": address},
        )
        return _login_form(target, 403, "That is not the secret.")
    logins.forgive_login_attempt(database, counted_as)
    return _start_session(target, address)


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _start_session(target: str, address: str) -> Response:
    settings = http.settings()
    database = http.database()
    previous = current_session()
    if previous is not None:
        logins.delete_dashboard_session(database, previous.id_sha256)
    session_id = secrets.token_urlsafe(TOKEN_BYTES)
    session = Session(_sha256(session_id), secrets.token_urlsafe(TOKEN_BYTES))
    logins.insert_dashboard_session(
        database, session.id_sha256, session.csrf_token, address, settings.dashboard_session_seconds
    )
    logger.info(
        "dashboard login from %s",
        address,
        extra={
            "action": "dashboard_login",
            "session": session.reference,
            "client_address": address,
        },
    )
    response = redirect(target, 303)
    _set_cookie(
        response,
        SESSION_COOKIE,
        _signed("session").dumps(session_id),
        settings.dashboard_session_seconds,
        PREFIX,
    )
    response.delete_cookie(
        LOGIN_COOKIE, path=LOGIN_PATH, secure=request.is_secure, httponly=True, samesite="Strict"
    )
    return response


@bp.post("/logout")
def logout() -> Response:
    """End the session, in the database too, so its cookie opens nothing any more."""
    session = current_session()
    if session is not None:
        logins.delete_dashboard_session(http.database(), session.id_sha256)
        logger.info(
            "dashboard logout",
            extra={"action": "dashboard_logout", "session": session.reference},
        )
    response = redirect(url_for("dashboard.login"), 303)
    response.delete_cookie(
        SESSION_COOKIE, path=PREFIX, secure=request.is_secure, httponly=True, samesite="Strict"
    )
    return response

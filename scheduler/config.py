"""Settings read once from the environment; the only reader of os.environ."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
import types
from collections.abc import Mapping
from urllib.parse import urlsplit

from scheduler import errors, jobs, logs

DEFAULT_PORT = 8080
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_DELIVERY_THREADS = 16
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_RETRY_BASE = 1.0
DEFAULT_RETRY_CAP = 3600.0
DEFAULT_RECONCILE_INTERVAL = 30.0
DEFAULT_POLL_INTERVAL = 2.0
# Covers a slow look for due jobs and clock drift between the web and dispatcher hosts.
ANNOUNCE_MARGIN = 5.0
DEFAULT_SHUTDOWN_GRACE = 30.0
DEFAULT_DB_POOL_SIZE = 8
DEFAULT_WEB_WORKERS = 2
DEFAULT_LEADER_TIMEOUT = 10.0
DEFAULT_RETENTION = 7 * 24 * 3600.0
DEFAULT_FAILED_RETENTION = 30 * 24 * 3600.0
CRON_CATCHUP_POLICIES = ("latest", "skip")
DEFAULT_IDEMPOTENCY_TTL = 24 * 3600.0
DEFAULT_BATCH_LIMIT = 1000
DEFAULT_HEARTBEAT_MAX_AGE = 30.0
DEFAULT_METRICS_PORT = 9100
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
LOG_FORMATS = logs.FORMATS
DEFAULT_LOG_LEVEL = "INFO"
MAX_ATTEMPTS_LIMIT = 100
MAX_SECONDS = 10.0**9
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


DEFAULT_ENDPOINT = jobs.DEFAULT_ENDPOINT
MAX_RATE_LIMIT = 1_000_000.0
MAX_IN_FLIGHT_LIMIT = 1_000_000
ENDPOINT_SECRET_PREFIX = "SCHEDULER_ENDPOINT_SECRET_"
DEFAULT_DASHBOARD_SESSION_HOURS = 12.0
MIN_DASHBOARD_SESSION_HOURS = 0.1
MAX_DASHBOARD_SESSION_HOURS = 30 * 24.0
# SCHEDULER_TRUSTED_PROXIES' value for "the direct peer is always a router" (Heroku's dynos).
ANY_PROXY = "*"


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where deliveries of a job or cron go: a name the API uses, a URL only the operator sets,
    and the secrets its deliveries are signed with (the first also sent raw, where allowed)."""

    name: str
    url: str
    secrets: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str
    secrets: tuple[str, ...]
    endpoint: str
    port: int = DEFAULT_PORT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    delivery_threads: int = DEFAULT_DELIVERY_THREADS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_base: float = DEFAULT_RETRY_BASE
    retry_cap: float = DEFAULT_RETRY_CAP
    reconcile_interval: float = DEFAULT_RECONCILE_INTERVAL
    poll_interval: float = DEFAULT_POLL_INTERVAL
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    db_pool_size: int = DEFAULT_DB_POOL_SIZE
    web_workers: int = DEFAULT_WEB_WORKERS
    leader_timeout: float = DEFAULT_LEADER_TIMEOUT
    retention: float = DEFAULT_RETENTION
    failed_retention: float = DEFAULT_FAILED_RETENTION
    cron_catchup: str = CRON_CATCHUP_POLICIES[0]
    idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL
    batch_limit: int = DEFAULT_BATCH_LIMIT
    heartbeat_max_age: float = DEFAULT_HEARTBEAT_MAX_AGE
    metrics_port: int = DEFAULT_METRICS_PORT
    metrics_public: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    send_raw_secret: bool = True
    log_format: str = LOG_FORMATS[0]
    log_level: str = DEFAULT_LOG_LEVEL
    named_endpoints: tuple[Endpoint, ...] = ()
    rate_limit: float | None = None
    max_in_flight: int | None = None
    failure_endpoint: str | None = None
    dashboard: bool = True
    dashboard_readonly: bool = False
    dashboard_session_hours: float = DEFAULT_DASHBOARD_SESSION_HOURS
    # ANY_PROXY alone, or IP networks as ipaddress writes them (an address as a /32 or /128).
    trusted_proxies: tuple[str, ...] = ()

    @functools.cached_property
    def endpoints(self) -> Mapping[str, Endpoint]:
        """Every endpoint by name: ENDPOINT as `default`, then SCHEDULER_ENDPOINTS'."""
        # Built once: every insert and every delivery looks its endpoint up here.
        default = Endpoint(DEFAULT_ENDPOINT, self.endpoint, self.secrets)
        named = {e.name: e for e in self.named_endpoints}
        return types.MappingProxyType({DEFAULT_ENDPOINT: default, **named})

    @property
    def announce_within(self) -> float:
        """Seconds ahead within which a new job is announced to the dispatcher with NOTIFY.

        The dispatcher looks for due jobs at least every poll_interval, so a job due later than
        this is found in time without a notification, and neither PostgreSQL nor the dispatcher
        does work for it at insert time.
        """
        return self.poll_interval + ANNOUNCE_MARGIN

    @property
    def attempt_deadline(self) -> float:
        """Seconds one delivery attempt may take in all: connect, send, headers and body."""
        return self.connect_timeout + self.read_timeout

    @property
    def dashboard_session_seconds(self) -> float:
        return self.dashboard_session_hours * 3600.0

    @property
    def secret(self) -> str:
        """The secret sent on deliveries; the first of SECRET's comma-separated values."""
        return self.secrets[0]

    @property
    def sqlalchemy_url(self) -> str:
        """DATABASE_URL in the form SQLAlchemy's psycopg 3 dialect expects."""
        return to_sqlalchemy_url(self.database_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every variable; raise ConfigError naming the first one that is missing or bad."""
        env = os.environ if environ is None else environ
        return cls(
            database_url=read_database_url(env),
            secrets=_secrets(env, "SECRET"),
            endpoint=_endpoint(env),
            port=_int(env, "PORT", DEFAULT_PORT, 1, 65535),
            connect_timeout=_float(env, "SCHEDULER_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT),
            read_timeout=_float(env, "SCHEDULER_READ_TIMEOUT", DEFAULT_READ_TIMEOUT),
            delivery_threads=_int(
                env, "SCHEDULER_DELIVERY_THREADS", DEFAULT_DELIVERY_THREADS, 1, 1024
            ),
            max_attempts=_int(
                env, "SCHEDULER_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, 1, MAX_ATTEMPTS_LIMIT
            ),
            retry_base=_float(env, "SCHEDULER_RETRY_BASE", DEFAULT_RETRY_BASE),
            retry_cap=_float(env, "SCHEDULER_RETRY_CAP", DEFAULT_RETRY_CAP),
            reconcile_interval=_float(
                env, "SCHEDULER_RECONCILE_INTERVAL", DEFAULT_RECONCILE_INTERVAL, minimum=1.0
            ),
            poll_interval=_float(env, "SCHEDULER_POLL_INTERVAL", DEFAULT_POLL_INTERVAL),
            shutdown_grace=_float(env, "SCHEDULER_SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE, 0.0),
            db_pool_size=_int(env, "SCHEDULER_DB_POOL_SIZE", DEFAULT_DB_POOL_SIZE, 1, 256),
            web_workers=_int(env, "WEB_CONCURRENCY", DEFAULT_WEB_WORKERS, 1, 64),
            leader_timeout=_float(
                env, "SCHEDULER_LEADER_TIMEOUT", DEFAULT_LEADER_TIMEOUT, minimum=3.0
            ),
            retention=_float(env, "SCHEDULER_RETENTION", DEFAULT_RETENTION, minimum=60.0),
            failed_retention=_float(
                env, "SCHEDULER_FAILED_RETENTION", DEFAULT_FAILED_RETENTION, minimum=60.0
            ),
            cron_catchup=_choice(
                env, "SCHEDULER_CRON_CATCHUP", CRON_CATCHUP_POLICIES[0], CRON_CATCHUP_POLICIES
            ),
            idempotency_ttl=_float(
                env, "SCHEDULER_IDEMPOTENCY_TTL", DEFAULT_IDEMPOTENCY_TTL, minimum=86400.0
            ),
            batch_limit=_int(env, "SCHEDULER_BATCH_LIMIT", DEFAULT_BATCH_LIMIT, 1, 100_000),
            heartbeat_max_age=_float(
                env, "SCHEDULER_HEARTBEAT_MAX_AGE", DEFAULT_HEARTBEAT_MAX_AGE, minimum=1.0
            ),
            log_level=_choice(env, "SCHEDULER_LOG_LEVEL", DEFAULT_LOG_LEVEL, LOG_LEVELS),
            log_format=_choice(env, "SCHEDULER_LOG_FORMAT", LOG_FORMATS[0], LOG_FORMATS),
            metrics_port=_int(env, "SCHEDULER_METRICS_PORT", DEFAULT_METRICS_PORT, 0, 65535),
            metrics_public=_bool(env, "SCHEDULER_METRICS_PUBLIC", False),
            send_raw_secret=_bool(env, "SCHEDULER_SEND_RAW_SECRET", True),
            max_body_bytes=_int(
                env, "SCHEDULER_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1024, 64 * 1024 * 1024
            ),
            named_endpoints=_named_endpoints(env, "SCHEDULER_ENDPOINTS"),
            rate_limit=_optional_rate(env, "SCHEDULER_RATE_LIMIT"),
            max_in_flight=_optional_int(env, "SCHEDULER_MAX_IN_FLIGHT", 1, MAX_IN_FLIGHT_LIMIT),
            failure_endpoint=_optional_text(env, "SCHEDULER_FAILURE_ENDPOINT"),
            dashboard=_bool(env, "SCHEDULER_DASHBOARD", True),
            dashboard_readonly=_bool(env, "SCHEDULER_DASHBOARD_READONLY", False),
            dashboard_session_hours=_hours(
                env,
                "SCHEDULER_DASHBOARD_SESSION_HOURS",
                DEFAULT_DASHBOARD_SESSION_HOURS,
                MIN_DASHBOARD_SESSION_HOURS,
                MAX_DASHBOARD_SESSION_HOURS,
            ),
            trusted_proxies=_trusted_proxies(env, "SCHEDULER_TRUSTED_PROXIES"),
        ).checked()

    def checked(self) -> Settings:
        """Cross-field checks that no single variable can express."""
        if self.retry_cap < self.retry_base:
            raise errors.ConfigError("SCHEDULER_RETRY_CAP", "must be at least SCHEDULER_RETRY_BASE")
        if self.failure_endpoint is not None and self.failure_endpoint not in self.endpoints:
            raise errors.ConfigError(
                "SCHEDULER_FAILURE_ENDPOINT",
                f"names no endpoint; configured: {', '.join(self.endpoints)}",
            )
        return self


def read_database_url(env: Mapping[str, str]) -> str:
    """DATABASE_URL, checked to be a PostgreSQL URL."""
    url = _required(env, "DATABASE_URL")
    scheme = urlsplit(url).scheme
    if scheme not in ("postgres", "postgresql"):
        raise errors.ConfigError("DATABASE_URL", "must be a postgresql:// URL")
    return url


def to_sqlalchemy_url(database_url: str) -> str:
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", database_url, flags=re.IGNORECASE)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise errors.ConfigError(name, "is not set")
    return value


def _secrets(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in _required(env, name).split(","))
    if any(not value for value in values):
        raise errors.ConfigError(name, "has an empty value in its comma-separated list")
    if any(len(value) < 8 for value in values):
        raise errors.ConfigError(name, "must be at least 8 characters long")
    if any(not value.isprintable() or " " in value for value in values):
        raise errors.ConfigError(name, "must be printable characters without spaces")
    return values


def endpoint_secret_variable(name: str) -> str:
    """The variable holding an endpoint's own secrets: SCHEDULER_ENDPOINT_SECRET_<NAME>, the
    name upper-cased with every character other than a letter or digit as `_`."""
    return ENDPOINT_SECRET_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


def _named_endpoints(env: Mapping[str, str], variable: str) -> tuple[Endpoint, ...]:
    """`name=url` pairs separated by whitespace (a URL may hold commas)."""
    found: dict[str, Endpoint] = {}
    owners: dict[str, str] = {}
    for pair in env.get(variable, "").split():
        name, equals, url = pair.partition("=")
        if not equals or not jobs.NAME_PATTERN.match(name):
            raise errors.ConfigError(
                variable, f"{pair!r} is not name=url with a name of letters, digits and _.:-"
            )
        if name == DEFAULT_ENDPOINT or name in found:
            reason = "is reserved for ENDPOINT" if name == DEFAULT_ENDPOINT else "appears twice"
            raise errors.ConfigError(variable, f"the name {name!r} {reason}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.ConfigError(variable, f"{name}: must be an http:// or https:// URL")
        secret_variable = endpoint_secret_variable(name)
        if secret_variable in owners:
            raise errors.ConfigError(
                variable, f"{owners[secret_variable]} and {name} share {secret_variable}"
            )
        owners[secret_variable] = name
        own = env.get(secret_variable, "").strip()
        secrets = _secrets(env, secret_variable) if own else _secrets(env, "SECRET")
        found[name] = Endpoint(name, url, secrets)
    return tuple(found.values())


def _optional_rate(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise errors.ConfigError(name, f"must be a number per second, got {raw!r}") from None
    if not 0 < value <= MAX_RATE_LIMIT:
        raise errors.ConfigError(name, f"must be above 0 and at most {MAX_RATE_LIMIT:g}, got {raw}")
    return value


def _optional_text(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def _optional_int(env: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    return _int(env, name, 0, low, high) if env.get(name, "").strip() else None


def _endpoint(env: Mapping[str, str]) -> str:
    url = _required(env, "ENDPOINT")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.ConfigError("ENDPOINT", "must be an http:// or https:// URL with a host")
    return url


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.ConfigError(name, f"must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise errors.ConfigError(name, f"must be between {low} and {high}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.001) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise errors.ConfigError(name, f"must be a number of seconds, got {raw!r}") from None
    if not minimum <= value < MAX_SECONDS:
        raise errors.ConfigError(
            name, f"must be between {minimum:g} and {MAX_SECONDS:g} seconds, got {raw}"
        )
    return value


def _hours(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise errors.ConfigError(name, f"must be a number of hours, got {raw!r}") from None
    if not low <= value <= high:
        raise errors.ConfigError(name, f"must be between {low:g} and {high:g} hours, got {raw}")
    return value


def _trusted_proxies(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated IP addresses and CIDR networks, or `*` alone; none when unset."""
    entries = [entry.strip() for entry in env.get(name, "").split(",")]
    if entries == [""]:
        return ()
    if ANY_PROXY in entries:
        if len(entries) > 1:
            raise errors.ConfigError(name, f"{ANY_PROXY} trusts every peer and stands alone")
        return (ANY_PROXY,)
    networks = []
    for entry in entries:
        try:
            # strict: 10.0.0.1/8 is a mistake for 10.0.0.0/8 or 10.0.0.1, not a guess to make.
            networks.append(str(ipaddress.ip_network(entry, strict=True)))
        except ValueError:
            raise errors.ConfigError(
                name, f"{entry!r} is not an IP address or a CIDR network such as 10.0.0.0/8"
            ) from None
    return tuple(networks)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise errors.ConfigError(name, f"must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    value = value.upper() if default.isupper() else value.lower()
    if value not in choices:
        raise errors.ConfigError(name, f"must be one of {', '.join(choices)}")
    return value

"""Settings read once from the environment; the only reader of os.environ."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
import types
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import environs

from scheduler import errors, jobs, logs, tuning

DEFAULT_PORT = 8080
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
# The longest `timeout` a job may set for its attempts (its claim's lease follows it), and the
# most SCHEDULER_MAX_TIMEOUT may allow: a sending thread is held that long.
DEFAULT_MAX_TIMEOUT = 300.0
MAX_TIMEOUT_LIMIT = 24 * 3600.0
DEFAULT_DELIVERY_THREADS = 16
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_RETRY_BASE = 1.0
DEFAULT_RETRY_CAP = 3600.0
DEFAULT_RECONCILE_INTERVAL = 30.0
DEFAULT_POLL_INTERVAL = 2.0
# What stands between the processes and PostgreSQL at DATABASE_URL: nothing (or a session-mode
# pooler), or a transaction-mode pooler such as PgBouncer's `pool_mode = transaction`.
DB_POOLERS = ("none", "transaction")
DEFAULT_SHUTDOWN_GRACE = 30.0
DEFAULT_WEB_WORKERS = 2
# Connections each process may open: the web process's gunicorn workers share them, and a
# dispatcher's fixed split needs all of them (docs/operations.md, "Connections"). One web process
# and one dispatcher then stay within 20, a small managed plan's limit.
DEFAULT_DB_CONNECTIONS = 10
# A dispatcher's connections other than its own pool, and the least that pool works with: its
# heartbeat must not wait behind the leader's maintenance.
DISPATCHER_FIXED_CONNECTIONS = (
    tuning.LISTEN_CONNECTIONS + tuning.DELIVERY_POOL_SIZE + tuning.TIMER_ENGINE_CONNECTIONS
)
MIN_DB_CONNECTIONS = DISPATCHER_FIXED_CONNECTIONS + tuning.DISPATCHER_POOL_MIN
MAX_DB_CONNECTIONS = 10_000
# Request threads per gunicorn worker, apart from the connections: slow clients take none (the
# worker reads each request whole first), and requests beyond the pool wait for a connection.
DEFAULT_WEB_THREADS = 8
# Variables read by earlier releases, and what replaced them: set, they stop the process rather
# than be ignored and change its capacity silently.
RETIRED_VARIABLES = {
    "SCHEDULER_DB_POOL_SIZE": "is no longer read: set SCHEDULER_DB_CONNECTIONS (connections per "
    "process) and SCHEDULER_WEB_THREADS (threads per gunicorn worker) instead",
}
DEFAULT_LEADER_TIMEOUT = 10.0
DEFAULT_RETENTION = 7 * 24 * 3600.0
DEFAULT_FAILED_RETENTION = 30 * 24 * 3600.0
# A cron's ticks missed while no leader ran, or while it was behind, are delivered late for this
# long (Temporal's schedules call it the catch-up window); older ones are recorded `missed`.
DEFAULT_CATCHUP_WINDOW = 3600.0
# SCHEDULER_CRON_CATCHUP's words from before the window: `skip` is a window of 0, and `latest`
# (deliver the latest missed tick) gave way to the default window.
CRON_CATCHUP_WORDS = {"skip": 0.0, "latest": DEFAULT_CATCHUP_WINDOW}
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
# An endpoint's weight: its share of the threads against the other endpoints' with work.
DEFAULT_WEIGHT = 1.0
MAX_WEIGHT = 1000.0
ENDPOINT_SECRET_PREFIX = "SCHEDULER_ENDPOINT_SECRET_"
DEFAULT_DASHBOARD_SESSION_HOURS = 12.0
MIN_DASHBOARD_SESSION_HOURS = 0.1
MAX_DASHBOARD_SESSION_HOURS = 30 * 24.0
# SCHEDULER_TRUSTED_PROXIES' value for "the direct peer is always a router" (Heroku's dynos).
ANY_PROXY = "*"
# The default of a variable that must be set (DATABASE_URL, SECRET, ENDPOINT): its field has none.
REQUIRED: Any = dataclasses.MISSING
FLAG_WORDS = dict.fromkeys(("1", "true", "yes", "on"), True)
FLAG_WORDS |= dict.fromkeys(("0", "false", "no", "off"), False)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where deliveries of a job or cron go: a name the API uses, a URL only the operator sets,
    and the secrets its deliveries are signed with (the first also sent raw, where allowed)."""

    name: str
    url: str
    secrets: tuple[str, ...]


class Environment(environs.Env):
    """An environs.Env over one mapping, where a blank variable is unset, with our parsers."""

    def __init__(self, source: Mapping[str, str]) -> None:
        super().__init__(eager=True)
        self.source = source

    # The hook environs exposes for where values come from (sloria/environs#51): its own reads
    # os.environ, and from_env reads whatever mapping it is given.
    def _get_from_environ(
        self, key: str, default: Any, *, proxied: bool = False
    ) -> tuple[str, Any, str | None]:
        return key, self.source.get(key, "").strip() or default, None

    def read(self, name: str, reader: Reader, default: Any) -> Any:
        """The value of `name` as `reader` makes it; ConfigError naming `name` if unusable."""
        try:
            return reader(self, name, ... if default is REQUIRED else default)
        except environs.EnvValidationError as error:
            raise errors.ConfigError(name, "; ".join(error.error_messages)) from None
        except environs.EnvError:  # unset, with no default
            raise errors.ConfigError(name, "is not set") from None
        except environs.ValidationError as error:
            raise errors.ConfigError(name, "; ".join(error.messages)) from None

    def parse(self, method: Callable[..., Any], name: str, default: Any, **options: Any) -> Any:
        # environs hands options other than `validate` to the marshmallow field (its README's
        # env.url(..., schemes=...)), though its type hints declare only `validate`.
        return method(name, default, **options)

    def flag(self, name: str, default: bool) -> bool:
        # Not env.bool: marshmallow's Boolean is case-sensitive and also takes t, y, f and n.
        word = self.str(name, "").lower()
        if word and word not in FLAG_WORDS:
            raise environs.ValidationError(f"must be true or false, got {word!r}")
        return FLAG_WORDS[word] if word else default

    def text(self, name: str, default: str | None) -> str | None:
        return self.str(name, default)

    def postgresql_url(self, name: str, default: str | None) -> str | None:
        url = self.str(name, default)
        if url is not None and urlsplit(url).scheme not in ("postgres", "postgresql"):
            raise environs.ValidationError("must be a postgresql:// URL")
        return url

    def http_url(self, name: str, default: str) -> str:
        url = self.str(name, default)
        if not _is_http_url(url):
            raise environs.ValidationError("must be an http:// or https:// URL with a host")
        return url

    def secrets(self, name: str, default: Any) -> Any:
        """Comma-separated secrets of at least 8 printable characters without spaces."""
        values = self.list(name, default, subcast=str.strip, validate=_check_secrets)
        return values if values is default else tuple(values)

    def named_endpoints(self, variable: str, default: Any) -> Any:
        """`name=url` pairs separated by whitespace (a URL may hold commas), each signed with its
        SCHEDULER_ENDPOINT_SECRET_<NAME> when set, else with SECRET."""
        found: dict[str, Endpoint] = {}
        owners: dict[str, str] = {}
        for pair in self.str(variable, "").split():
            name, equals, url = pair.partition("=")
            if not equals or not jobs.NAME_PATTERN.match(name):
                raise environs.ValidationError(
                    f"{pair!r} is not name=url with a name of letters, digits and _.:-"
                )
            if name == DEFAULT_ENDPOINT or name in found:
                reason = "is reserved for ENDPOINT" if name == DEFAULT_ENDPOINT else "appears twice"
                raise environs.ValidationError(f"the name {name!r} {reason}")
            if not _is_http_url(url):
                raise environs.ValidationError(f"{name}: must be an http:// or https:// URL")
            secret_variable = endpoint_secret_variable(name)
            if secret_variable in owners:
                raise environs.ValidationError(
                    f"{owners[secret_variable]} and {name} share {secret_variable}"
                )
            owners[secret_variable] = name
            # Read through read(), so that a bad secret is blamed on its own variable.
            own = self.read(secret_variable, Environment.secrets, None)
            secrets = own or self.read("SECRET", Environment.secrets, REQUIRED)
            found[name] = Endpoint(name, url, secrets)
        return tuple(found.values()) or default

    def proxies(self, name: str, default: Any) -> Any:
        """Comma-separated IP addresses and CIDR networks, or ANY_PROXY alone."""
        entries = self.list(name, [], subcast=str.strip)
        if ANY_PROXY in entries:
            if len(entries) > 1:
                raise environs.ValidationError(f"{ANY_PROXY} trusts every peer and stands alone")
            return (ANY_PROXY,)
        networks = []
        for entry in entries:
            try:
                # strict: 10.0.0.1/8 is a mistake for 10.0.0.0/8 or 10.0.0.1, not a guess to make.
                networks.append(str(ipaddress.ip_network(entry, strict=True)))
            except ValueError:
                raise environs.ValidationError(
                    f"{entry!r} is not an IP address or a CIDR network such as 10.0.0.0/8"
                ) from None
        return tuple(networks) or default


# Reads one variable, given its name and default: an Environment method, or made by one below.
Reader = Callable[[Environment, str, Any], Any]


def integer(low: int, high: int) -> Reader:
    """An integer from low to high."""
    error = "must be between {min} and {max}, got {input}"
    within = environs.validate.Range(low, high, error=error)
    messages = {"invalid": "must be an integer, got {input!r}"}
    return lambda env, name, default: env.parse(
        env.int, name, default, validate=within, error_messages=messages
    )


def number(
    low: float, high: float, unit: str, *, above: bool = False, below: bool = False
) -> Reader:
    """A finite number of `unit` from low (or above it) to high (or below it)."""
    lowest = f"above {low:g} and at most" if above else f"between {low:g} and"
    bounds = f"{lowest} {high:g} {unit}"
    error = f"must be {bounds}, got {{input:g}}"
    within = environs.validate.Range(
        low, high, min_inclusive=not above, max_inclusive=not below, error=error
    )
    messages = {
        "invalid": f"must be a number of {unit}, got {{input!r}}",
        "special": f"must be {bounds}, not NaN or infinity",
    }
    return lambda env, name, default: env.parse(
        env.float, name, default, validate=within, error_messages=messages
    )


def seconds(minimum: float = 0.001) -> Reader:
    return number(minimum, MAX_SECONDS, "seconds", below=True)


def catchup_window() -> Reader:
    """Seconds, or a word of CRON_CATCHUP_WORDS."""
    read_seconds = number(0, MAX_SECONDS, "seconds", below=True)

    def read(env: Environment, name: str, default: float) -> float:
        word = (env.str(name, None) or "").strip().lower()
        if word in CRON_CATCHUP_WORDS:
            return CRON_CATCHUP_WORDS[word]
        try:
            value: float = read_seconds(env, name, default)
        except environs.EnvValidationError as exc:
            words = " or ".join(CRON_CATCHUP_WORDS)
            messages = [f"{message}, or {words}" for message in exc.error_messages]
            raise environs.EnvValidationError(str(exc), messages) from exc
        return value

    return read


def choice(choices: tuple[str, ...]) -> Reader:
    """One of `choices`, written in any case and kept in theirs."""
    one_of = environs.validate.OneOf(choices, error="must be one of {choices}")

    def read(env: Environment, name: str, default: str) -> str:
        word = env.str(name, default)
        return one_of(word.upper() if default.isupper() else word.lower())

    return read


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _check_secrets(values: list[str]) -> None:
    if any(not value for value in values):
        raise environs.ValidationError("has an empty value in its comma-separated list")
    if any(len(value) < 8 for value in values):
        raise environs.ValidationError("must be at least 8 characters long")
    if any(not value.isprintable() or " " in value for value in values):
        raise environs.ValidationError("must be printable characters without spaces")


def endpoint_secret_variable(name: str) -> str:
    """The variable holding an endpoint's own secrets: SCHEDULER_ENDPOINT_SECRET_<NAME>, the
    name upper-cased with every character other than a letter or digit as `_`."""
    return ENDPOINT_SECRET_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


def declare(variable: str, reader: Reader, help: str) -> dict[str, Any]:
    """A Settings field's metadata: the variable it is read from, how, and what it means."""
    return {"variable": variable, "reader": reader, "help": help}


def setting(variable: str, reader: Reader, default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata=declare(variable, reader, help))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting, each field declaring the variable it is read from: its name, its reader
    with any bounds, its default and a line of help (README.md's table says more)."""

    # fmt: off
    database_url: str = dataclasses.field(metadata=declare(
        "DATABASE_URL", Environment.postgresql_url, "PostgreSQL URL, postgresql:// or postgres://"))
    secrets: tuple[str, ...] = dataclasses.field(metadata=declare(
        "SECRET", Environment.secrets, "Shared secrets, comma-separated; the first is sent"))
    endpoint: str = dataclasses.field(metadata=declare(
        "ENDPOINT", Environment.http_url, "http:// or https:// URL of the endpoint `default`"))
    database_direct_url: str | None = setting("DATABASE_DIRECT_URL", Environment.postgresql_url,
        None, "PostgreSQL URL bypassing a pooler in DATABASE_URL, for the dispatchers' LISTEN")
    db_pooler: str = setting("SCHEDULER_DB_POOLER", choice(DB_POOLERS), DB_POOLERS[0],
        "`transaction`: DATABASE_URL is a transaction-mode pooler (implied by DATABASE_DIRECT_URL)")
    port: int = setting("PORT", integer(1, 65535), DEFAULT_PORT, "Port the web process binds on")
    connect_timeout: float = setting("SCHEDULER_CONNECT_TIMEOUT", seconds(),
        DEFAULT_CONNECT_TIMEOUT, "Seconds to connect to an endpoint")
    read_timeout: float = setting("SCHEDULER_READ_TIMEOUT", seconds(), DEFAULT_READ_TIMEOUT,
        "Seconds to wait for each read of an endpoint's answer")
    max_timeout: float = setting("SCHEDULER_MAX_TIMEOUT",
        number(0.0, MAX_TIMEOUT_LIMIT, "seconds", above=True), DEFAULT_MAX_TIMEOUT,
        "Longest timeout a job may set for its attempts, in seconds")
    delivery_threads: int = setting("SCHEDULER_DELIVERY_THREADS", integer(1, 1024),
        DEFAULT_DELIVERY_THREADS, "Deliveries sent at once by each dispatcher")
    max_attempts: int = setting("SCHEDULER_MAX_ATTEMPTS", integer(1, MAX_ATTEMPTS_LIMIT),
        DEFAULT_MAX_ATTEMPTS, "Attempts per delivery before a job is failed")
    retry_base: float = setting("SCHEDULER_RETRY_BASE", seconds(), DEFAULT_RETRY_BASE,
        "Seconds; the base of the exponential backoff")
    retry_cap: float = setting("SCHEDULER_RETRY_CAP", seconds(), DEFAULT_RETRY_CAP,
        "Seconds; the largest backoff")
    reconcile_interval: float = setting("SCHEDULER_RECONCILE_INTERVAL", seconds(1.0),
        DEFAULT_RECONCILE_INTERVAL, "Seconds between reconciles of timers with the tables")
    poll_interval: float = setting("SCHEDULER_POLL_INTERVAL", seconds(), DEFAULT_POLL_INTERVAL,
        "Seconds between looks for due deliveries, whatever the timers say")
    shutdown_grace: float = setting("SCHEDULER_SHUTDOWN_GRACE", seconds(0.0),
        DEFAULT_SHUTDOWN_GRACE, "Seconds in-flight deliveries get to finish after SIGTERM")
    db_connections: int = setting("SCHEDULER_DB_CONNECTIONS",
        integer(MIN_DB_CONNECTIONS, MAX_DB_CONNECTIONS), DEFAULT_DB_CONNECTIONS,
        "Most PostgreSQL connections each web process and each dispatcher opens")
    web_threads: int = setting("SCHEDULER_WEB_THREADS", integer(1, 1024), DEFAULT_WEB_THREADS,
        "Request threads per gunicorn worker")
    web_workers: int = setting("WEB_CONCURRENCY", integer(1, 64), DEFAULT_WEB_WORKERS,
        "Gunicorn worker processes")
    leader_timeout: float = setting("SCHEDULER_LEADER_TIMEOUT", seconds(3.0),
        DEFAULT_LEADER_TIMEOUT, "Seconds a dispatcher's heartbeat keeps it live")
    retention: float = setting("SCHEDULER_RETENTION", seconds(60.0), DEFAULT_RETENTION,
        "Seconds delivered, cancelled and skipped jobs are kept")
    failed_retention: float = setting("SCHEDULER_FAILED_RETENTION", seconds(60.0),
        DEFAULT_FAILED_RETENTION, "Seconds failed jobs are kept")
    cron_catchup_window: float = setting("SCHEDULER_CRON_CATCHUP", catchup_window(),
        DEFAULT_CATCHUP_WINDOW, "Seconds a cron's missed ticks are still delivered, by default")
    idempotency_ttl: float = setting("SCHEDULER_IDEMPOTENCY_TTL", seconds(86400.0),
        DEFAULT_IDEMPOTENCY_TTL, "Seconds an idempotency key is remembered")
    batch_limit: int = setting("SCHEDULER_BATCH_LIMIT", integer(1, 100_000), DEFAULT_BATCH_LIMIT,
        "Most jobs in one POST /jobs/batch")
    heartbeat_max_age: float = setting("SCHEDULER_HEARTBEAT_MAX_AGE", seconds(1.0),
        DEFAULT_HEARTBEAT_MAX_AGE, "Seconds; /readyz fails on an older leader heartbeat")
    metrics_port: int = setting("SCHEDULER_METRICS_PORT", integer(0, 65535), DEFAULT_METRICS_PORT,
        "Port of the dispatcher's metrics endpoint; 0 turns it off")
    metrics_public: bool = setting("SCHEDULER_METRICS_PUBLIC", Environment.flag, False,
        "Serve both metrics endpoints without the secret")
    max_body_bytes: int = setting("SCHEDULER_MAX_BODY_BYTES", integer(1024, 64 * 1024 * 1024),
        DEFAULT_MAX_BODY_BYTES, "Largest request body the API reads")
    send_raw_secret: bool = setting("SCHEDULER_SEND_RAW_SECRET", Environment.flag, True,
        "Also send the raw secret on deliveries to ENDPOINT")
    log_format: str = setting("SCHEDULER_LOG_FORMAT", choice(LOG_FORMATS), LOG_FORMATS[0],
        "Log lines as text or JSON")
    log_level: str = setting("SCHEDULER_LOG_LEVEL", choice(LOG_LEVELS), DEFAULT_LOG_LEVEL,
        "Least level logged")
    named_endpoints: tuple[Endpoint, ...] = setting("SCHEDULER_ENDPOINTS",
        Environment.named_endpoints, (), "More endpoints, as name=url pairs")
    rate_limit: float | None = setting("SCHEDULER_RATE_LIMIT",
        number(0.0, MAX_RATE_LIMIT, "deliveries per second", above=True), None,
        "Deliveries started per second to each endpoint")
    max_in_flight: int | None = setting("SCHEDULER_MAX_IN_FLIGHT",
        integer(1, MAX_IN_FLIGHT_LIMIT), None, "Deliveries in progress to each endpoint at once")
    failure_endpoint: str | None = setting("SCHEDULER_FAILURE_ENDPOINT", Environment.text, None,
        "Endpoint sent a job.failed notification when a job fails")
    unknown_endpoint_grace: float = setting("SCHEDULER_UNKNOWN_ENDPOINT_GRACE", seconds(0.0),
        600.0, "Seconds a job waits for a dispatcher knowing its endpoint")
    flow_key_idle: float = setting("SCHEDULER_FLOW_KEY_IDLE", seconds(0.0), 3600.0,
        "Seconds a flow key unused, with nothing waiting, is kept")
    dashboard: bool = setting("SCHEDULER_DASHBOARD", Environment.flag, True,
        "Serve the dashboard under /ui/")
    dashboard_readonly: bool = setting("SCHEDULER_DASHBOARD_READONLY", Environment.flag, False,
        "The dashboard shows everything and refuses every action")
    dashboard_session_hours: float = setting("SCHEDULER_DASHBOARD_SESSION_HOURS",
        number(MIN_DASHBOARD_SESSION_HOURS, MAX_DASHBOARD_SESSION_HOURS, "hours"),
        DEFAULT_DASHBOARD_SESSION_HOURS, "Hours a dashboard login lasts")
    # ANY_PROXY alone, or IP networks as ipaddress writes them (an address as a /32 or /128).
    trusted_proxies: tuple[str, ...] = setting("SCHEDULER_TRUSTED_PROXIES", Environment.proxies,
        (), "Proxies whose X-Forwarded-For and -Proto are believed, or * for any")
    # fmt: on

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
        return self.poll_interval + tuning.ANNOUNCE_MARGIN_SECONDS

    @property
    def attempt_deadline(self) -> float:
        """Seconds one delivery attempt may take in all: connect, send, headers and body."""
        return self.connect_timeout + self.read_timeout

    @property
    def web_pool_size(self) -> int:
        """Connections of each gunicorn worker's pool: an even share of SCHEDULER_DB_CONNECTIONS."""
        return self.db_connections // self.web_workers

    @property
    def dispatcher_pool_size(self) -> int:
        """Connections of a dispatcher's own pool: what SCHEDULER_DB_CONNECTIONS leaves after its
        listener, delivery pool and timer engine, up to what its threads can use."""
        own = self.db_connections - DISPATCHER_FIXED_CONNECTIONS
        return min(own, tuning.DISPATCHER_POOL_MAX)

    @property
    def dashboard_session_seconds(self) -> float:
        return self.dashboard_session_hours * 3600.0

    @property
    def secret(self) -> str:
        """The secret sent on deliveries; the first of SECRET's comma-separated values."""
        return self.secrets[0]

    @property
    def transaction_pooled(self) -> bool:
        """Whether DATABASE_URL is a transaction-mode pooler: no session state may outlive a
        transaction (no prepared statements, startup options or LISTEN through it)."""
        return self.db_pooler == "transaction" or self.database_direct_url is not None

    @property
    def listen_url(self) -> str | None:
        """Where the dispatchers LISTEN for notices; None when only a transaction-mode pooler
        is given, where notices cannot arrive and the dispatchers poll instead."""
        if self.database_direct_url is not None:
            return self.database_direct_url
        return None if self.transaction_pooled else self.database_url

    @property
    def look_interval(self) -> float:
        """Seconds between a dispatcher's looks for due deliveries when nothing wakes it: the
        poll interval, but no more than tuning.NOTICELESS_LOOK_SECONDS where notices cannot
        arrive (listen_url None), so that a job due now still starts within about that."""
        if self.listen_url is None:
            return min(self.poll_interval, tuning.NOTICELESS_LOOK_SECONDS)
        return self.poll_interval

    @property
    def sqlalchemy_url(self) -> str:
        """DATABASE_URL in the form SQLAlchemy's psycopg 3 dialect expects."""
        return to_sqlalchemy_url(self.database_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every variable; raise ConfigError naming the first one that is missing or bad."""
        env = Environment(os.environ if environ is None else environ)
        for variable, problem in RETIRED_VARIABLES.items():
            if env.source.get(variable, "").strip():
                raise errors.ConfigError(variable, problem)
        values = {
            f.name: env.read(v, f.metadata["reader"], f.default) for v, f in VARIABLES.items()
        }
        return cls(**values).checked()

    def checked(self) -> Settings:
        """Cross-field checks that no single variable can express."""
        if self.db_connections < self.web_workers:
            raise errors.ConfigError(
                "SCHEDULER_DB_CONNECTIONS",
                f"must be at least WEB_CONCURRENCY ({self.web_workers}): a connection for each "
                "gunicorn worker",
            )
        if self.retry_cap < self.retry_base:
            raise errors.ConfigError("SCHEDULER_RETRY_CAP", "must be at least SCHEDULER_RETRY_BASE")
        if self.failure_endpoint is not None and self.failure_endpoint not in self.endpoints:
            raise errors.ConfigError(
                "SCHEDULER_FAILURE_ENDPOINT",
                f"names no endpoint; configured: {', '.join(self.endpoints)}",
            )
        return self


# Each variable from_env reads, in order (the first at fault is named), and the field it fills.
VARIABLES = {f.metadata["variable"]: f for f in dataclasses.fields(Settings)}


def to_sqlalchemy_url(database_url: str) -> str:
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", database_url, flags=re.IGNORECASE)

"""Settings.from_env: typed values and defaults, a ConfigError naming each bad variable, and the
README's table of variables checked against the declarations."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import pytest

from scheduler import config, errors
from tests import support

VALID: dict[str, str] = {
    "DATABASE_URL": "postgresql://app:pw@db.internal:5432/scheduler",
    "SECRET": "s3cret-value-0123",
    "ENDPOINT": "https://app.example.com/hooks/scheduler",
}


def env(**changes: str | None) -> dict[str, str]:
    """VALID with some variables set (a string) or removed (None)."""
    result = dict(VALID)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


DEFAULT = config.Endpoint("default", VALID["ENDPOINT"], (VALID["SECRET"],))
BILLING = config.Endpoint("billing", "https://billing.example/hooks", (VALID["SECRET"],))
MAIL = config.Endpoint(
    "mail.v2", "http://mail.example/cb?to=a,b", ("mail-secret-1", "mail-secret-0")
)
NAMED = {
    "SCHEDULER_ENDPOINTS": " billing=https://billing.example/hooks\n"
    "mail.v2=http://mail.example/cb?to=a,b ",
    "SCHEDULER_ENDPOINT_SECRET_MAIL_V2": "mail-secret-1,mail-secret-0",
}
ROTATING = " new-secret-2024 , old-secret-2023,third-one-x "

# (DATABASE_URL, the URL SQLAlchemy's psycopg dialect is given).
URLS = [
    ("postgres://u:p@db:5432/app", "postgresql+psycopg://u:p@db:5432/app"),
    ("postgresql://u:p@db:5432/app", "postgresql+psycopg://u:p@db:5432/app"),
    (
        "postgresql://u@/app?host=/run/postgresql&sslmode=disable",
        "postgresql+psycopg://u@/app?host=/run/postgresql&sslmode=disable",
    ),
    # Only the scheme is rewritten, not a "postgres://" later in the URL.
    (
        "postgres://u@db/app?application_name=postgres://x",
        "postgresql+psycopg://u@db/app?application_name=postgres://x",
    ),
]

# (attribute, value) with only the required variables set.
DEFAULTS = [
    ("database_url", VALID["DATABASE_URL"]),
    ("secrets", ("s3cret-value-0123",)),
    ("secret", "s3cret-value-0123"),
    ("endpoint", VALID["ENDPOINT"]),
    ("port", 8080),
    ("connect_timeout", 5.0),
    ("read_timeout", 30.0),
    ("attempt_deadline", 35.0),
    ("delivery_threads", 16),
    ("max_attempts", 8),
    ("retry_base", 1.0),
    ("retry_cap", 3600.0),
    ("reconcile_interval", 30.0),
    ("poll_interval", 2.0),
    ("announce_within", 7.0),
    ("shutdown_grace", 30.0),
    ("db_connections", 10),
    ("web_threads", 8),
    ("web_workers", 2),
    ("web_pool_size", 5),
    ("dispatcher_pool_size", 5),
    ("leader_timeout", 10.0),
    ("retention", 7 * 24 * 3600.0),
    ("failed_retention", 30 * 24 * 3600.0),
    ("cron_catchup_window", 3600.0),
    ("idempotency_ttl", 86400.0),
    ("batch_limit", 1000),
    ("heartbeat_max_age", 30.0),
    ("metrics_port", 9100),
    ("metrics_public", False),
    ("max_body_bytes", 1024 * 1024),
    ("send_raw_secret", True),
    ("log_format", "text"),
    ("log_level", "INFO"),
    ("named_endpoints", ()),
    ("endpoints", {"default": DEFAULT}),
    ("rate_limit", None),
    ("max_in_flight", None),
    ("failure_endpoint", None),
    ("dashboard", True),
    ("dashboard_readonly", False),
    ("dashboard_session_hours", 12.0),
    ("dashboard_session_seconds", 12 * 3600.0),
    ("trusted_proxies", ()),
]

# (variables set, the fields that differ from the defaults as a result).
READS = [
    ({"PORT": "9090"}, {"port": 9090}),
    ({"SCHEDULER_CONNECT_TIMEOUT": "2.5"}, {"connect_timeout": 2.5}),
    ({"SCHEDULER_READ_TIMEOUT": "10"}, {"read_timeout": 10.0}),
    ({"SCHEDULER_DELIVERY_THREADS": "4"}, {"delivery_threads": 4}),
    ({"SCHEDULER_MAX_ATTEMPTS": "3"}, {"max_attempts": 3}),
    ({"SCHEDULER_RETRY_BASE": "0.5"}, {"retry_base": 0.5}),
    ({"SCHEDULER_RETRY_CAP": "60"}, {"retry_cap": 60.0}),
    ({"SCHEDULER_RECONCILE_INTERVAL": "15"}, {"reconcile_interval": 15.0}),
    ({"SCHEDULER_POLL_INTERVAL": "0.25"}, {"poll_interval": 0.25}),
    ({"SCHEDULER_DB_CONNECTIONS": "20"}, {"db_connections": 20}),
    ({"SCHEDULER_WEB_THREADS": "32"}, {"web_threads": 32}),
    ({"WEB_CONCURRENCY": "5"}, {"web_workers": 5}),
    ({"SCHEDULER_LEADER_TIMEOUT": "3"}, {"leader_timeout": 3.0}),
    ({"SCHEDULER_RETENTION": "60"}, {"retention": 60.0}),
    ({"SCHEDULER_FAILED_RETENTION": "3600"}, {"failed_retention": 3600.0}),
    ({"SCHEDULER_CRON_CATCHUP": "Skip"}, {"cron_catchup_window": 0.0}),
    ({"SCHEDULER_CRON_CATCHUP": "latest"}, {"cron_catchup_window": 3600.0}),
    ({"SCHEDULER_CRON_CATCHUP": "90"}, {"cron_catchup_window": 90.0}),
    ({"SCHEDULER_IDEMPOTENCY_TTL": "172800"}, {"idempotency_ttl": 172800.0}),
    ({"SCHEDULER_BATCH_LIMIT": "10"}, {"batch_limit": 10}),
    ({"SCHEDULER_HEARTBEAT_MAX_AGE": "5"}, {"heartbeat_max_age": 5.0}),
    ({"SCHEDULER_METRICS_PORT": "0"}, {"metrics_port": 0}),
    ({"SCHEDULER_MAX_BODY_BYTES": "2048"}, {"max_body_bytes": 2048}),
    ({"SCHEDULER_LOG_FORMAT": "JSON"}, {"log_format": "json"}),
    ({"SCHEDULER_LOG_LEVEL": " debug "}, {"log_level": "DEBUG"}),
    ({"SCHEDULER_FAILURE_ENDPOINT": "default"}, {"failure_endpoint": "default"}),
    ({"SCHEDULER_RATE_LIMIT": "2.5"}, {"rate_limit": 2.5}),
    ({"SCHEDULER_MAX_IN_FLIGHT": "4"}, {"max_in_flight": 4}),
    ({"SCHEDULER_DASHBOARD_SESSION_HOURS": "0.5"}, {"dashboard_session_hours": 0.5}),
    # Booleans: 1/true/yes/on and 0/false/no/off, in any case.
    ({"SCHEDULER_METRICS_PUBLIC": "true"}, {"metrics_public": True}),
    ({"SCHEDULER_METRICS_PUBLIC": "0"}, {}),
    ({"SCHEDULER_SEND_RAW_SECRET": "Off"}, {"send_raw_secret": False}),
    ({"SCHEDULER_DASHBOARD": "false"}, {"dashboard": False}),
    ({"SCHEDULER_DASHBOARD_READONLY": "YES"}, {"dashboard_readonly": True}),
    # Blank is unset: the default.
    ({"PORT": "", "SCHEDULER_RETRY_CAP": "  ", "SCHEDULER_LOG_LEVEL": ""}, {}),
    ({"WEB_CONCURRENCY": " ", "SCHEDULER_DASHBOARD": "", "SCHEDULER_ENDPOINTS": " "}, {}),
    # The range limits themselves are accepted.
    ({"PORT": "65535", "SCHEDULER_MAX_ATTEMPTS": "100"}, {"port": 65535, "max_attempts": 100}),
    ({"SCHEDULER_RECONCILE_INTERVAL": "1"}, {"reconcile_interval": 1.0}),
    ({"SCHEDULER_SHUTDOWN_GRACE": "0"}, {"shutdown_grace": 0.0}),
    ({"SCHEDULER_DASHBOARD_SESSION_HOURS": "720"}, {"dashboard_session_hours": 720.0}),
    ({"SCHEDULER_RATE_LIMIT": "1000000"}, {"rate_limit": 1_000_000.0}),
    ({"SCHEDULER_IDEMPOTENCY_TTL": "86400"}, {}),
    # Several comma-separated secrets, all accepted on the API.
    ({"SECRET": ROTATING}, {"secrets": ("new-secret-2024", "old-secret-2023", "third-one-x")}),
    # Named endpoints sign with their own secrets, else with SECRET.
    (NAMED, {"named_endpoints": (BILLING, MAIL)}),
    (
        {**NAMED, "SCHEDULER_FAILURE_ENDPOINT": "billing"},
        {"named_endpoints": (BILLING, MAIL), "failure_endpoint": "billing"},
    ),
    # Trusted proxies: addresses, networks as ipaddress writes them, or * alone.
    ({"SCHEDULER_TRUSTED_PROXIES": ""}, {}),
    ({"SCHEDULER_TRUSTED_PROXIES": " * "}, {"trusted_proxies": ("*",)}),
    ({"SCHEDULER_TRUSTED_PROXIES": "10.0.0.1"}, {"trusted_proxies": ("10.0.0.1/32",)}),
    (
        {"SCHEDULER_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.0/24"},
        {"trusted_proxies": ("10.0.0.0/8", "192.168.1.0/24")},
    ),
    ({"SCHEDULER_TRUSTED_PROXIES": "::1,fd00::/8"}, {"trusted_proxies": ("::1/128", "fd00::/8")}),
    # DATABASE_URL as given; only sqlalchemy_url rewrites it.
    *[({"DATABASE_URL": url}, {"database_url": url}) for url, _ in URLS],
]

# (variables set, attribute derived from the fields, value).
DERIVED = [
    ({"SECRET": ROTATING}, "secret", "new-secret-2024"),
    (NAMED, "endpoints", {"default": DEFAULT, "billing": BILLING, "mail.v2": MAIL}),
    ({"SCHEDULER_DASHBOARD_SESSION_HOURS": "0.5"}, "dashboard_session_seconds", 1800.0),
    ({"SCHEDULER_POLL_INTERVAL": "0.25"}, "announce_within", 5.25),
    ({"SCHEDULER_CONNECT_TIMEOUT": "2", "SCHEDULER_READ_TIMEOUT": "10"}, "attempt_deadline", 12.0),
    # The connection budget's split (docs/operations.md, "Connections"): each gunicorn worker
    # an even share, rounded down; a dispatcher's own pool what its 4 fixed ones leave, up to 5.
    ({"SCHEDULER_DB_CONNECTIONS": "7"}, "web_pool_size", 3),
    ({"SCHEDULER_DB_CONNECTIONS": "6", "WEB_CONCURRENCY": "6"}, "web_pool_size", 1),
    ({"SCHEDULER_DB_CONNECTIONS": "40", "WEB_CONCURRENCY": "3"}, "web_pool_size", 13),
    ({"SCHEDULER_DB_CONNECTIONS": "6"}, "dispatcher_pool_size", 2),
    ({"SCHEDULER_DB_CONNECTIONS": "8"}, "dispatcher_pool_size", 4),
    ({"SCHEDULER_DB_CONNECTIONS": "400"}, "dispatcher_pool_size", 5),
    *[({"DATABASE_URL": url}, "sqlalchemy_url", dialect) for url, dialect in URLS],
]

# (variables set or removed, the variable named, a fragment of the problem).
REFUSALS = [
    # Required variables missing or blank; DATABASE_URL is read first.
    ({"DATABASE_URL": None, "SECRET": None, "ENDPOINT": None}, "DATABASE_URL", "not set"),
    ({"DATABASE_URL": None}, "DATABASE_URL", "not set"),
    ({"DATABASE_URL": "   "}, "DATABASE_URL", "not set"),
    ({"SECRET": None}, "SECRET", "not set"),
    ({"SECRET": ""}, "SECRET", "not set"),
    ({"ENDPOINT": None}, "ENDPOINT", "not set"),
    ({"ENDPOINT": " \t"}, "ENDPOINT", "not set"),
    # DATABASE_URL
    ({"DATABASE_URL": "mysql://u:p@h/db"}, "DATABASE_URL", "postgresql://"),
    ({"DATABASE_URL": "sqlite:///x.db"}, "DATABASE_URL", "postgresql://"),
    ({"DATABASE_URL": "host=db dbname=x"}, "DATABASE_URL", "postgresql://"),
    ({"DATABASE_URL": "postgresql+psycopg://u@h/db"}, "DATABASE_URL", "postgresql://"),
    # ENDPOINT
    ({"ENDPOINT": "ftp://example.com/x"}, "ENDPOINT", "http"),
    ({"ENDPOINT": "example.com/hook"}, "ENDPOINT", "http"),
    ({"ENDPOINT": "localhost:8080"}, "ENDPOINT", "http"),
    ({"ENDPOINT": "http:///hook"}, "ENDPOINT", "host"),
    ({"ENDPOINT": "https://"}, "ENDPOINT", "host"),
    # SECRET
    ({"SECRET": "1234567"}, "SECRET", "at least 8"),
    ({"SECRET": "long-enough-1,short"}, "SECRET", "at least 8"),
    ({"SECRET": "long-enough-1,"}, "SECRET", "empty"),
    ({"SECRET": "long-enough-1, ,long-enough-2"}, "SECRET", "empty"),
    ({"SECRET": ",long-enough-1"}, "SECRET", "empty"),
    ({"SECRET": "long enough secret"}, "SECRET", "without spaces"),
    ({"SECRET": "long\tenough"}, "SECRET", "printable"),
    # Integers
    ({"PORT": "http"}, "PORT", "must be an integer, got 'http'"),
    ({"PORT": "8080.0"}, "PORT", "integer"),
    ({"PORT": "0"}, "PORT", "must be between 1 and 65535, got 0"),
    ({"PORT": "65536"}, "PORT", "between 1 and 65535"),
    ({"PORT": "-1"}, "PORT", "between 1 and 65535"),
    ({"SCHEDULER_DELIVERY_THREADS": "many"}, "SCHEDULER_DELIVERY_THREADS", "integer"),
    ({"SCHEDULER_DELIVERY_THREADS": "0"}, "SCHEDULER_DELIVERY_THREADS", "between"),
    ({"SCHEDULER_MAX_ATTEMPTS": "101"}, "SCHEDULER_MAX_ATTEMPTS", "between 1 and 100"),
    ({"SCHEDULER_MAX_ATTEMPTS": "0"}, "SCHEDULER_MAX_ATTEMPTS", "between 1 and 100"),
    ({"SCHEDULER_DB_CONNECTIONS": "5"}, "SCHEDULER_DB_CONNECTIONS", "between 6 and 10000, got 5"),
    ({"SCHEDULER_WEB_THREADS": "0"}, "SCHEDULER_WEB_THREADS", "between 1 and 1024"),
    ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY", "between"),
    ({"SCHEDULER_MAX_IN_FLIGHT": "0"}, "SCHEDULER_MAX_IN_FLIGHT", "between"),
    ({"SCHEDULER_MAX_BODY_BYTES": "1023"}, "SCHEDULER_MAX_BODY_BYTES", "between 1024 and"),
    # Seconds
    ({"SCHEDULER_CONNECT_TIMEOUT": "5s"}, "SCHEDULER_CONNECT_TIMEOUT", "a number of seconds"),
    ({"SCHEDULER_READ_TIMEOUT": "0"}, "SCHEDULER_READ_TIMEOUT", "must be between 0.001 and 1e+09"),
    ({"SCHEDULER_CONNECT_TIMEOUT": "-1"}, "SCHEDULER_CONNECT_TIMEOUT", "must be between"),
    ({"SCHEDULER_READ_TIMEOUT": "nan"}, "SCHEDULER_READ_TIMEOUT", "must be between"),
    ({"SCHEDULER_READ_TIMEOUT": "inf"}, "SCHEDULER_READ_TIMEOUT", "must be between"),
    ({"SCHEDULER_READ_TIMEOUT": "1e9"}, "SCHEDULER_READ_TIMEOUT", "must be between"),
    ({"SCHEDULER_POLL_INTERVAL": "0"}, "SCHEDULER_POLL_INTERVAL", "must be between"),
    ({"SCHEDULER_RETRY_BASE": "0"}, "SCHEDULER_RETRY_BASE", "must be between"),
    ({"SCHEDULER_SHUTDOWN_GRACE": "-0.5"}, "SCHEDULER_SHUTDOWN_GRACE", "between 0 and"),
    ({"SCHEDULER_RECONCILE_INTERVAL": "0.5"}, "SCHEDULER_RECONCILE_INTERVAL", "between 1 and"),
    ({"SCHEDULER_LEADER_TIMEOUT": "2"}, "SCHEDULER_LEADER_TIMEOUT", "between 3 and"),
    ({"SCHEDULER_RETENTION": "59"}, "SCHEDULER_RETENTION", "between 60 and"),
    ({"SCHEDULER_IDEMPOTENCY_TTL": "3600"}, "SCHEDULER_IDEMPOTENCY_TTL", "between 86400 and"),
    ({"SCHEDULER_RETRY_CAP": "five minutes"}, "SCHEDULER_RETRY_CAP", "number"),
    # Hours and rates
    (
        {"SCHEDULER_DASHBOARD_SESSION_HOURS": "a day"},
        "SCHEDULER_DASHBOARD_SESSION_HOURS",
        "number of hours",
    ),
    (
        {"SCHEDULER_DASHBOARD_SESSION_HOURS": "0"},
        "SCHEDULER_DASHBOARD_SESSION_HOURS",
        "between 0.1 and 720 hours",
    ),
    ({"SCHEDULER_DASHBOARD_SESSION_HOURS": "721"}, "SCHEDULER_DASHBOARD_SESSION_HOURS", "between"),
    ({"SCHEDULER_DASHBOARD_SESSION_HOURS": "nan"}, "SCHEDULER_DASHBOARD_SESSION_HOURS", "between"),
    ({"SCHEDULER_RATE_LIMIT": "0"}, "SCHEDULER_RATE_LIMIT", "above 0"),
    ({"SCHEDULER_RATE_LIMIT": "1000001"}, "SCHEDULER_RATE_LIMIT", "at most 1e+06"),
    ({"SCHEDULER_RATE_LIMIT": "fast"}, "SCHEDULER_RATE_LIMIT", "number"),
    # Choices
    (
        {"SCHEDULER_LOG_LEVEL": "verbose"},
        "SCHEDULER_LOG_LEVEL",
        "one of DEBUG, INFO, WARNING, ERROR",
    ),
    ({"SCHEDULER_LOG_LEVEL": "CRITICAL"}, "SCHEDULER_LOG_LEVEL", "one of"),
    ({"SCHEDULER_LOG_FORMAT": "xml"}, "SCHEDULER_LOG_FORMAT", "one of text, json"),
    ({"SCHEDULER_CRON_CATCHUP": "all"}, "SCHEDULER_CRON_CATCHUP", "got 'all', or skip or latest"),
    ({"SCHEDULER_CRON_CATCHUP": "-1"}, "SCHEDULER_CRON_CATCHUP", "between 0 and"),
    # Booleans: only the eight words, so t/y/f/n too are refused.
    ({"SCHEDULER_METRICS_PUBLIC": "sometimes"}, "SCHEDULER_METRICS_PUBLIC", "true or false"),
    ({"SCHEDULER_DASHBOARD": "maybe"}, "SCHEDULER_DASHBOARD", "true or false, got 'maybe'"),
    ({"SCHEDULER_DASHBOARD_READONLY": "2"}, "SCHEDULER_DASHBOARD_READONLY", "true or false"),
    ({"SCHEDULER_SEND_RAW_SECRET": "T"}, "SCHEDULER_SEND_RAW_SECRET", "true or false"),
    # SCHEDULER_ENDPOINTS and their secrets
    ({"SCHEDULER_ENDPOINTS": "default=http://x.example/"}, "SCHEDULER_ENDPOINTS", "reserved"),
    ({"SCHEDULER_ENDPOINTS": "billing"}, "SCHEDULER_ENDPOINTS", "name=url"),
    ({"SCHEDULER_ENDPOINTS": "a/b=http://x.example/"}, "SCHEDULER_ENDPOINTS", "name=url"),
    ({"SCHEDULER_ENDPOINTS": "a=ftp://x.example/"}, "SCHEDULER_ENDPOINTS", "a: must be an http"),
    ({"SCHEDULER_ENDPOINTS": "a=http://x a=http://y"}, "SCHEDULER_ENDPOINTS", "twice"),
    (
        {"SCHEDULER_ENDPOINTS": "a-b=http://x a_b=http://y"},
        "SCHEDULER_ENDPOINTS",
        "a-b and a_b share SCHEDULER_ENDPOINT_SECRET_A_B",
    ),
    (
        {"SCHEDULER_ENDPOINTS": "a=http://x", "SCHEDULER_ENDPOINT_SECRET_A": "short"},
        "SCHEDULER_ENDPOINT_SECRET_A",
        "8 characters",
    ),
    ({"SCHEDULER_FAILURE_ENDPOINT": "nowhere"}, "SCHEDULER_FAILURE_ENDPOINT", "names no"),
    # SCHEDULER_TRUSTED_PROXIES
    ({"SCHEDULER_TRUSTED_PROXIES": "router"}, "SCHEDULER_TRUSTED_PROXIES", "'router'"),
    # Host bits set: meant 10.0.0.0/8, or the address 10.0.0.1?
    ({"SCHEDULER_TRUSTED_PROXIES": "10.0.0.1/8"}, "SCHEDULER_TRUSTED_PROXIES", "CIDR"),
    ({"SCHEDULER_TRUSTED_PROXIES": "10.0.0.1,"}, "SCHEDULER_TRUSTED_PROXIES", "''"),
    ({"SCHEDULER_TRUSTED_PROXIES": "*,10.0.0.1"}, "SCHEDULER_TRUSTED_PROXIES", "alone"),
    # Cross-field checks.
    (
        {"SCHEDULER_DB_CONNECTIONS": "8", "WEB_CONCURRENCY": "9"},
        "SCHEDULER_DB_CONNECTIONS",
        "must be at least WEB_CONCURRENCY (9)",
    ),
    # Retired: what it set is split differently now, so it is not silently ignored.
    ({"SCHEDULER_DB_POOL_SIZE": "8"}, "SCHEDULER_DB_POOL_SIZE", "set SCHEDULER_DB_CONNECTIONS"),
    (
        {"SCHEDULER_RETRY_BASE": "10", "SCHEDULER_RETRY_CAP": "5"},
        "SCHEDULER_RETRY_CAP",
        "must be at least SCHEDULER_RETRY_BASE",
    ),
]


def ordered(value: Any) -> Any:
    """A mapping as its list of items, so that comparing it compares the order too."""
    return list(value.items()) if isinstance(value, Mapping) else value


@pytest.mark.parametrize(("attribute", "value"), DEFAULTS)
def test_the_required_variables_alone_give_the_defaults(attribute: str, value: Any) -> None:
    actual = getattr(config.Settings.from_env(env()), attribute)

    assert ordered(actual) == ordered(value)
    assert type(ordered(actual)) is type(ordered(value))


@pytest.mark.parametrize(("changes", "fields"), READS)
def test_each_variable_sets_its_field_with_its_type_and_nothing_else(
    changes: dict[str, str], fields: dict[str, Any]
) -> None:
    settings = config.Settings.from_env(env(**changes))

    assert settings == dataclasses.replace(config.Settings.from_env(env()), **fields)
    assert {name: type(getattr(settings, name)) for name in fields} == {
        name: type(value) for name, value in fields.items()
    }


@pytest.mark.parametrize(("changes", "attribute", "value"), DERIVED)
def test_values_derived_from_the_settings(
    changes: dict[str, str], attribute: str, value: Any
) -> None:
    actual = getattr(config.Settings.from_env(env(**changes)), attribute)

    assert ordered(actual) == ordered(value)


@pytest.mark.parametrize(("changes", "variable", "problem"), REFUSALS)
def test_a_bad_environment_is_refused_naming_the_variable(
    changes: dict[str, str | None], variable: str, problem: str
) -> None:
    with pytest.raises(errors.ConfigError) as refused:
        config.Settings.from_env(env(**changes))

    assert refused.value.variable == variable
    assert problem in refused.value.problem
    assert str(refused.value) == f"{variable}: {refused.value.problem}"


def test_a_given_mapping_is_read_and_not_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**VALID, "PORT": "9999"}.items():
        monkeypatch.setenv(name, value)

    assert config.Settings.from_env().port == 9999
    assert config.Settings.from_env(env()).port == 8080
    with pytest.raises(errors.ConfigError, match=r"^SECRET: is not set$"):
        config.Settings.from_env(env(SECRET=None))


def readme_configuration() -> dict[str, str]:
    """The README's configuration table: {variable: default cell as written}."""
    text = (support.ROOT / "README.md").read_text("utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+?) \|", section, re.MULTILINE)
    assert rows, "no table under ## Configuration"
    return dict(rows)


def documented(default: Any) -> str:
    """How the README's Default column writes a declared default."""
    if default is dataclasses.MISSING:
        return "required"
    if default is None or default == ():
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{int(default) if isinstance(default, float) and default.is_integer() else default}`"


# Not a variable but a family, one per named endpoint, defaulting to SECRET's values.
ENDPOINT_SECRETS = config.ENDPOINT_SECRET_PREFIX + "<NAME>"


def test_every_field_is_declared_once_with_a_line_of_help() -> None:
    fields = dataclasses.fields(config.Settings)

    assert [field.name for field in config.VARIABLES.values()] == [field.name for field in fields]
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in config.VARIABLES)
    assert all(field.metadata["help"].strip() for field in fields)
    assert all("\n" not in field.metadata["help"] for field in fields)


def test_the_readme_lists_exactly_the_declared_variables() -> None:
    assert {"DATABASE_URL", "SECRET", "PORT", "SCHEDULER_LEADER_TIMEOUT"} <= set(config.VARIABLES)
    assert set(readme_configuration()) == {*config.VARIABLES, ENDPOINT_SECRETS}


def test_the_readme_documents_the_endpoint_secrets_pattern() -> None:
    assert readme_configuration()[ENDPOINT_SECRETS] == "`SECRET`"
    assert config.endpoint_secret_variable("mail.v2") == "SCHEDULER_ENDPOINT_SECRET_MAIL_V2"


@pytest.mark.parametrize("variable", list(config.VARIABLES))
def test_the_readme_gives_the_declared_default_of(variable: str) -> None:
    declared = config.VARIABLES[variable].default

    assert readme_configuration().get(variable) == documented(declared)


@pytest.mark.parametrize("variable", list(config.VARIABLES))
def test_the_readme_default_is_the_default_and_the_variable_is_read(variable: str) -> None:
    default = readme_configuration()[variable].strip("`")
    if default not in ("required", "unset"):
        assert config.Settings.from_env(env(**{variable: default})) == config.Settings.from_env(
            env()
        ), f"the README's default of {variable} is not the default"
    with pytest.raises(errors.ConfigError) as refused:
        config.Settings.from_env(env(**{variable: "\x00!"}))
    assert refused.value.variable == variable

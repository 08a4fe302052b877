"""Settings.from_env: typed values and defaults, and a ConfigError naming each bad variable."""

from __future__ import annotations

import re

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


def test_required_variables_alone_give_the_defaults() -> None:
    settings = config.Settings.from_env(env())

    assert settings.database_url == VALID["DATABASE_URL"]
    assert settings.secrets == ("s3cret-value-0123",)
    assert settings.secret == "s3cret-value-0123"
    assert settings.endpoint == VALID["ENDPOINT"]
    assert settings.port == 8080
    assert settings.connect_timeout == 5.0
    assert settings.read_timeout == 30.0
    assert settings.delivery_threads == 16
    assert settings.max_attempts == 8
    assert settings.retry_base == 1.0
    assert settings.retry_cap == 3600.0
    assert settings.reconcile_interval == 30.0
    assert settings.poll_interval == 2.0
    assert settings.shutdown_grace == 30.0
    assert settings.db_pool_size == 8
    assert settings.web_workers == 2
    assert settings.log_level == "INFO"


def test_every_variable_is_read_with_its_type() -> None:
    settings = config.Settings.from_env(
        env(
            PORT="9090",
            SCHEDULER_CONNECT_TIMEOUT="2.5",
            SCHEDULER_READ_TIMEOUT="10",
            SCHEDULER_DELIVERY_THREADS="4",
            SCHEDULER_MAX_ATTEMPTS="3",
            SCHEDULER_RETRY_BASE="0.5",
            SCHEDULER_RETRY_CAP="60",
            SCHEDULER_RECONCILE_INTERVAL="15",
            SCHEDULER_POLL_INTERVAL="0.25",
            SCHEDULER_SHUTDOWN_GRACE="0",
            SCHEDULER_DB_POOL_SIZE="20",
            WEB_CONCURRENCY="5",
            SCHEDULER_LOG_LEVEL=" debug ",
        )
    )

    assert settings == config.Settings(
        database_url=VALID["DATABASE_URL"],
        secrets=("s3cret-value-0123",),
        endpoint=VALID["ENDPOINT"],
        port=9090,
        connect_timeout=2.5,
        read_timeout=10.0,
        delivery_threads=4,
        max_attempts=3,
        retry_base=0.5,
        retry_cap=60.0,
        reconcile_interval=15.0,
        poll_interval=0.25,
        shutdown_grace=0.0,
        db_pool_size=20,
        web_workers=5,
        log_level="DEBUG",
    )
    assert type(settings.port) is int
    assert type(settings.read_timeout) is float


def test_blank_optional_variables_mean_the_default() -> None:
    settings = config.Settings.from_env(
        env(PORT="", SCHEDULER_RETRY_CAP="  ", SCHEDULER_LOG_LEVEL="", WEB_CONCURRENCY=" ")
    )

    assert (settings.port, settings.retry_cap, settings.log_level, settings.web_workers) == (
        8080,
        3600.0,
        "INFO",
        2,
    )


BAD_ENVIRONMENTS = [
    # Required variables missing or blank.
    ("no DATABASE_URL", env(DATABASE_URL=None), "DATABASE_URL", "not set"),
    ("blank DATABASE_URL", env(DATABASE_URL="   "), "DATABASE_URL", "not set"),
    ("no SECRET", env(SECRET=None), "SECRET", "not set"),
    ("blank SECRET", env(SECRET=""), "SECRET", "not set"),
    ("no ENDPOINT", env(ENDPOINT=None), "ENDPOINT", "not set"),
    ("blank ENDPOINT", env(ENDPOINT=" \t"), "ENDPOINT", "not set"),
    # DATABASE_URL
    ("mysql URL", env(DATABASE_URL="mysql://u:p@h/db"), "DATABASE_URL", "postgresql://"),
    ("sqlite URL", env(DATABASE_URL="sqlite:///x.db"), "DATABASE_URL", "postgresql://"),
    ("conninfo string", env(DATABASE_URL="host=db dbname=x"), "DATABASE_URL", "postgresql://"),
    (
        "SQLAlchemy-style URL",
        env(DATABASE_URL="postgresql+psycopg://u@h/db"),
        "DATABASE_URL",
        "postgresql://",
    ),
    # ENDPOINT
    ("ftp endpoint", env(ENDPOINT="ftp://example.com/x"), "ENDPOINT", "http"),
    ("endpoint without scheme", env(ENDPOINT="example.com/hook"), "ENDPOINT", "http"),
    ("endpoint host:port only", env(ENDPOINT="localhost:8080"), "ENDPOINT", "http"),
    ("endpoint without host", env(ENDPOINT="http:///hook"), "ENDPOINT", "host"),
    ("endpoint scheme only", env(ENDPOINT="https://"), "ENDPOINT", "host"),
    # SECRET
    ("short secret", env(SECRET="1234567"), "SECRET", "at least 8"),
    ("short second secret", env(SECRET="long-enough-1,short"), "SECRET", "at least 8"),
    ("trailing comma", env(SECRET="long-enough-1,"), "SECRET", "empty"),
    ("empty middle item", env(SECRET="long-enough-1, ,long-enough-2"), "SECRET", "empty"),
    ("leading comma", env(SECRET=",long-enough-1"), "SECRET", "empty"),
    ("secret with a space", env(SECRET="long enough secret"), "SECRET", "without spaces"),
    ("secret with a tab", env(SECRET="long\tenough"), "SECRET", "printable"),
    # PORT
    ("port not a number", env(PORT="http"), "PORT", "integer"),
    ("port with a fraction", env(PORT="8080.0"), "PORT", "integer"),
    ("port zero", env(PORT="0"), "PORT", "between 1 and 65535"),
    ("port too high", env(PORT="65536"), "PORT", "between 1 and 65535"),
    ("port negative", env(PORT="-1"), "PORT", "between 1 and 65535"),
    # SCHEDULER_* numbers
    (
        "threads not a number",
        env(SCHEDULER_DELIVERY_THREADS="many"),
        "SCHEDULER_DELIVERY_THREADS",
        "integer",
    ),
    ("threads zero", env(SCHEDULER_DELIVERY_THREADS="0"), "SCHEDULER_DELIVERY_THREADS", "between"),
    (
        "attempts over the limit",
        env(SCHEDULER_MAX_ATTEMPTS="101"),
        "SCHEDULER_MAX_ATTEMPTS",
        "between 1 and 100",
    ),
    (
        "attempts zero",
        env(SCHEDULER_MAX_ATTEMPTS="0"),
        "SCHEDULER_MAX_ATTEMPTS",
        "between 1 and 100",
    ),
    ("pool size zero", env(SCHEDULER_DB_POOL_SIZE="0"), "SCHEDULER_DB_POOL_SIZE", "between"),
    ("web workers zero", env(WEB_CONCURRENCY="0"), "WEB_CONCURRENCY", "between"),
    (
        "timeout not a number",
        env(SCHEDULER_CONNECT_TIMEOUT="5s"),
        "SCHEDULER_CONNECT_TIMEOUT",
        "number",
    ),
    ("timeout zero", env(SCHEDULER_READ_TIMEOUT="0"), "SCHEDULER_READ_TIMEOUT", "must be between"),
    (
        "timeout negative",
        env(SCHEDULER_CONNECT_TIMEOUT="-1"),
        "SCHEDULER_CONNECT_TIMEOUT",
        "must be between",
    ),
    ("timeout NaN", env(SCHEDULER_READ_TIMEOUT="nan"), "SCHEDULER_READ_TIMEOUT", "must be between"),
    (
        "timeout infinite",
        env(SCHEDULER_READ_TIMEOUT="inf"),
        "SCHEDULER_READ_TIMEOUT",
        "must be between",
    ),
    (
        "poll interval zero",
        env(SCHEDULER_POLL_INTERVAL="0"),
        "SCHEDULER_POLL_INTERVAL",
        "must be between",
    ),
    ("retry base zero", env(SCHEDULER_RETRY_BASE="0"), "SCHEDULER_RETRY_BASE", "must be between"),
    (
        "grace negative",
        env(SCHEDULER_SHUTDOWN_GRACE="-0.5"),
        "SCHEDULER_SHUTDOWN_GRACE",
        "between 0 and",
    ),
    (
        "reconcile below 1 s",
        env(SCHEDULER_RECONCILE_INTERVAL="0.5"),
        "SCHEDULER_RECONCILE_INTERVAL",
        "between 1 and",
    ),
    ("cap not a number", env(SCHEDULER_RETRY_CAP="five minutes"), "SCHEDULER_RETRY_CAP", "number"),
    # SCHEDULER_LOG_LEVEL
    ("unknown log level", env(SCHEDULER_LOG_LEVEL="verbose"), "SCHEDULER_LOG_LEVEL", "DEBUG, INFO"),
    ("critical log level", env(SCHEDULER_LOG_LEVEL="CRITICAL"), "SCHEDULER_LOG_LEVEL", "one of"),
    # SCHEDULER_METRICS_PUBLIC
    (
        "metrics public not a boolean",
        env(SCHEDULER_METRICS_PUBLIC="sometimes"),
        "SCHEDULER_METRICS_PUBLIC",
        "true or false",
    ),
    # Cross-field checks.
    (
        "retry cap below retry base",
        env(SCHEDULER_RETRY_BASE="10", SCHEDULER_RETRY_CAP="5"),
        "SCHEDULER_RETRY_CAP",
        "SCHEDULER_RETRY_BASE",
    ),
]


@pytest.mark.parametrize(
    ("environ", "variable", "problem"),
    [pytest.param(e, v, p, id=case) for case, e, v, p in BAD_ENVIRONMENTS],
)
def test_bad_environment_names_the_variable(
    environ: dict[str, str], variable: str, problem: str
) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        config.Settings.from_env(environ)

    assert caught.value.variable == variable
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{variable}: ")


def test_empty_environment_names_database_url_first() -> None:
    with pytest.raises(errors.ConfigError) as caught:
        config.Settings.from_env({})

    assert caught.value.variable == "DATABASE_URL"


def test_range_limits_themselves_are_accepted() -> None:
    settings = config.Settings.from_env(
        env(
            PORT="65535",
            SCHEDULER_MAX_ATTEMPTS="100",
            SCHEDULER_RECONCILE_INTERVAL="1",
            SCHEDULER_SHUTDOWN_GRACE="0",
        )
    )

    assert (settings.port, settings.max_attempts) == (65535, 100)
    assert (settings.reconcile_interval, settings.shutdown_grace) == (1.0, 0.0)


def test_comma_separated_secret_gives_several_secrets_the_first_one_sent() -> None:
    settings = config.Settings.from_env(
        env(SECRET=" new-secret-2024 , old-secret-2023,third-one-x ")
    )

    assert settings.secrets == ("new-secret-2024", "old-secret-2023", "third-one-x")
    assert settings.secret == "new-secret-2024"


@pytest.mark.parametrize(
    ("database_url", "sqlalchemy_url"),
    [
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
    ],
)
def test_sqlalchemy_url_uses_the_psycopg_dialect(database_url: str, sqlalchemy_url: str) -> None:
    settings = config.Settings.from_env(env(DATABASE_URL=database_url))

    assert settings.database_url == database_url
    assert settings.sqlalchemy_url == sqlalchemy_url


def readme_configuration() -> dict[str, str]:
    """The README's configuration table: {variable: default as written}."""
    text = (support.ROOT / "README.md").read_text("utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| `?([^`|]+?)`? \|", section, re.MULTILINE)
    return dict(rows)


def test_the_readme_lists_exactly_the_variables_settings_reads() -> None:
    source = (support.ROOT / "scheduler" / "config.py").read_text("utf-8")
    read = set(re.findall(r'env,\s*"([A-Z][A-Z0-9_]*)"', source))

    assert {"DATABASE_URL", "SECRET", "PORT", "SCHEDULER_LEADER_TIMEOUT"} <= read
    assert set(readme_configuration()) == read


@pytest.mark.parametrize("variable", sorted(readme_configuration()))
def test_each_readme_default_is_the_default_and_the_variable_is_read(variable: str) -> None:
    default = readme_configuration()[variable]
    if default not in ("required", "unset"):
        assert config.Settings.from_env(env(**{variable: default})) == config.Settings.from_env(
            env()
        ), f"the README's default of {variable} is not the default"
    with pytest.raises(errors.ConfigError) as refused:
        config.Settings.from_env(env(**{variable: "\x00!"}))
    assert refused.value.variable == variable


@pytest.mark.parametrize(("value", "public"), [(None, False), ("true", True), ("0", False)])
def test_metrics_need_the_secret_unless_made_public(value: str | None, public: bool) -> None:
    settings = config.Settings.from_env(env(SCHEDULER_METRICS_PUBLIC=value))

    assert settings.metrics_public is public


def test_named_endpoints_with_their_own_secrets() -> None:
    settings = config.Settings.from_env(
        env(
            SCHEDULER_ENDPOINTS=" billing=https://billing.example/hooks\n"
            "mail.v2=http://mail.example/cb?to=a,b ",
            SCHEDULER_ENDPOINT_SECRET_MAIL_V2="mail-secret-1,mail-secret-0",
            SCHEDULER_FAILURE_ENDPOINT="billing",
            SCHEDULER_RATE_LIMIT="2.5",
            SCHEDULER_MAX_IN_FLIGHT="4",
        )
    )
    endpoints = settings.endpoints
    assert list(endpoints) == ["default", "billing", "mail.v2"]
    assert endpoints["default"] == config.Endpoint("default", VALID["ENDPOINT"], (VALID["SECRET"],))
    assert endpoints["billing"].secrets == (VALID["SECRET"],)
    assert endpoints["mail.v2"].url == "http://mail.example/cb?to=a,b"
    assert endpoints["mail.v2"].secrets == ("mail-secret-1", "mail-secret-0")
    assert (settings.rate_limit, settings.max_in_flight) == (2.5, 4)
    assert settings.failure_endpoint == "billing"


@pytest.mark.parametrize(
    ("changes", "variable", "problem"),
    [
        ({"SCHEDULER_ENDPOINTS": "default=http://x.example/"}, "SCHEDULER_ENDPOINTS", "reserved"),
        ({"SCHEDULER_ENDPOINTS": "billing"}, "SCHEDULER_ENDPOINTS", "name=url"),
        ({"SCHEDULER_ENDPOINTS": "a/b=http://x.example/"}, "SCHEDULER_ENDPOINTS", "name=url"),
        ({"SCHEDULER_ENDPOINTS": "a=ftp://x.example/"}, "SCHEDULER_ENDPOINTS", "http"),
        ({"SCHEDULER_ENDPOINTS": "a=http://x a=http://y"}, "SCHEDULER_ENDPOINTS", "twice"),
        ({"SCHEDULER_ENDPOINTS": "a-b=http://x a_b=http://y"}, "SCHEDULER_ENDPOINTS", "share"),
        (
            {"SCHEDULER_ENDPOINTS": "a=http://x", "SCHEDULER_ENDPOINT_SECRET_A": "short"},
            "SCHEDULER_ENDPOINT_SECRET_A",
            "8 characters",
        ),
        ({"SCHEDULER_FAILURE_ENDPOINT": "nowhere"}, "SCHEDULER_FAILURE_ENDPOINT", "names no"),
        ({"SCHEDULER_RATE_LIMIT": "0"}, "SCHEDULER_RATE_LIMIT", "above 0"),
        ({"SCHEDULER_MAX_IN_FLIGHT": "0"}, "SCHEDULER_MAX_IN_FLIGHT", "between"),
    ],
)
def test_bad_endpoints_and_limits_are_refused_naming_the_variable(
    changes: dict[str, str], variable: str, problem: str
) -> None:
    with pytest.raises(errors.ConfigError) as refused:
        config.Settings.from_env(env(**changes))
    assert refused.value.variable == variable
    assert problem in str(refused.value)


def test_the_dashboard_is_on_read_write_with_twelve_hour_sessions_and_no_trusted_proxy() -> None:
    settings = config.Settings.from_env(env())

    assert (settings.dashboard, settings.dashboard_readonly) == (True, False)
    assert settings.dashboard_session_hours == 12.0
    assert settings.dashboard_session_seconds == 12 * 3600.0
    assert settings.trusted_proxies == ()


def test_dashboard_settings_are_read() -> None:
    settings = config.Settings.from_env(
        env(
            SCHEDULER_DASHBOARD="false",
            SCHEDULER_DASHBOARD_READONLY="yes",
            SCHEDULER_DASHBOARD_SESSION_HOURS="0.5",
        )
    )

    assert (settings.dashboard, settings.dashboard_readonly) == (False, True)
    assert settings.dashboard_session_seconds == 1800.0


@pytest.mark.parametrize(
    ("value", "trusted"),
    [
        ("", ()),
        (" * ", ("*",)),
        ("10.0.0.1", ("10.0.0.1/32",)),
        ("10.0.0.0/8, 192.168.1.0/24", ("10.0.0.0/8", "192.168.1.0/24")),
        ("::1,fd00::/8", ("::1/128", "fd00::/8")),
    ],
)
def test_trusted_proxies_are_addresses_networks_or_a_star(
    value: str, trusted: tuple[str, ...]
) -> None:
    assert config.Settings.from_env(env(SCHEDULER_TRUSTED_PROXIES=value)).trusted_proxies == trusted


@pytest.mark.parametrize(
    ("changes", "variable", "problem"),
    [
        ({"SCHEDULER_DASHBOARD": "maybe"}, "SCHEDULER_DASHBOARD", "true or false"),
        ({"SCHEDULER_DASHBOARD_READONLY": "2"}, "SCHEDULER_DASHBOARD_READONLY", "true or false"),
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
        (
            {"SCHEDULER_DASHBOARD_SESSION_HOURS": "721"},
            "SCHEDULER_DASHBOARD_SESSION_HOURS",
            "between",
        ),
        (
            {"SCHEDULER_DASHBOARD_SESSION_HOURS": "nan"},
            "SCHEDULER_DASHBOARD_SESSION_HOURS",
            "between",
        ),
        ({"SCHEDULER_TRUSTED_PROXIES": "router"}, "SCHEDULER_TRUSTED_PROXIES", "'router'"),
        # Host bits set: meant 10.0.0.0/8, or the address 10.0.0.1?
        ({"SCHEDULER_TRUSTED_PROXIES": "10.0.0.1/8"}, "SCHEDULER_TRUSTED_PROXIES", "CIDR"),
        ({"SCHEDULER_TRUSTED_PROXIES": "10.0.0.1,"}, "SCHEDULER_TRUSTED_PROXIES", "''"),
        ({"SCHEDULER_TRUSTED_PROXIES": "*,10.0.0.1"}, "SCHEDULER_TRUSTED_PROXIES", "alone"),
    ],
)
def test_bad_dashboard_settings_are_refused_naming_the_variable(
    changes: dict[str, str], variable: str, problem: str
) -> None:
    with pytest.raises(errors.ConfigError) as refused:
        config.Settings.from_env(env(**changes))
    assert refused.value.variable == variable
    assert problem in str(refused.value)

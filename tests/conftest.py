"""Fixtures shared by every test: a real PostgreSQL and a real HTTP receiver."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import psycopg
import pytest

from scheduler.storage import cluster
from scheduler.storage import db as db_module
from tests import support

# Captured before the environment is cleaned, so the suite can target a given server.
_DATABASE_URL = os.environ.pop("DATABASE_URL", "")
for _name in list(os.environ):
    if _name.startswith("SCHEDULER_") or _name in ("SECRET", "ENDPOINT", "PORT"):
        del os.environ[_name]


def pytest_report_header() -> list[str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    return [
        "database: " + ("DATABASE_URL" if _DATABASE_URL else "embedded PostgreSQL"),
        f"browser tests: Chromium at {chromium}"
        if chromium
        else "browser tests: SKIPPED, no Chromium (apt-get install chromium; .ci/run does)",
    ]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (those marked `long`, then those that start processes): with
    `-n`, the short ones then fill in at the end, instead of one long file running alone."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("long") is None,
            item.get_closest_marker("e2e") is None,
        )
    )


@pytest.fixture(scope="session")
def server_url() -> str:
    return _DATABASE_URL or support.embedded_server_url()


@pytest.fixture(scope="session")
def template_db(server_url: str) -> str:
    return support.ensure_template(server_url)


@pytest.fixture
def db_url(server_url: str, template_db: str) -> Iterator[str]:
    with support.fresh_database(server_url, template_db) as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def receiver() -> Iterator[support.Receiver]:
    server = support.Receiver()
    yield server
    server.close()


@pytest.fixture
def database(db_url: str) -> Iterator[db_module.Database]:
    database = db_module.Database(db_module.open_pool(db_url, 4, name="test"))
    yield database
    database.close()


@pytest.fixture
def epoch(database: db_module.Database) -> Iterator[int]:
    """The current epoch of a leader's lease this test holds (as holder `test`)."""
    lease = cluster.LeaderLease(database, timeout=600)
    value = lease.try_acquire("test")
    assert value is not None
    yield value
    lease.release(value)

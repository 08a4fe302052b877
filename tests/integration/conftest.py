"""The Flask app on a fresh database, driven through its test client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from scheduler import config
from scheduler.web import app as app_module
from tests import support


@pytest.fixture
def settings(db_url: str) -> config.Settings:
    return config.Settings(
        database_url=db_url, secrets=(support.SECRET,), endpoint="http://127.0.0.1:9/hook"
    )


@pytest.fixture
def app(settings: config.Settings) -> Iterator[Flask]:
    flask_app = app_module.create_app(settings)
    # The pool connects in a background thread, and psycopg_pool draws from `random` as it does;
    # hypothesis fails a test whose strategies run while the global random state moves.
    flask_app.extensions["scheduler.database"].pool.wait()
    yield flask_app
    flask_app.extensions["scheduler.database"].pool.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Scheduler-Secret": support.SECRET}

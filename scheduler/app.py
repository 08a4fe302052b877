"""The web process: create_app() wires settings, the database pool, routes and error bodies."""

from __future__ import annotations

import atexit
import json
import logging
from typing import Any

from flask import Flask, Response
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from scheduler import api, config, db, errors, logs, store, web_metrics

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


def create_app(settings: config.Settings | None = None) -> Flask:
    """Build the app; opens this process's database pool, so call it after gunicorn forks."""
    settings = settings or config.Settings.from_env()
    logs.configure_logging(settings.log_level, settings.log_format)
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    pool = db.open_pool(settings.database_url, settings.db_pool_size, name="web")
    atexit.register(pool.close)
    app.extensions["scheduler.store"] = store.Store(pool)
    app.register_blueprint(api.bp)
    _register_error_handlers(app)
    web_metrics.init_web_metrics(app)
    return app


def error_body(
    status: int, code: str, message: str, fields: dict[str, Any] | None = None
) -> Response:
    """The one JSON shape of every non-2xx answer."""
    error: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        error["fields"] = fields
    return Response(json.dumps({"error": error}), status=status, mimetype="application/json")


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(api.RequestRejected)
    def rejected(exc: api.RequestRejected) -> Response:
        return error_body(exc.status, exc.code, exc.message, exc.fields)

    @app.errorhandler(errors.StoreUnavailable)
    def unavailable(exc: errors.StoreUnavailable) -> Response:
        logger.warning("database unavailable: %s", exc, extra={"action": "store_unavailable"})
        response = error_body(503, "unavailable", "The database is unavailable; try again.")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_body(exc.code or 500, code, exc.description or exc.name)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> Response:
        logger.exception("unhandled error", extra={"action": "internal_error"})
        return error_body(500, "internal", "Internal error.")

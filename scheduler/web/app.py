"""The web process: create_app() wires settings, the database pool, routes and error bodies."""

from __future__ import annotations

import atexit
import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from scheduler import config, db, errors, logs, store
from scheduler.web import api, group_commit, http, metrics
from scheduler.web.dashboard import actions as dashboard_actions
from scheduler.web.dashboard import pages as dashboard_pages

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


def create_app(settings: config.Settings | None = None) -> Flask:
    """Build the app; opens this process's database pool, so call it after gunicorn forks."""
    settings = settings or config.Settings.from_env()
    logs.configure_logging(settings.log_level, settings.log_format)
    app = Flask(__name__, static_folder=None)
    # Werkzeug would answer /cron//x with a redirect to /cron/x whose body is an HTML page, which
    # Flask sends past every error handler; without it the path is a JSON 404.
    app.url_map.merge_slashes = False
    app.config["SETTINGS"] = settings
    pool = db.open_pool(settings.database_url, settings.db_pool_size, name="web")
    atexit.register(pool.close)
    db_store = store.Store(pool)
    app.extensions["scheduler.store"] = db_store
    app.extensions["scheduler.group_commit"] = group_commit.GroupCommit(
        db_store, settings.announce_within
    )
    app.register_blueprint(api.bp)
    app.register_blueprint(dashboard_actions.bp)
    _register_error_handlers(app)
    _warn_of_unknown_endpoints(db_store, settings)
    metrics.init_web_metrics(app, settings)
    return app


def _warn_of_unknown_endpoints(db_store: store.Store, settings: config.Settings) -> None:
    try:
        unknown = db_store.unknown_endpoints(list(settings.endpoints))
    except errors.StoreUnavailable:
        return
    if unknown:
        logger.warning(
            "jobs or crons name endpoints this process does not know: %s (SCHEDULER_ENDPOINTS)",
            ", ".join(unknown),
            extra={"action": "unknown_endpoints"},
        )


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(http.RequestRejected)
    def rejected(exc: http.RequestRejected) -> Response:
        response = http.error_body(exc.status, exc.code, exc.message, exc.fields)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(errors.InvalidValue)
    def invalid_value(exc: errors.InvalidValue) -> Response:
        # Validation should have refused the value first; this is the net under it.
        logger.warning("PostgreSQL refused a value: %s", exc, extra={"action": "invalid_value"})
        return http.error_body(400, "invalid_request", f"PostgreSQL refused a value: {exc}.")

    @app.errorhandler(errors.JobNotFound)
    @app.errorhandler(errors.CronNotFound)
    @app.errorhandler(errors.EndpointNotFound)
    def not_found(exc: errors.SchedulerError) -> Response:
        return http.error_body(404, "not_found", str(exc))

    @app.errorhandler(errors.Conflict)
    def conflict(exc: errors.Conflict) -> Response:
        return http.error_body(409, "conflict", str(exc))

    @app.errorhandler(errors.StoreUnavailable)
    def unavailable(exc: errors.StoreUnavailable) -> Response:
        logger.warning("database unavailable: %s", exc, extra={"action": "store_unavailable"})
        response = http.error_body(503, "unavailable", "The database is unavailable; try again.")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = http.error_body(exc.code or 500, code, exc.description or exc.name)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> Response:
        logger.exception("unhandled error", extra={"action": "internal_error"})
        return http.error_body(500, "internal", "Internal error.")

"""The web process: create_app() wires settings, the database pool, routes and error bodies."""

from __future__ import annotations

import atexit
import logging
from typing import Any

from flask import Flask, Response, render_template
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from scheduler import config, errors, logs
from scheduler.storage import db, endpoints
from scheduler.web import api, group_commit, http, metrics, proxies
from scheduler.web.dashboard import actions as dashboard_actions  # noqa: F401 (adds views to bp)
from scheduler.web.dashboard import auth as dashboard_auth
from scheduler.web.dashboard import blueprint as dashboard
from scheduler.web.dashboard import pages as dashboard_pages  # noqa: F401 (adds views to bp)

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
# Headers of an HTTPException that its error body keeps.
KEPT_ERROR_HEADERS = ("Allow", "Retry-After")


def create_app(settings: config.Settings | None = None) -> Flask:
    """Build the app; opens this process's database pool, so call it after gunicorn forks."""
    settings = settings or config.Settings.from_env()
    logs.configure_logging(settings.log_level, settings.log_format)
    app = Flask(__name__, static_folder=None)
    # Werkzeug would answer /cron//x with a redirect to /cron/x whose body is an HTML page, which
    # Flask sends past every error handler; without it the path is a JSON 404.
    app.url_map.merge_slashes = False
    app.config["SETTINGS"] = settings
    pool = db.open_pool(
        settings.database_url,
        settings.web_pool_size,
        name="web",
        pooled=settings.transaction_pooled,
    )
    atexit.register(pool.close)
    database = db.Database(pool)
    app.extensions["scheduler.database"] = database
    app.extensions["scheduler.group_commit"] = group_commit.GroupCommit(
        database, settings.announce_within
    )
    app.register_blueprint(api.bp)
    if settings.dashboard:
        app.register_blueprint(dashboard.bp)
    _register_error_handlers(app, settings.dashboard)
    _warn_of_unknown_endpoints(database, settings)
    metrics.init_web_metrics(app, settings)
    # Outermost, so that everything after it (metrics' refusals too) sees the real client.
    app.wsgi_app = proxies.TrustedProxies(  # type: ignore[method-assign]
        app.wsgi_app, settings.trusted_proxies
    )
    return app


def _warn_of_unknown_endpoints(database: db.Database, settings: config.Settings) -> None:
    try:
        unknown = endpoints.unknown_endpoints(database, list(settings.endpoints))
    except errors.StoreUnavailable:
        return
    if unknown:
        logger.warning(
            "jobs or crons name endpoints this process does not know: %s (SCHEDULER_ENDPOINTS)",
            ", ".join(unknown),
            extra={"action": "unknown_endpoints"},
        )


def _error_page(status: int, message: str) -> Response:
    """The dashboard's HTML answer for an error: its URLs answer HTML, errors included."""
    title = HTTP_STATUS_CODES.get(status, "Error")
    page = render_template("dashboard/error.html", status=status, title=title, message=message)
    return Response(page, status=status, mimetype="text/html")


def _register_error_handlers(app: Flask, dashboard_on: bool) -> None:
    def answer(
        status: int,
        code: str,
        message: str,
        fields: dict[Any, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        if dashboard_on and dashboard_auth.is_dashboard_request():
            response = _error_page(status, message)
        else:
            response = http.error_body(status, code, message, fields)
        response.headers.update(headers or {})
        return response

    @app.errorhandler(http.RequestRejected)
    def rejected(exc: http.RequestRejected) -> Response:
        return answer(exc.status, exc.code, exc.message, exc.fields, exc.headers)

    @app.errorhandler(errors.InvalidValue)
    def invalid_value(exc: errors.InvalidValue) -> Response:
        # Validation should have refused the value first; this is the net under it.
        logger.warning("PostgreSQL refused a value: %s", exc, extra={"action": "invalid_value"})
        return answer(400, "invalid_request", f"PostgreSQL refused a value: {exc}.")

    @app.errorhandler(errors.JobNotFound)
    @app.errorhandler(errors.CronNotFound)
    @app.errorhandler(errors.EndpointNotFound)
    def not_found(exc: errors.SchedulerError) -> Response:
        return answer(404, "not_found", str(exc))

    @app.errorhandler(errors.Conflict)
    def conflict(exc: errors.Conflict) -> Response:
        fields = None if exc.field is None else {exc.field: [exc.field_message]}
        return answer(409, "conflict", str(exc), fields)

    @app.errorhandler(errors.StoreUnavailable)
    def unavailable(exc: errors.StoreUnavailable) -> Response:
        logger.warning("database unavailable: %s", exc, extra={"action": "store_unavailable"})
        return answer(
            503,
            "unavailable",
            "The database is unavailable; try again.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        kept = {name: value for name, value in exc.get_headers() if name in KEPT_ERROR_HEADERS}
        return answer(exc.code or 500, code, exc.description or exc.name, headers=kept)

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> Response:
        logger.exception("unhandled error", extra={"action": "internal_error"})
        return answer(500, "internal", "Internal error.")

"""Routes for the named endpoints: their limits, weights, pauses and what they hold.

Endpoint URLs come from the environment only (SCHEDULER_ENDPOINTS); the API changes how much
goes to an endpoint, never where, so a leaked secret cannot make the scheduler call an address of
the caller's choosing.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response

from scheduler import config, errors
from scheduler.storage import endpoints
from scheduler.web import http, openapi, schemas

logger = logging.getLogger(__name__)

bp = Blueprint("endpoints", __name__, url_prefix="/endpoints")

NO_ENDPOINT = "No endpoint of that name is configured."


def describe(endpoint: config.Endpoint, figures: endpoints.EndpointFigures) -> dict[str, Any]:
    """An endpoint as the API shows it: the limits in force, wherever they were set, and its
    weight."""
    settings = http.settings()
    limits = figures.state.limits(settings.rate_limit, settings.max_in_flight)
    return {
        "name": endpoint.name,
        "url": endpoint.url,
        "rate_limit": limits.rate_limit,
        "max_in_flight": limits.max_in_flight,
        "weight": figures.state.weight_in_force,
        "paused": figures.state.paused,
        "in_flight": figures.in_flight,
        "due": figures.due,
    }


def configured(name: str) -> config.Endpoint:
    """:raise errors.EndpointNotFound: no endpoint of that name is configured."""
    endpoint = http.settings().endpoints.get(name)
    if endpoint is None:
        raise errors.EndpointNotFound(name)
    return endpoint


def one_endpoint(name: str) -> Response:
    endpoint = configured(name)
    (figures,) = endpoints.endpoint_figures(http.database(), [name])
    return http.dump(schemas.EndpointSchema, describe(endpoint, figures))


@bp.get("")
@openapi.operation(
    summary="Every configured endpoint: the limits in force, weight, paused, in flight and due.",
    tag="endpoints",
    responses={200: openapi.returns(schemas.EndpointsResponse, "Endpoints.")},
)
def list_endpoints() -> Response:
    known = http.settings().endpoints
    listed = [
        describe(known[figures.state.name], figures)
        for figures in endpoints.endpoint_figures(http.database(), list(known))
    ]
    return http.dump(schemas.EndpointsResponse, {"endpoints": listed})


@bp.get("/<name>")
@openapi.operation(
    summary="One endpoint.",
    tag="endpoints",
    parameters=[openapi.ENDPOINT_NAME],
    responses={200: openapi.returns(schemas.EndpointSchema, "The endpoint.")},
    errors={404: NO_ENDPOINT},
)
def get_endpoint(name: str) -> Response:
    return one_endpoint(name)


@bp.patch("/<name>")
@openapi.operation(
    summary="Change an endpoint's limits or weight at run time (a field left out is unchanged; "
    "null: unlimited, or for the weight the default). Limits win over SCHEDULER_RATE_LIMIT and "
    "SCHEDULER_MAX_IN_FLIGHT; both hold on every dispatcher within a second.",
    tag="endpoints",
    request=schemas.PatchEndpointSchema,
    parameters=[openapi.ENDPOINT_NAME],
    responses={200: openapi.returns(schemas.EndpointSchema, "The endpoint.")},
    errors={400: openapi.INVALID, 404: NO_ENDPOINT},
)
def patch_endpoint(name: str) -> Response:
    configured(name)
    limits = http.load(schemas.PatchEndpointSchema, http.json_body())
    endpoints.set_endpoint_limits(http.database(), name, limits)
    logger.info(
        "endpoint %s set: %s",
        name,
        ", ".join(f"{key}={value}" for key, value in sorted(limits.items())),
        extra={"action": "set_endpoint_limits", "endpoint": name},
    )
    return one_endpoint(name)


@bp.post("/<name>/reset")
@openapi.operation(
    summary="Return an endpoint to the environment's limits (its weight stays as set).",
    tag="endpoints",
    parameters=[openapi.ENDPOINT_NAME],
    responses={200: openapi.returns(schemas.EndpointSchema, "The endpoint.")},
    errors={404: NO_ENDPOINT},
)
def reset_endpoint(name: str) -> Response:
    configured(name)
    endpoints.reset_endpoint_limits(http.database(), name)
    logger.info(
        "endpoint %s limits reset", name, extra={"action": "reset_endpoint", "endpoint": name}
    )
    return one_endpoint(name)


@bp.post("/<name>/pause")
@openapi.operation(
    summary="Hold an endpoint's deliveries (jobs stay scheduled, cron ticks are recorded).",
    tag="endpoints",
    parameters=[openapi.ENDPOINT_NAME],
    responses={200: openapi.returns(schemas.EndpointSchema, "Paused.")},
    errors={404: NO_ENDPOINT},
)
def pause_endpoint(name: str) -> Response:
    return set_paused(name, paused=True)


@bp.post("/<name>/resume")
@openapi.operation(
    summary="Deliver again, in due order and within the limits.",
    tag="endpoints",
    parameters=[openapi.ENDPOINT_NAME],
    responses={200: openapi.returns(schemas.EndpointSchema, "Resumed.")},
    errors={404: NO_ENDPOINT},
)
def resume_endpoint(name: str) -> Response:
    return set_paused(name, paused=False)


def set_paused(name: str, paused: bool) -> Response:
    configured(name)
    endpoints.set_endpoint_paused(http.database(), name, paused)
    done = "paused" if paused else "resumed"
    action = "pause_endpoint" if paused else "resume_endpoint"
    logger.info("endpoint %s %s", name, done, extra={"action": action, "endpoint": name})
    return one_endpoint(name)

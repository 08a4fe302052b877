"""The flow-control keys of an endpoint, with what each has waiting (docs/api.md, "Flow control").

Keys are made by the jobs that name them; this route only reads them.
"""

from __future__ import annotations

from flask import Blueprint, Response

from scheduler.storage import flows
from scheduler.web import endpoint_routes, http, openapi, schemas

bp = Blueprint("flows", __name__, url_prefix="/endpoints")


@bp.get("/<name>/flows")
@openapi.operation(
    summary=f"The endpoint's {schemas.FLOWS_LISTED} flow keys with the most jobs due, with their "
    "limits and what each has in flight.",
    tag="endpoints",
    parameters=[openapi.ENDPOINT_NAME],
    responses={200: openapi.returns(schemas.FlowsResponse, "Flow keys, most due first.")},
    errors={404: endpoint_routes.NO_ENDPOINT},
)
def list_flows(name: str) -> Response:
    endpoint_routes.configured(name)
    listed = flows.flow_figures(http.database(), name, schemas.FLOWS_LISTED, schemas.MAX_FLOW_DUE)
    return http.dump(schemas.FlowsResponse, {"flows": listed})

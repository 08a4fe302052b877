"""The OpenAPI builder: each rule of the blueprint is an operation its view declares, and a view
that declares none stops the build (test_openapi.py checks the real app against its document)."""

from __future__ import annotations

import pytest
from flask import Blueprint, Response

from scheduler.web import openapi

THING_ID = {**openapi.JOB_ID, "name": "thing_id"}


def things() -> Blueprint:
    """A blueprint of one declared view, nested as the API's route modules are."""
    outer = Blueprint("outer", __name__)
    inner = Blueprint("things", __name__, url_prefix="/things")

    @inner.get("/<thing_id>")
    @openapi.operation(
        summary="One thing.",
        tag="jobs",
        parameters=[THING_ID],
        responses={200: openapi.EMPTY},
        errors={404: "No such thing."},
    )
    def get_thing(thing_id: str) -> Response:
        return Response(status=200)

    outer.register_blueprint(inner)
    return outer


def test_paths_methods_and_operation_ids_come_from_the_rules() -> None:
    paths = openapi.document(things())["paths"]
    assert list(paths) == ["/things/{thing_id}"]
    operation = paths["/things/{thing_id}"]["get"]
    assert operation["operationId"] == "outer.things.get_thing"
    assert operation["summary"] == "One thing."
    assert operation["security"] == openapi.SECURITY
    # A route behind the secret may also answer 401, and 503 when the database is unavailable.
    assert sorted(operation["responses"]) == ["200", "401", "404", "503"]
    assert operation["responses"]["404"]["description"] == "No such thing."


def test_a_route_without_a_declaration_stops_the_build() -> None:
    api = things()

    @api.delete("/things/<thing_id>")
    def delete_thing(thing_id: str) -> Response:
        return Response(status=204)

    with pytest.raises(openapi.UndocumentedRoute, match=r"outer\.delete_thing \(/things/"):
        openapi.document(api)


def test_a_view_serving_two_methods_stops_the_build() -> None:
    api = things()

    @api.route("/both", methods=["GET", "POST"])
    @openapi.operation(summary="Two at once.", tag="jobs", responses={200: openapi.EMPTY})
    def both() -> Response:
        return Response(status=200)

    with pytest.raises(ValueError, match=r"outer\.both serves \['GET', 'POST'\]"):
        openapi.document(api)

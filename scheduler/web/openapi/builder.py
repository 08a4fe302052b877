"""The document, built from the API blueprint's URL rules and the operation each view declares."""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask

from scheduler import __version__, config
from scheduler.web import formats, http
from scheduler.web.openapi import components, declarations

SECURITY_SCHEME = "SchedulerSecret"
SECURITY: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
# Werkzeug adds HEAD to every GET rule and OPTIONS to every rule; neither is documented.
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}
ACCEPT_ENCODING = {
    "description": "`identity`: the body must be sent as it is.",
    "required": True,
    "schema": {"type": "string"},
}


class UndocumentedRoute(LookupError):
    """An API route whose view declares no operation."""

    def __init__(self, endpoint: str, rule: str) -> None:
        super().__init__(
            f"{endpoint} ({rule}) declares no operation: add @openapi.operation(...) under its "
            "route decorator"
        )
        self.endpoint = endpoint


def _operation(endpoint: str, declared: declarations.Operation) -> dict[str, Any]:
    """One operation object, afresh: apispec edits the operations it is given in place."""
    public = endpoint in http.PUBLIC_ENDPOINTS
    errors = dict(declared.errors)
    if not public:
        errors.setdefault(401, declarations.ERROR_MEANINGS[401])
        errors.setdefault(503, declarations.ERROR_MEANINGS[503])
    if declared.request:
        errors.setdefault(413, declarations.ERROR_MEANINGS[413])
        errors.setdefault(415, declarations.ERROR_MEANINGS[415])
    responses = {str(status): answer for status, answer in declared.responses.items()}
    for status, why in sorted(errors.items()):
        responses[str(status)] = declarations.returns(components.ErrorResponse, why)
    # Retry-After comes with the database's 503, which a public route (/readyz) does not give.
    if not public:
        responses["503"]["headers"] = {"Retry-After": RETRY_AFTER}
    operation: dict[str, Any] = {
        "operationId": endpoint,
        "summary": declared.summary,
        "tags": [declared.tag],
        "responses": responses,
        "security": [] if public else SECURITY,
    }
    if declared.request:
        media_type: dict[str, Any] = {"schema": declared.request}
        if declared.examples:
            media_type["examples"] = {
                name: {"value": value} for name, value in declared.examples.items()
            }
        operation["requestBody"] = {"required": True, "content": {declarations.JSON: media_type}}
        responses["415"]["headers"] = {"Accept-Encoding": ACCEPT_ENCODING}
    if declared.parameters:
        operation["parameters"] = list(declared.parameters)
    return copy.deepcopy(operation)


def _paths(api: Blueprint) -> dict[str, dict[str, Any]]:
    """Every route of the blueprint, by path and method, from its view's declaration.

    :raise UndocumentedRoute: a view declares no operation.
    """
    app = Flask(__name__, static_folder=None)
    app.register_blueprint(api)
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        declared = getattr(app.view_functions[rule.endpoint], declarations.DECLARATION, None)
        if not isinstance(declared, declarations.Operation):
            raise UndocumentedRoute(rule.endpoint, rule.rule)
        methods = sorted((rule.methods or set()) - IMPLICIT_METHODS)
        if len(methods) != 1:
            # The operationId is the endpoint, and two operations cannot share one.
            raise ValueError(f"{rule.endpoint} serves {methods}: give each method its own view")
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        paths.setdefault(path, {})[methods[0].lower()] = _operation(rule.endpoint, declared)
    return paths


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without the null that `load_default=None` implies: a query
    string has no null, only an absent parameter."""
    schema = {k: v for k, v in schema.items() if not (k == "default" and v is None)}
    if isinstance(schema.get("type"), list):
        types = [t for t in schema["type"] if t != "null"]
        schema["type"] = types[0] if len(types) == 1 else types
    if "enum" in schema:
        schema["enum"] = [v for v in schema["enum"] if v is not None]
    return schema


def _refine(document: dict[str, Any]) -> dict[str, Any]:
    """What marshmallow's fields cannot say on their own."""
    component_schemas = document["components"]["schemas"]
    for name in components.RESPONSE_COMPONENTS:
        optional = components.OPTIONAL_PROPERTIES.get(name, set())
        properties = set(component_schemas[name]["properties"]) - optional
        component_schemas[name]["required"] = sorted(properties)
    for name in ("JobSpec", "InsertJob"):
        component_schemas[name]["oneOf"] = components.ONE_OF_WHEN
        component_schemas[name]["description"] = (
            "Give exactly one of `timestamp`, `delay` and `debounce`."
        )
    component_schemas["PatchJob"].update(components.EDIT_RULES)
    batch = component_schemas["Batch"]["properties"]["jobs"]
    batch["minItems"] = 1
    batch["description"] = (
        f"1 to SCHEDULER_BATCH_LIMIT (by default {config.DEFAULT_BATCH_LIMIT}) jobs; "
        "invalid items are reported by their index."
    )
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    parameter["schema"] = _without_null(parameter["schema"])
                    if parameter["name"] in declarations.QUERY_EXAMPLES:
                        parameter["example"] = declarations.QUERY_EXAMPLES[parameter["name"]]
    return document


@functools.cache
def document(api: Blueprint) -> dict[str, Any]:
    """The document of every route the blueprint registers; built once per process.

    :raise UndocumentedRoute: a view declares no operation.
    """
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="scheduler",
        version=__version__,
        openapi_version="3.1.0",
        plugins=[plugin],
        info={
            "description": "HTTP callbacks at the time you asked for. Every non-2xx answer has "
            "the JSON body of the `Error` schema; see docs/api.md.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        security=SECURITY,
        tags=[
            {"name": "jobs", "description": "One-off callbacks."},
            {"name": "crons", "description": "Recurring callbacks."},
            {"name": "endpoints", "description": "Where deliveries go, and how fast."},
            {"name": "dispatchers", "description": "The processes that send deliveries."},
            {"name": "health", "description": "Probes and this document; no secret needed."},
        ],
    )
    plugin.map_to_openapi_type(formats.Timestamp, "string", "date-time")
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(components.describe_custom_field)
    spec.components.security_scheme(
        SECURITY_SCHEME,
        {
            "type": "apiKey",
            "in": "header",
            "name": http.SECRET_HEADER,
            "description": "One of the comma-separated values of SECRET.",
        },
    )
    for name, schema in components.COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    for path, operations in _paths(api).items():
        spec.path(path=path, operations=operations)
    # A round trip through JSON: plain data, no shared sub-objects, nothing unserialisable.
    built: dict[str, Any] = json.loads(json.dumps(spec.to_dict()))
    return _refine(built)


def render(api: Blueprint) -> str:
    """The document as committed in docs/openapi.json."""
    return json.dumps(document(api), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

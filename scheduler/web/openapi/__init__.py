"""The OpenAPI 3.1 document, built from the operation each API view declares beside itself.

A view declares its operation with `@openapi.operation(...)` under its route decorator; `document()`
walks the URL rules of the API blueprint, so each operation's path and method are its rule's and its
`operationId` is the Flask endpoint that serves it (the tests match the document against the app's
URL map rule by rule), and a view that declares nothing stops the build. The package keeps, in
`declarations`, what views declare and share (the decorator, the error responses, the common
parameters and examples); in `components`, the components built from the marshmallow schemas in
web.schemas; and in `builder`, the document itself and the security scheme. Its names are all
importable from here, where the views find them.

`GET /openapi.json` serves the document; `python -m scheduler.web.openapi > docs/openapi.json`
rewrites the committed copy (tests/integration/test_openapi.py checks that the two agree).
"""

from __future__ import annotations

from scheduler.web.openapi.builder import ACCEPT_ENCODING as ACCEPT_ENCODING
from scheduler.web.openapi.builder import IMPLICIT_METHODS as IMPLICIT_METHODS
from scheduler.web.openapi.builder import RETRY_AFTER as RETRY_AFTER
from scheduler.web.openapi.builder import SECURITY as SECURITY
from scheduler.web.openapi.builder import SECURITY_SCHEME as SECURITY_SCHEME
from scheduler.web.openapi.builder import UndocumentedRoute as UndocumentedRoute
from scheduler.web.openapi.builder import document as document
from scheduler.web.openapi.builder import render as render
from scheduler.web.openapi.components import COMPONENTS as COMPONENTS
from scheduler.web.openapi.components import DURATION_PATTERN as DURATION_PATTERN
from scheduler.web.openapi.components import ID_LENGTH as ID_LENGTH
from scheduler.web.openapi.components import ID_PATTERN as ID_PATTERN
from scheduler.web.openapi.components import ONE_OF_WHEN as ONE_OF_WHEN
from scheduler.web.openapi.components import RESPONSE_COMPONENTS as RESPONSE_COMPONENTS
from scheduler.web.openapi.components import TIMESTAMP_DESCRIPTION as TIMESTAMP_DESCRIPTION
from scheduler.web.openapi.components import ErrorDetail as ErrorDetail
from scheduler.web.openapi.components import ErrorResponse as ErrorResponse
from scheduler.web.openapi.components import describe_custom_field as describe_custom_field
from scheduler.web.openapi.components import ecma_pattern as ecma_pattern
from scheduler.web.openapi.declarations import CRON_ID as CRON_ID
from scheduler.web.openapi.declarations import DECLARATION as DECLARATION
from scheduler.web.openapi.declarations import EMPTY as EMPTY
from scheduler.web.openapi.declarations import ENDPOINT_NAME as ENDPOINT_NAME
from scheduler.web.openapi.declarations import ERROR_MEANINGS as ERROR_MEANINGS
from scheduler.web.openapi.declarations import EXAMPLE_CRON_ID as EXAMPLE_CRON_ID
from scheduler.web.openapi.declarations import EXAMPLE_JOB_ID as EXAMPLE_JOB_ID
from scheduler.web.openapi.declarations import EXAMPLE_SPEC as EXAMPLE_SPEC
from scheduler.web.openapi.declarations import EXAMPLE_TIME as EXAMPLE_TIME
from scheduler.web.openapi.declarations import IDEMPOTENCY_KEY as IDEMPOTENCY_KEY
from scheduler.web.openapi.declarations import INVALID as INVALID
from scheduler.web.openapi.declarations import JOB_ID as JOB_ID
from scheduler.web.openapi.declarations import JSON as JSON
from scheduler.web.openapi.declarations import NEW_CRON_ID as NEW_CRON_ID
from scheduler.web.openapi.declarations import NO_CONTENT as NO_CONTENT
from scheduler.web.openapi.declarations import QUERY_EXAMPLES as QUERY_EXAMPLES
from scheduler.web.openapi.declarations import REUSED_KEY as REUSED_KEY
from scheduler.web.openapi.declarations import TRACE_HEADERS as TRACE_HEADERS
from scheduler.web.openapi.declarations import Operation as Operation
from scheduler.web.openapi.declarations import View as View
from scheduler.web.openapi.declarations import operation as operation
from scheduler.web.openapi.declarations import query as query
from scheduler.web.openapi.declarations import returns as returns

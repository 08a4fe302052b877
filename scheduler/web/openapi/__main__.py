"""`python -m scheduler.web.openapi`: print the document, as committed in docs/openapi.json."""

from __future__ import annotations

from scheduler.web import api, openapi

print(openapi.render(api.bp), end="")

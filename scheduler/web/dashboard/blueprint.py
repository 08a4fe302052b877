"""The dashboard's blueprint: its URL prefix, templates and static files."""

from __future__ import annotations

from flask import Blueprint

PREFIX = "/ui"

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix=PREFIX,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

"""The dashboard's pages: what a browser GETs."""

from __future__ import annotations

from flask import render_template

from scheduler.web.dashboard.blueprint import bp


@bp.get("/")
def overview() -> str:
    return render_template("dashboard/overview.html")

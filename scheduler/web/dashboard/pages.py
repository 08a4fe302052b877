"""The dashboard's pages: what a browser GETs. Every figure comes from the database, counted
through partial indexes up to a cap or estimated by the planner, never by a full count."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import urllib.parse
from typing import Any

from flask import abort, redirect, render_template, request, url_for
from marshmallow import ValidationError
from werkzeug.wrappers import Response

from scheduler import config, cron, errors, http_options, jobs, jsonb
from scheduler.storage import cluster, crons, endpoints, flows, outcomes
from scheduler.storage import jobs as job_rows
from scheduler.web import http, schemas
from scheduler.web.dashboard import chart, forms
from scheduler.web.dashboard.blueprint import bp

# Counts shown exactly up to this; above it the page says "10,000+".
COUNT_CAP = 10_000
NEXT_FIRE_TIMES = 5
CRONS_PER_PAGE = 100
RECENT_RUNS = 10


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@bp.app_template_filter("utc")
def format_time(moment: dt.datetime | None) -> str:
    """A time as the dashboard shows it: UTC, to the second."""
    if moment is None:
        return "—"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@bp.app_template_filter("capped")
def format_capped(count: int) -> str:
    return f"{COUNT_CAP:,}+" if count >= COUNT_CAP else f"{count:,}"


@bp.app_template_global()
def jobs_url(**filters: Any) -> str:
    """The job list with these filters."""
    return with_query("dashboard.jobs_page", **filters)


@bp.app_template_global()
def with_query(view: str, **query: Any) -> str:
    """A dashboard URL with a query string; built by hand because `endpoint`, a job filter, is
    url_for's own first argument."""
    given = {key: value for key, value in query.items() if value not in (None, "")}
    base = url_for(view)
    return f"{base}?{urllib.parse.urlencode(given)}" if given else base


@bp.get("/")
def overview() -> str:
    database = http.database()
    settings = http.settings()
    now = cluster.database_now(database)
    minutes = outcomes.delivery_minutes(database, chart.hour_start(now))
    return render_template(
        "dashboard/overview.html",
        activity=chart.activity(minutes, now),
        chart_width=chart.WIDTH,
        chart_height=chart.HEIGHT,
        chart_slot=chart.SLOT,
        states=job_rows.job_state_counts(database),
        all_states=jobs.JOB_STATES,
        due=job_rows.count_due(database, COUNT_CAP),
        delivering=job_rows.count_delivering(database, COUNT_CAP),
        dispatchers=cluster.list_dispatchers(database, settings.leader_timeout),
        endpoints=endpoints.endpoint_figures(database, list(settings.endpoints), due_cap=COUNT_CAP),
        default_limits=(settings.rate_limit, settings.max_in_flight),
        now=now,
    )


@bp.get("/failed")
def failed_page() -> str:
    """Failed jobs grouped by the kind of their last error, the largest group first."""
    groups = job_rows.failed_groups(http.database())
    described = [(group, jobs.describe_error_kind(group.kind)) for group in groups]
    return render_template("dashboard/failed.html", groups=described)


@bp.get("/jobs")
def jobs_page() -> str | tuple[str, int] | Response:
    wanted = request.args.get("id", "").strip()
    if wanted:
        if not schemas.ID_PATTERN.match(wanted):
            abort(404)
        return redirect(url_for("dashboard.job_page", job_id=wanted), 303)
    try:
        filters = forms.JobFilterForm().load_form(request.args.to_dict())
    except ValidationError as exc:
        return _job_list(None, request.args.to_dict(), forms.problems_of(exc)), 400
    return _job_list(filters, request.args.to_dict(), {})


def _job_list(
    filters: dict[str, Any] | None, given: dict[str, str], problems: dict[str, Any]
) -> str:
    found: list[jobs.JobRecord] = []
    if filters is not None:
        query = job_rows.JobFilters(limit=forms.PAGE_SIZE + 1, **filters)
        found = job_rows.list_jobs(http.database(), query)
    page = found[: forms.PAGE_SIZE]
    more = len(found) > forms.PAGE_SIZE
    kept = {key: value for key, value in given.items() if key != "cursor" and value}
    return render_template(
        "dashboard/jobs.html",
        jobs=page,
        given=given,
        problems=problems,
        states=jobs.JOB_STATES,
        endpoints=list(http.settings().endpoints),
        next_url=jobs_url(**kept, cursor=page[-1].id) if more else None,
        first_url=jobs_url(**kept) if given.get("cursor") else None,
        filter_args=kept,
        can_retry=filters is not None and filters["state"] in (None, "failed"),
    )


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    return render_job(job_id, {}, {})


def render_job(job_id: str, given: dict[str, str], problems: dict[str, Any]) -> str:
    """The job's page; with `problems`, its edit form shows them beside what was typed."""
    try:
        job, attempts = job_rows.get_job(http.database(), http.checked_id(job_id))
    except errors.JobNotFound:
        abort(404, f"No job has the id {job_id!r}.")
    body = jsonb.dumps(job.body, indent=2, ensure_ascii=False)
    shown = _job_form(job, body) if job.editable else {}
    # After a refused edit, what the page showed first stays what the inputs compare with.
    was = {name: given.get(f"was_{name}", value) for name, value in shown.items()}
    form = {name: given.get(name, value) for name, value in shown.items()}
    return render_template(
        "dashboard/job.html",
        job=job,
        attempts=attempts,
        body=body,
        form=form,
        was=was,
        problems=problems,
        endpoints=list(http.settings().endpoints),
        max_attempts_limit=config.MAX_ATTEMPTS_LIMIT,
        outgoing=request_view(job.endpoint, job.http_options, job.callback),
        message=message_view(job),
        methods=http_options.METHODS,
    )


def request_view(
    endpoint: str, options: jobs.HttpOptions | None, callback: str | None
) -> dict[str, Any]:
    """How a job (or each run of a cron) is sent, as GET /jobs/<id> shows it: secret header
    values redacted, and no password of the endpoint's URL."""
    options = options or jobs.HttpOptions()
    configured = http.settings().endpoints.get(endpoint)
    target = None
    if configured is not None:
        target = _without_password(http_options.join_url(configured.url, options.path))
    retry = None
    if options.retry_base is not None and options.retry_cap is not None:
        retry = (options.retry_base, options.retry_cap)
    return {
        "method": options.method or http_options.DEFAULT_METHOD,
        "target": target,
        "path": options.path,
        "headers": http_options.redact(dict(options.headers)),
        "timeout": options.timeout,
        "retry": retry,
        "callback": callback,
    }


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}:{http_options.REDACTED}@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def message_view(job: jobs.JobRecord) -> dict[str, Any] | None:
    """What a job the scheduler made says, and of which job: a callback (its body has a
    `response`, outcomes.sql) or a failure notification; None for any other job."""
    if job.event is None:
        return None
    body = job.body if isinstance(job.body, dict) else {}
    about = body.get("job")
    about_id = about.get("id") if isinstance(about, dict) else None
    if not isinstance(about_id, str) or not schemas.ID_PATTERN.match(about_id):
        about_id = None
    return {
        "event": job.event,
        "kind": "callback" if "response" in body else "failure notification",
        "about": about_id,
    }


def _job_form(job: jobs.JobRecord, body: str) -> dict[str, str]:
    """The edit form's inputs as the job is now: its next attempt's time, to the microsecond."""
    flow = None
    if job.flow_key is not None:
        flow = flows.flow_limits(http.database(), job.endpoint, job.flow_key)
    rate = None if flow is None else flow.rate_limit
    in_flight = None if flow is None else flow.max_in_flight
    options = job.http_options
    return {
        "timestamp": schemas.format_timestamp(job.next_attempt_at),
        "body": body,
        "max_attempts": str(job.max_attempts),
        "endpoint": job.endpoint,
        "flow_key": job.flow_key or "",
        "flow_rate": "" if rate is None else f"{rate:g}",
        "flow_max_in_flight": "" if in_flight is None else str(in_flight),
        "path": (options.path if options else None) or "",
        "method": (options.method if options else None) or http_options.DEFAULT_METHOD,
        "timeout": "" if options is None or options.timeout is None else f"{options.timeout:g}",
    }


@bp.get("/endpoints/<name>/flows")
def flows_page(name: str) -> str:
    """An endpoint's flow keys with the most due jobs, as GET /endpoints/<name>/flows lists
    them."""
    if name not in http.settings().endpoints:
        abort(404)
    listed = flows.flow_figures(http.database(), name, schemas.FLOWS_LISTED, schemas.MAX_FLOW_DUE)
    return render_template(
        "dashboard/flows.html",
        endpoint=name,
        flows=listed,
        listed_at_most=schemas.FLOWS_LISTED,
        due_cap=schemas.MAX_FLOW_DUE,
    )


@bp.get("/crons")
def crons_page() -> str:
    after = request.args.get("after") or None
    if after is not None and not schemas.ID_PATTERN.match(after):
        abort(400, "'after' is not a cron id.")
    found = crons.cron_statuses(http.database(), after=after, limit=CRONS_PER_PAGE + 1)
    now = _now()
    listed = [_cron_view(status, now) for status in found[:CRONS_PER_PAGE]]
    more = len(found) > CRONS_PER_PAGE
    return render_template(
        "dashboard/crons.html",
        crons=listed,
        next_url=with_query("dashboard.crons_page", after=listed[-1]["cron"].id) if more else None,
        first_url=url_for("dashboard.crons_page") if after else None,
    )


# A cron's spec put in words once per process, not once per row per view: it costs a millisecond
# or so, and specs change rarely (cron.parse_spec keeps its parses too). MAX_CRONS bounds how many.
@functools.lru_cache(maxsize=schemas.MAX_CRONS)
def _in_words(spec: str) -> str:
    return cron.describe(cron.parse_spec(spec))


def _cron_view(status: jobs.CronStatus, now: dt.datetime, upcoming: int = 1) -> dict[str, Any]:
    job = status.cron
    parsed = cron.parse_spec(job.spec)
    count = upcoming if job.runs_left is None else min(upcoming, job.runs_left)
    times = (
        cron.bounded_fire_times(parsed, now, count, job.start_at, job.end_at)
        if job.state == "active"
        else []
    )
    return {
        "cron": status.cron,
        "words": _in_words(status.cron.spec),
        "next": times,
        "never_fires": parsed.never_fires,
        "last_state": status.last_state,
        "last_status": status.last_status,
    }


@bp.get("/crons/<cron_id>")
def cron_page(cron_id: str) -> str:
    return render_cron(cron_id, {}, {})


def render_cron(cron_id: str, given: dict[str, Any], problems: dict[str, Any]) -> str:
    """The cron's page; with `problems`, the edit form shows them beside what was typed."""
    if not schemas.ID_PATTERN.match(cron_id):
        abort(404)
    statuses = crons.cron_statuses(http.database(), cron_id)
    if not statuses:
        abort(404, f"No cron has the id {cron_id!r}.")
    view = _cron_view(statuses[0], _now(), NEXT_FIRE_TIMES)
    runs = job_rows.list_jobs(
        http.database(), job_rows.JobFilters(limit=RECENT_RUNS, cron_id=cron_id)
    )
    current = statuses[0].cron
    form = {
        "spec": cron.split_zone(current.spec)[1],
        "timezone": current.timezone,
        "endpoint": current.endpoint,
        "jitter": f"{current.jitter:g}",
        "overlap": current.overlap,
        **given,
    }
    return render_template(
        "dashboard/cron.html",
        view=view,
        runs=runs,
        form=form,
        problems=problems,
        endpoints=list(http.settings().endpoints),
        overlaps=jobs.OVERLAP_POLICIES,
        outgoing=request_view(current.endpoint, current.http_options, current.callback),
    )


def filter_summary(filters: dict[str, Any]) -> list[tuple[str, str]]:
    """The filters in force, as (label, value) pairs for a confirmation page."""
    labels = {
        "cron_id": "cron",
        "endpoint": "endpoint",
        "error_kind": "last error",
        "after": "due from",
        "before": "due before",
    }
    shown = []
    for key, label in labels.items():
        value = filters.get(key)
        if value is not None:
            shown.append((label, format_time(value) if isinstance(value, dt.datetime) else value))
    return shown


def bulk_filters(filters: dict[str, Any], as_of: dt.datetime) -> job_rows.BulkFilters:
    fields = {f.name for f in dataclasses.fields(job_rows.BulkFilters)} - {"as_of"}
    return job_rows.BulkFilters(as_of=as_of, **{k: v for k, v in filters.items() if k in fields})

"""The dashboard's actions: what a browser POSTs. Each one is logged with the session that took it
(auth.audit) and ends in a redirect, so reloading the page never repeats it; bulk actions first
show a confirmation that states how many jobs they will touch."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from flask import abort, redirect, render_template, request, url_for
from marshmallow import ValidationError
from werkzeug.wrappers import Response

from scheduler import errors, jobs
from scheduler.storage import cluster, crons
from scheduler.storage import jobs as job_rows
from scheduler.web import cron_routes, http, schemas
from scheduler.web.dashboard import auth, forms, pages
from scheduler.web.dashboard.blueprint import bp

logger = logging.getLogger(__name__)

# What a finished action says on the page it returns to: a fixed text per action, so a link
# cannot make the dashboard show words of someone else's choosing.
DONE_MESSAGES = {
    "run": "The job runs now.",
    "retried": "The job was re-queued.",
    "cancelled": "The job was cancelled.",
    "job_saved": "The job was saved.",
    "cancel_requested": "The job will be cancelled when its attempt in flight ends (or "
    "delivered, if that attempt delivers it); no other attempt starts.",
    "bulk_retried": "{count:,} failed jobs were re-queued.",
    "bulk_cancelled": "{count:,} jobs were cancelled.",
    "paused": "The cron is paused.",
    "resumed": "The cron is resumed.",
    "cron_run": "The cron runs now, as a new job.",
    "cron_saved": "The cron was saved.",
    "cron_deleted": "The cron was deleted.",
}


@bp.app_template_global()
def done_message() -> str | None:
    """The message for the action that led here, if any."""
    template = DONE_MESSAGES.get(request.args.get("done", ""))
    if template is None:
        return None
    count = request.args.get("count", "")
    return template.format(count=int(count) if count.isdecimal() else 0)


def _back(endpoint: str, done: str, **values: Any) -> Response:
    return redirect(url_for(endpoint, done=done, **values), 303)


def _job_action(job_id: str, act: Any, action: str, done: str) -> Response:
    job_id = http.checked_id(job_id)
    try:
        act(http.database(), job_id)
    except errors.JobNotFound:
        abort(404, f"No job has the id {job_id!r}.")
    except errors.Conflict as exc:
        abort(409, str(exc))
    auth.audit(action, 1, job_id=job_id)
    return _back("dashboard.job_page", done, job_id=job_id)


@bp.post("/jobs/<job_id>/run")
def run_job(job_id: str) -> Response:
    return _job_action(job_id, job_rows.run_job_now, "run_job", "run")


@bp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> Response:
    return _job_action(job_id, job_rows.retry_job, "retry_job", "retried")


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    job_id = http.checked_id(job_id)
    changed = job_rows.cancel_jobs(http.database(), [job_id])
    if not changed.total:
        abort(409, "Only a job waiting to be sent or being delivered can be cancelled, once.")
    auth.audit("cancel_job", 1, job_id=job_id)
    done = "cancelled" if changed.now else "cancel_requested"
    return _back("dashboard.job_page", done, job_id=job_id)


@bp.post("/jobs/<job_id>/edit")
def edit_job(job_id: str) -> tuple[str, int] | Response:
    """Change what the form changed, checked as PATCH /jobs/<id> checks it; problems are shown
    on the form beside what was typed."""
    job_id = http.checked_id(job_id)
    given = request.form.to_dict()
    try:
        changes = forms.job_changes(given)
        if not changes:
            raise ValidationError({"form": ["Nothing to save: no field was changed."]})
        edit = http.job_edit(schemas.PatchJobSchema().load(changes))
    except ValidationError as exc:
        return pages.render_job(job_id, given, _form_problems(forms.problems_of(exc))), 400
    except http.RequestRejected as exc:
        return pages.render_job(job_id, given, _form_problems(exc.fields or {})), exc.status
    try:
        job_rows.edit_job(
            http.database(), job_id, edit, announce_within=http.settings().announce_within
        )
    except errors.JobNotFound:
        abort(404, f"No job has the id {job_id!r}.")
    except errors.Conflict as exc:
        if exc.field is None:
            abort(409, str(exc))
        return pages.render_job(job_id, given, {exc.field: [exc.field_message]}), 409
    auth.audit("edit_job", 1, job_id=job_id, changed=sorted(changes))
    return _back("dashboard.job_page", "job_saved", job_id=job_id)


def _form_problems(problems: dict[str, Any]) -> dict[str, Any]:
    """The API's problems by the form's inputs: those of `flow` by its three inputs."""
    shown = {name: messages for name, messages in problems.items() if name != "flow"}
    flow = problems.get("flow", {})
    if isinstance(flow, dict):
        for field, messages in flow.items():
            shown[f"flow_{field}"] = messages
    else:
        shown["flow_key"] = flow
    return shown


@bp.get("/jobs/retry")
def confirm_bulk_retry() -> str:
    """How many failed jobs a retry with the list's filters would take, as of now."""
    try:
        filters = forms.JobFilterForm().load_form(request.args.to_dict())
    except ValidationError as exc:
        abort(400, _problems_text(exc))
    as_of = cluster.database_now(http.database())
    matching = job_rows.count_failed_matching(
        http.database(), pages.bulk_filters(filters, as_of), forms.MAX_BULK_RETRY + 1
    )
    return render_template(
        "dashboard/confirm_retry.html",
        count=min(matching, forms.MAX_BULK_RETRY),
        more=matching > forms.MAX_BULK_RETRY,
        cap=forms.MAX_BULK_RETRY,
        as_of=as_of.isoformat(),
        summary=pages.filter_summary(filters),
        filters={k: v for k, v in request.args.to_dict().items() if k not in ("cursor", "state")},
    )


@bp.post("/jobs/retry")
def bulk_retry() -> Response:
    """Retry, in batches, the failed jobs the confirmation counted: those matching its filters
    that had failed by then, newest first, at most MAX_BULK_RETRY."""
    try:
        form = forms.BulkRetryForm().load_form(request.form.to_dict())
    except ValidationError as exc:
        abort(400, _problems_text(exc))
    filters = pages.bulk_filters(form, form["as_of"])
    retried = 0
    while retried < forms.MAX_BULK_RETRY:
        batch = min(forms.RETRY_BATCH, forms.MAX_BULK_RETRY - retried)
        done = job_rows.retry_failed_batch(http.database(), filters, batch)
        retried += done
        if done < batch:
            break
    auth.audit("bulk_retry", retried, filters=pages.filter_summary(form))
    kept = {k: v for k, v in request.form.to_dict().items() if k in _LIST_FILTERS}
    url = pages.jobs_url(**kept, state="failed", done="bulk_retried", count=retried)
    return redirect(url, 303)


_LIST_FILTERS = ("cron_id", "endpoint", "error_kind", "after", "before")


@bp.post("/jobs/cancel")
def bulk_cancel() -> str | Response:
    """Cancel the jobs selected on a page of the list; the first POST shows how many of them can
    still be cancelled, and only a POST with `confirmed` acts."""
    try:
        selected = forms.SelectedJobsForm().load({"ids": request.form.getlist("ids")})["ids"]
    except ValidationError as exc:
        abort(400, _problems_text(exc))
    if request.form.get("confirmed") != "yes":
        waiting = [job for job in _jobs_by_id(selected) if job.cancellable]
        return render_template(
            "dashboard/confirm_cancel.html", jobs=waiting, selected=len(selected)
        )
    cancelled = job_rows.cancel_jobs(http.database(), selected).total
    auth.audit("bulk_cancel", cancelled, selected=len(selected))
    return _back("dashboard.jobs_page", "bulk_cancelled", count=cancelled)


def _jobs_by_id(job_ids: list[str]) -> list[jobs.JobRecord]:
    found = []
    for job_id in dict.fromkeys(job_ids):
        try:
            found.append(job_rows.get_job(http.database(), job_id)[0])
        except errors.JobNotFound:
            continue
    return found


def _problems_text(exc: ValidationError) -> str:
    problems = forms.problems_of(exc).items()
    return "; ".join(f"{field}: {' '.join(map(str, problem))}" for field, problem in problems)


def _cron_action(cron_id: str, act: Any, action: str, done: str) -> Response:
    cron_id = cron_routes.checked_cron_id(cron_id)
    try:
        act(cron_id)
    except errors.CronNotFound:
        abort(404, f"No cron has the id {cron_id!r}.")
    auth.audit(action, 1, cron_id=cron_id)
    return _back("dashboard.cron_page", done, cron_id=cron_id)


@bp.post("/crons/<cron_id>/pause")
def pause_cron(cron_id: str) -> Response:
    return _cron_action(
        cron_id,
        lambda c: crons.set_cron_paused(http.database(), c, paused=True),
        "pause_cron",
        "paused",
    )


@bp.post("/crons/<cron_id>/resume")
def resume_cron(cron_id: str) -> Response:
    return _cron_action(
        cron_id,
        lambda c: crons.set_cron_paused(http.database(), c, paused=False),
        "resume_cron",
        "resumed",
    )


@bp.post("/crons/<cron_id>/run")
def run_cron(cron_id: str) -> Response:
    def run(checked: str) -> None:
        crons.run_cron_now(
            http.database(), checked, jobs.new_job_id(), http.settings().max_attempts
        )

    return _cron_action(cron_id, run, "run_cron", "cron_run")


@bp.get("/crons/<cron_id>/delete")
def confirm_delete_cron(cron_id: str) -> str:
    cron_id = cron_routes.checked_cron_id(cron_id)
    if not crons.cron_statuses(http.database(), cron_id):
        abort(404, f"No cron has the id {cron_id!r}.")
    return render_template("dashboard/confirm_delete_cron.html", cron_id=cron_id)


@bp.post("/crons/<cron_id>/delete")
def delete_cron(cron_id: str) -> Response:
    cron_id = cron_routes.checked_cron_id(cron_id)
    if not crons.delete_cron(http.database(), cron_id):
        abort(404, f"No cron has the id {cron_id!r}.")
    auth.audit("delete_cron", 1, cron_id=cron_id)
    return redirect(url_for("dashboard.crons_page", done="cron_deleted"), 303)


@bp.post("/crons/<cron_id>/edit")
def edit_cron(cron_id: str) -> tuple[str, int] | Response:
    """Replace the cron's definition, checked as PUT /cron/<id> checks it; problems are shown on
    the form beside what was typed."""
    cron_id = cron_routes.checked_cron_id(cron_id)
    given = request.form.to_dict()
    try:
        definition = cron_routes.definition_of(cron_id, forms.cron_edit(given))
    except ValidationError as exc:
        return pages.render_cron(cron_id, given, forms.problems_of(exc)), 400
    except http.RequestRejected as exc:
        return pages.render_cron(cron_id, given, exc.fields or {}), 400
    statuses = crons.cron_statuses(http.database(), cron_id)
    if not statuses:
        abort(404, f"No cron has the id {cron_id!r}.")
    # What the form does not show is kept as it is.
    kept = statuses[0].cron
    definition = dataclasses.replace(
        definition,
        flow=kept.flow,
        catchup_window=kept.catchup_window,
        start_at=kept.start_at,
        end_at=kept.end_at,
        max_runs=kept.max_runs,
        delete_after_end=kept.delete_after_end,
        http_options=kept.http_options,
        callback=kept.callback,
    )
    crons.put_cron(http.database(), definition)
    auth.audit("edit_cron", 1, cron_id=cron_id, spec=definition.spec)
    return _back("dashboard.cron_page", "cron_saved", cron_id=cron_id)

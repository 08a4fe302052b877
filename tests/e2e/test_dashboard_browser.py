"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright): log in,
visit every page, use every action, and fail on any console error, uncaught exception, dialog
or Content-Security-Policy violation. Each page's screenshot is saved (`make screenshots` keeps
them under docs/screenshots)."""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import re
import shutil
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SKIP_REASON = (
    "browser tests skipped: no Chromium on this machine (install Debian's package: "
    "apt-get install chromium; .ci/run does)"
)
# `make screenshots` points this at docs/screenshots; otherwise they go to a temporary folder.
SCREENSHOTS_VARIABLE = "DASHBOARD_SCREENSHOTS"

if CHROMIUM is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)

from playwright.sync_api import ConsoleMessage, Dialog, Page, expect, sync_playwright  # noqa: E402


class Problems:
    """What the browser reported that a clean page never causes."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.seen.append(f"console {message.type}: {message.text} at {message.location}")

    def expecting(self, status: int) -> Problems:
        """Forget the console line Chromium writes for a page answered with `status`, which the
        test asked for; anything else stays a problem."""
        marker = f"the server responded with a status of {status}"
        self.seen = [line for line in self.seen if marker not in line]
        return self

    def page_error(self, error: Exception) -> None:
        self.seen.append(f"uncaught: {error}")

    def dialog(self, dialog: Dialog) -> None:
        self.seen.append(f"dialog: {dialog.message}")
        dialog.dismiss()


@pytest.fixture
def screenshots(tmp_path: pathlib.Path) -> pathlib.Path:
    folder = pathlib.Path(os.environ.get(SCREENSHOTS_VARIABLE) or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser_page(system: System) -> Iterator[tuple[Page, Problems]]:
    problems = Problems()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on("console", problems.console)
        page.on("pageerror", problems.page_error)
        page.on("dialog", problems.dialog)
        yield page, problems
        context.close()
        browser.close()


def seed(system: System, db: psycopg.Connection[Any]) -> dict[str, Any]:
    """Jobs in every state the pages show, a cron, and a delivered job with its attempt."""
    delivered = system.insert("2020-01-01T00:00:00Z", {"order": 1})
    system.receiver.wait_for(1, timeout=30)
    support.wait_until(
        lambda: (
            db.execute("SELECT state FROM jobs WHERE id = %s", (delivered,)).fetchone()
            == ("delivered",)
        ),
        timeout=30,
    )
    waiting = [
        system.insert("2099-01-01T00:00:00Z", {"order": n, "note": "<script>alert(1)</script>"})
        for n in range(4)
    ]
    failed = [system.insert("2099-01-02T00:00:00Z", {"order": n}) for n in range(4)]
    db.execute(
        "UPDATE jobs SET state = 'failed', attempts = 3, max_attempts = 3, last_status = 503,"
        " last_error = 'HTTP 503', last_error_kind = 'http_503', finished_at = now() - interval '1 second' WHERE id = ANY(%s)",
        (failed,),
    )
    answer = system.call(
        "PUT", "/cron/nightly-report", {"spec": "0 30 2 * * *", "timezone": "Europe/Paris"}
    )
    assert answer.status_code == 200
    return {"delivered": delivered, "waiting": waiting, "failed": failed}


def expected_refusal(problems: Problems, status: int) -> None:
    """Chromium logs every answer of 4xx as a console error; this one was the point."""
    problems.expecting(status)


def check_page(page: Page, problems: Problems, folder: pathlib.Path, name: str) -> None:
    expect(page.locator("main")).to_be_visible()
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    assert not problems.seen, problems.seen


def submit(page: Page, button: str) -> None:
    page.get_by_role("button", name=button).click()
    page.wait_for_load_state()


def test_every_page_and_action_in_chromium(
    system: System,
    db: psycopg.Connection[Any],
    browser_page: tuple[Page, Problems],
    screenshots: pathlib.Path,
) -> None:
    system.start("web")
    system.start("worker")
    jobs = seed(system, db)
    page, problems = browser_page
    base = system.url

    page.goto(base + "/ui/jobs")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    check_page(page, problems, screenshots, "login")
    page.get_by_label("Secret").fill("not the secret")
    submit(page, "Log in")
    expect(page.locator("main")).to_contain_text("That is not the secret.")
    expected_refusal(problems, 403)
    page.get_by_label("Secret").fill(support.SECRET)
    submit(page, "Log in")
    expect(page).to_have_url(re.compile(r"/ui/jobs"))

    page.goto(base + "/ui/")
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator("main")).to_contain_text("leader")
    check_page(page, problems, screenshots, "overview")

    first, second = jobs["waiting"][:2]
    page.goto(base + f"/ui/jobs/{first}")
    expect(page.locator("pre.body")).to_contain_text("<script>alert(1)</script>")
    check_page(page, problems, screenshots, "job")
    submit(page, "Run now")
    expect(page.locator(".notice-ok")).to_have_text("The job runs now.")
    for _ in range(30):  # the running dispatcher sends it; the page shows it delivered
        if page.locator(".badge-delivered").count():
            break
        page.wait_for_timeout(500)
        page.reload()
    expect(page.locator("h1 .badge")).to_have_text("delivered")
    check_page(page, problems, screenshots, "job-delivered")
    page.goto(base + f"/ui/jobs/{second}")
    submit(page, "Cancel")
    expect(page.locator(".notice-ok")).to_have_text("The job was cancelled.")

    page.goto(base + "/ui/jobs?state=scheduled")
    page.locator("#select-all").check()  # dashboard.js ticks every waiting job
    expect(page.locator("input.select-job:checked")).to_have_count(2)
    check_page(page, problems, screenshots, "jobs")
    submit(page, "Cancel the selected jobs…")
    expect(page.locator("#cancel-count")).to_have_text("2")
    check_page(page, problems, screenshots, "confirm-cancel")
    submit(page, "Cancel 2 jobs")
    expect(page.locator(".notice-ok")).to_have_text("2 jobs were cancelled.")

    page.goto(base + f"/ui/jobs/{jobs['failed'][0]}")
    submit(page, "Retry")
    expect(page.locator(".notice-ok")).to_have_text("The job was re-queued.")

    page.goto(base + "/ui/jobs?state=failed")
    page.get_by_role("link", name="Retry the failed jobs matching this filter…").click()
    expect(page.locator("#retry-count")).to_have_text("3")
    check_page(page, problems, screenshots, "confirm-retry")
    page.get_by_role("link", name="Back").click()
    expect(page.locator("h1")).to_have_text("Jobs")

    page.goto(base + "/ui/failed")
    expect(page.locator("main")).to_contain_text("Service Unavailable")
    check_page(page, problems, screenshots, "failed")
    page.get_by_role("link", name="Retry this group…").click()
    expect(page.locator("#retry-count")).to_have_text("3")
    submit(page, "Retry 3 jobs")
    expect(page.locator(".notice-ok")).to_have_text("3 failed jobs were re-queued.")

    page.goto(base + "/ui/crons")
    expect(page.locator("main")).to_contain_text("At 02:30 (Europe/Paris)")
    check_page(page, problems, screenshots, "crons")
    page.get_by_role("link", name="nightly-report").click()
    check_page(page, problems, screenshots, "cron")
    for button, notice in (
        ("Pause", "The cron is paused."),
        ("Resume", "The cron is resumed."),
        ("Run now", "The cron runs now, as a new job."),
    ):
        submit(page, button)
        expect(page.locator(".notice-ok")).to_have_text(notice)
    page.get_by_label("Spec").fill("0 61 * * * *")
    submit(page, "Save")
    expect(page.locator(".field-error")).to_contain_text("Invalid spec")
    check_page(page, problems.expecting(400), screenshots, "cron-edit-refused")
    page.get_by_label("Spec").fill("0 0 9 * * mon-fri")
    submit(page, "Save")
    expect(page.locator(".notice-ok")).to_have_text("The cron was saved.")
    expect(page.locator("main")).to_contain_text("At 09:00, Monday through Friday")
    page.get_by_role("link", name="Delete…").click()
    submit(page, "Delete cron nightly-report")
    expect(page.locator(".notice-ok")).to_have_text("The cron was deleted.")

    page.goto(base + "/ui/jobs/0000000000000000000000000x")
    expect(page.locator("main")).to_contain_text("Not Found")
    check_page(page, problems.expecting(404), screenshots, "not-found")

    submit(page, "Log out")
    page.goto(base + "/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    assert not problems.seen, problems.seen


def test_editing_a_job_in_chromium(
    system: System,
    db: psycopg.Connection[Any],
    browser_page: tuple[Page, Problems],
    screenshots: pathlib.Path,
) -> None:
    system.start("web")
    job_id = system.insert("2099-01-01T00:00:00Z", {"order": 1})
    page, problems = browser_page
    page.goto(system.url + f"/ui/jobs/{job_id}")
    page.get_by_label("Secret").fill(support.SECRET)
    submit(page, "Log in")
    expect(page.get_by_label("Body (JSON)")).to_have_value('{\n  "order": 1\n}')
    page.get_by_label("Body (JSON)").fill('{"order": 2,}')
    submit(page, "Save")
    expect(page.locator(".field-error")).to_contain_text("Not valid JSON")
    expect(page.get_by_label("Body (JSON)")).to_have_value('{"order": 2,}')
    check_page(page, problems.expecting(400), screenshots, "job-edit-refused")
    page.get_by_label("Body (JSON)").fill('{"order": 2}')
    page.get_by_label("Due (RFC 3339, or a date and time in UTC)").fill("2098-05-01T10:30")
    submit(page, "Save")
    expect(page.locator(".notice-ok")).to_have_text("The job was saved.")
    expect(page.locator("pre.body")).to_contain_text('"order": 2')
    check_page(page, problems, screenshots, "job-edited")
    row = db.execute("SELECT body, next_attempt_at FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row == ({"order": 2}, dt.datetime(2098, 5, 1, 10, 30, tzinfo=dt.UTC))

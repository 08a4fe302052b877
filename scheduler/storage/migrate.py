"""Apply the numbered SQL files in order, once each, recorded with their checksums."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import logging
import pathlib
import re
from importlib.resources.abc import Traversable

import psycopg

from scheduler import errors
from scheduler.storage import db

logger = logging.getLogger(__name__)

_FILENAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")
_LOCK_KEY = "scheduler.migrate"


@dataclasses.dataclass(frozen=True)
class Migration:
    filename: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def load_migrations() -> list[Migration]:
    """The migrations shipped with the package (the top-level sql/ folder), in order."""
    folder = _migrations_folder()
    found = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    misnamed = [entry.name for entry in found if not _FILENAME.match(entry.name)]
    if misnamed:
        raise errors.MigrationError(
            f"migration file names must look like 0001_short_name.sql: {', '.join(misnamed)}"
        )
    if not found:
        raise errors.MigrationError("no migration files found in the package")
    return [Migration(entry.name, entry.read_text("utf-8")) for entry in found]


def _migrations_folder() -> Traversable:
    # A wheel carries sql/ inside the package; an editable install reads the checkout's.
    packaged = importlib.resources.files("scheduler").joinpath("sql")
    if packaged.is_dir():
        return packaged
    return pathlib.Path(__file__).resolve().parents[2] / "sql"


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations; return the names applied. Safe to run from two places at once,
    and through a transaction-mode pooler: each migration is one transaction that first takes a
    transaction-scoped advisory lock (a second release step waits there instead of racing, and
    no lock outlives its transaction), then reads what is applied."""
    migrations = load_migrations()
    done: list[str] = []
    with db.wrap_errors(), db.connect(database_url, autocommit=True, pooled=True) as conn:
        while True:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK_KEY,))
                _ensure_ledger(conn)
                applied = _applied(conn)
                _check_checksums(migrations, applied)
                waiting = [m for m in migrations if m.filename not in applied]
                if not waiting:
                    return done
                migration = waiting[0]
                conn.execute(migration.sql.encode("utf-8"))
                conn.execute(
                    "INSERT INTO schema_migrations (filename, sha256) VALUES (%s, %s)",
                    (migration.filename, migration.checksum),
                )
            logger.info("applied migration %s", migration.filename)
            done.append(migration.filename)


def pending(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """Names of migrations the database has not applied yet."""
    applied = _applied(conn) if _ledger_exists(conn) else {}
    return [m.filename for m in load_migrations() if m.filename not in applied]


def _ensure_ledger(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " filename text PRIMARY KEY, sha256 text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )


def _ledger_exists(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _applied(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    rows = conn.execute("SELECT filename, sha256 FROM schema_migrations").fetchall()
    return {str(name): str(checksum) for name, checksum in rows}


def _check_checksums(migrations: list[Migration], applied: dict[str, str]) -> None:
    for migration in migrations:
        recorded = applied.get(migration.filename)
        if recorded is not None and recorded != migration.checksum:
            raise errors.MigrationError(
                f"{migration.filename} was changed after it was applied "
                "(a merged migration is never edited: add a new file instead)"
            )


def pending_migrations(database: db.Database) -> list[str]:
    """Names of migrations the database has not applied yet, for readiness checks."""
    with db.wrap_errors(), database.pool.connection() as conn:
        return pending(conn)

"""migrate.py on empty databases of its own: ledger, idempotence, concurrency, checksums, shape."""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from psycopg import sql

from scheduler import config, errors
from scheduler.storage import crons, db, deliveries, migrate
from scheduler.storage import jobs as job_rows
from tests import support

SQL_DIR = support.ROOT / "sql"
CORE_TABLES = {"jobs", "delivery_attempts", "crons", "apscheduler_jobs", "schema_migrations"}


@contextlib.contextmanager
def empty_database(server_url: str) -> Iterator[str]:
    """A database with nothing of ours in it, dropped afterwards."""
    name = f"test_migrate_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield support.to_uri(support.with_database(server_url, name))
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def empty_url(server_url: str) -> Iterator[str]:
    with empty_database(server_url) as url:
        yield url


def sql_files() -> dict[str, str]:
    """{filename: sha256 of its bytes} for every migration in the checkout's sql/ folder."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(SQL_DIR.glob("*.sql"))
    }


def declared_tables() -> set[str]:
    """schema_migrations plus every table the sql/ files create and do not drop again."""
    names = {"schema_migrations"}
    for path in sorted(SQL_DIR.glob("*.sql")):
        text = path.read_text("utf-8")
        names |= set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", text, re.IGNORECASE))
        names -= set(re.findall(r"DROP TABLE (?:IF EXISTS )?(\w+)", text, re.IGNORECASE))
    return names


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        ).fetchall()
    return {str(row[0]) for row in rows}


def ledger(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT filename, sha256 FROM schema_migrations ORDER BY filename"
        ).fetchall()
    return [(str(name), str(checksum)) for name, checksum in rows]


def test_sql_folder_holds_migrations() -> None:
    files = sql_files()

    assert files
    assert [m.filename for m in migrate.load_migrations()] == sorted(files)


def test_migrating_an_empty_database_creates_the_tables_and_the_ledger(empty_url: str) -> None:
    assert tables(empty_url) == set()

    applied = migrate.migrate(empty_url)

    assert applied == sorted(sql_files())
    assert tables(empty_url) == declared_tables()
    assert tables(empty_url) >= CORE_TABLES
    assert ledger(empty_url) == sorted(sql_files().items())


def test_migrating_again_applies_nothing(empty_url: str) -> None:
    migrate.migrate(empty_url)
    with psycopg.connect(empty_url) as conn:
        first = conn.execute("SELECT filename, applied_at FROM schema_migrations").fetchall()

    assert migrate.migrate(empty_url) == []

    with psycopg.connect(empty_url) as conn:
        second = conn.execute("SELECT filename, applied_at FROM schema_migrations").fetchall()
        assert migrate.pending(conn) == []
    assert second == first


def test_pending_lists_every_file_before_the_first_migration(empty_url: str) -> None:
    with psycopg.connect(empty_url) as conn:
        assert migrate.pending(conn) == sorted(sql_files())


def test_two_parallel_migrations_both_succeed_and_apply_each_file_once(empty_url: str) -> None:
    start = threading.Barrier(2)
    results: list[list[str]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        start.wait(timeout=10)
        try:
            done = migrate.migrate(empty_url)
        except BaseException as exc:  # reported below, in the test's thread
            with lock:
                failures.append(exc)
        else:
            with lock:
                results.append(done)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    # Each migration is its own locked transaction, so the two may share the work: each file
    # applied by exactly one of them, each run's in order.
    first, second = results
    assert sorted(first + second) == sorted(sql_files())
    assert first == sorted(first) and second == sorted(second)
    assert ledger(empty_url) == sorted(sql_files().items())
    assert tables(empty_url) == declared_tables()


def test_a_changed_checksum_stops_the_migration(empty_url: str) -> None:
    migrate.migrate(empty_url)
    first = sorted(sql_files())[0]
    with psycopg.connect(empty_url) as conn:
        conn.execute(
            "UPDATE schema_migrations SET sha256 = %s WHERE filename = %s", ("0" * 64, first)
        )

    with pytest.raises(errors.MigrationError, match=first) as caught:
        migrate.migrate(empty_url)

    assert "changed after it was applied" in str(caught.value)
    # The session lock was released: a new migration attempt fails the same way, not by waiting.
    with pytest.raises(errors.MigrationError, match=first):
        migrate.migrate(empty_url)


def test_an_unreachable_database_is_a_store_error(empty_url: str) -> None:
    missing = empty_url.replace("/test_migrate_", "/missing_migrate_", 1)

    with pytest.raises(errors.StoreUnavailable):
        migrate.migrate(missing)


# --- apscheduler_jobs is exactly what APScheduler's SQLAlchemyJobStore declares ---------------


def _columns(url: str) -> dict[str, tuple[str, int | None, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, character_maximum_length, is_nullable"
            " FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = 'apscheduler_jobs'"
        ).fetchall()
    return {
        str(name): (str(kind), None if length is None else int(length), str(nullable))
        for name, kind, length, nullable in rows
    }


def _primary_key(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = 'apscheduler_jobs'::regclass AND i.indisprimary"
        ).fetchall()
    return sorted(str(row[0]) for row in rows)


def _indexes(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = 'public' AND tablename = 'apscheduler_jobs'"
        ).fetchall()
    return {str(name): str(definition) for name, definition in rows}


@pytest.fixture
def migrated_url(empty_url: str) -> str:
    migrate.migrate(empty_url)
    return empty_url


@pytest.fixture
def jobstore(migrated_url: str) -> Iterator[SQLAlchemyJobStore]:
    store = SQLAlchemyJobStore(url=config.to_sqlalchemy_url(migrated_url))
    yield store
    store.engine.dispose()


def test_apscheduler_jobs_matches_the_jobstore_declaration(
    migrated_url: str, jobstore: SQLAlchemyJobStore
) -> None:
    dialect = jobstore.engine.dialect
    pg_types = {
        "VARCHAR": "character varying",
        "FLOAT": "double precision",  # FLOAT(25): precision over 24 is an 8-byte float
        "BYTEA": "bytea",
    }
    declared = {}
    for column in jobstore.jobs_t.columns:
        compiled = column.type.compile(dialect=dialect)
        base = compiled.split("(")[0]
        length = getattr(column.type, "length", None) if base == "VARCHAR" else None
        declared[column.name] = (pg_types[base], length, "YES" if column.nullable else "NO")

    assert jobstore.jobs_t.name == "apscheduler_jobs"
    assert _columns(migrated_url) == declared
    assert declared == {
        "id": ("character varying", 191, "NO"),
        "next_run_time": ("double precision", None, "YES"),
        "job_state": ("bytea", None, "NO"),
    }
    assert _primary_key(migrated_url) == sorted(c.name for c in jobstore.jobs_t.primary_key)

    indexed = {
        index.name: [column.name for column in index.columns] for index in jobstore.jobs_t.indexes
    }
    assert indexed == {"ix_apscheduler_jobs_next_run_time": ["next_run_time"]}
    definitions = _indexes(migrated_url)
    assert "ix_apscheduler_jobs_next_run_time" in definitions
    assert definitions["ix_apscheduler_jobs_next_run_time"].endswith("USING btree (next_run_time)")


def test_apscheduler_jobs_matches_the_table_the_jobstore_would_create(
    server_url: str, migrated_url: str, jobstore: SQLAlchemyJobStore
) -> None:
    with empty_database(server_url) as scratch_url:
        engine = sqlalchemy.create_engine(config.to_sqlalchemy_url(scratch_url))
        try:
            # What SQLAlchemyJobStore.start() runs when the table is missing.
            jobstore.jobs_t.create(engine, checkfirst=True)
        finally:
            engine.dispose()
        created = (_columns(scratch_url), _primary_key(scratch_url), _indexes(scratch_url))

    assert (_columns(migrated_url), _primary_key(migrated_url), _indexes(migrated_url)) == created


def test_the_jobstore_reads_and_writes_the_migrated_table(
    migrated_url: str, jobstore: SQLAlchemyJobStore
) -> None:
    table = jobstore.jobs_t
    with jobstore.engine.begin() as conn:
        # create(checkfirst=True) is what start() does; on the migrated table it is a no-op.
        table.create(conn, checkfirst=True)
        conn.execute(table.insert().values(id="j1", next_run_time=1.5e9, job_state=b"\x80x"))
        conn.execute(table.insert().values(id="cron:7", next_run_time=None, job_state=b"y"))

    assert jobstore.get_next_run_time() is not None
    assert jobstore.get_next_run_time().timestamp() == 1.5e9
    with psycopg.connect(migrated_url) as conn:
        rows = conn.execute(
            "SELECT id, next_run_time, job_state FROM apscheduler_jobs ORDER BY id"
        ).fetchall()
    assert rows == [("cron:7", None, b"y"), ("j1", 1.5e9, b"\x80x")]


# --- 0008: error kinds of failures recorded before kinds were ---------------------------------

KINDS_MIGRATION = "0008_error_kinds_and_delivery_minutes.sql"
# Error texts as earlier dispatchers wrote them (the three long ones from real failures).
EARLIER_ERRORS = {
    "HTTP 503": "http_503",
    "HTTP 404": "http_404",
    "timeout: ReadTimeout": "timeout",
    "timeout: no answer within 30s": "timeout",
    "connection failed: HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with"
    " url: /hook (Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=9): Failed"
    ' to establish a new connection: [Errno 111] Connection refused"))': "refused",
    "connection failed: HTTPConnectionPool(host='nonexistent.invalid', port=80): Max retries"
    ' exceeded with url: /hook (Caused by NameResolutionError("HTTPConnection(host='
    "'nonexistent.invalid', port=80): Failed to resolve 'nonexistent.invalid' ([Errno -2] Name"
    ' or service not known)"))': "dns",
    "connection failed: HTTPSConnectionPool(host='127.0.0.1', port=8443): Max retries exceeded"
    " with url: / (Caused by SSLError(SSLError(1, '[SSL: WRONG_VERSION_NUMBER] wrong version"
    " number (_ssl.c:1006)')))": "tls",
    "connection failed: ('Connection aborted.', RemoteDisconnected('Remote end closed connection"
    " without response'))": "connection",
    "endpoint 'gone' is not configured; not sent": "not_sent",
    "internal error: ValueError": "internal",
}


def test_upgrading_classifies_the_failures_recorded_before(
    empty_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = migrate.load_migrations()
    earlier = [m for m in everything if m.filename < KINDS_MIGRATION]
    monkeypatch.setattr(migrate, "load_migrations", lambda: earlier)
    migrate.migrate(empty_url)
    with psycopg.connect(empty_url) as conn:
        for number, (text, _) in enumerate(EARLIER_ERRORS.items()):
            job_id = f"job{number:02d}"
            conn.execute(
                "INSERT INTO jobs (id, run_at, next_attempt_at, max_attempts, state, attempts,"
                " last_error, finished_at)"
                " VALUES (%s, now(), now(), 1, %s, 1, %s, now())",
                (job_id, "failed" if number % 2 else "scheduled", text),
            )
            conn.execute(
                "INSERT INTO delivery_attempts (job_id, attempt, started_at, duration_ms, error)"
                " VALUES (%s, 1, now(), 5, %s)",
                (job_id, text),
            )
        conn.execute(
            "INSERT INTO jobs (id, run_at, next_attempt_at, max_attempts, state, finished_at)"
            " VALUES ('delivered', now(), now(), 1, 'delivered', now())"
        )

    monkeypatch.setattr(migrate, "load_migrations", lambda: everything)
    assert KINDS_MIGRATION in migrate.migrate(empty_url)

    with psycopg.connect(empty_url) as conn:
        jobs_rows = conn.execute("SELECT last_error, last_error_kind FROM jobs").fetchall()
        attempt_rows = conn.execute("SELECT error, error_kind FROM delivery_attempts").fetchall()
    assert dict(jobs_rows) == {**EARLIER_ERRORS, None: None}
    assert dict(attempt_rows) == EARLIER_ERRORS


# --- every earlier level upgrades with data in it ----------------------------------------------


def _earlier_levels() -> list[str]:
    names = sorted(sql_files())
    return names[:-1]


@pytest.mark.parametrize("level", _earlier_levels())
def test_a_database_at_each_earlier_level_upgrades_with_its_data_and_the_code_reads_it(
    empty_url: str, level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = migrate.load_migrations()
    monkeypatch.setattr(
        migrate, "load_migrations", lambda: [m for m in everything if m.filename <= level]
    )
    migrate.migrate(empty_url)
    # Rows in the columns every level has (those of 0001): a job waiting, one delivered with its
    # attempt, and a cron.
    with psycopg.connect(empty_url) as conn:
        conn.execute(
            "INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts)"
            " VALUES ('waiting', '{\"n\": 1}', now() - interval '1 minute',"
            " now() - interval '1 minute', 3)"
        )
        conn.execute(
            "INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, state, attempts,"
            " last_status, finished_at) VALUES ('sent', '{}', now() - interval '1 hour',"
            " now() - interval '1 hour', 3, 'delivered', 1, 200, now())"
        )
        conn.execute(
            "INSERT INTO delivery_attempts (job_id, attempt, started_at, duration_ms, status_code)"
            " VALUES ('sent', 1, now(), 7, 200)"
        )
        conn.execute(
            "INSERT INTO crons (id, spec, timezone) VALUES ('nightly', '0 3 * * *', 'UTC')"
        )

    monkeypatch.setattr(migrate, "load_migrations", lambda: everything)
    applied = migrate.migrate(empty_url)

    assert applied == [m.filename for m in everything if m.filename > level]
    database = db.Database(db.open_pool(empty_url, 2, name="upgrade"))
    try:
        sent, attempts = job_rows.get_job(database, "sent")
        (cron,) = crons.list_crons(database)
        claimed = deliveries.claim_due_jobs(database, "upgraded", 60, 10)
    finally:
        database.close()
    assert (sent.state, sent.last_status, sent.endpoint) == ("delivered", 200, "default")
    assert sent.cancel_requested_at is None
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 200)]
    assert (cron.id, cron.spec, cron.paused, cron.endpoint) == (
        "nightly",
        "0 3 * * *",
        False,
        "default",
    )
    assert [(c.id, c.body, c.endpoint) for c in claimed] == [("waiting", '{"n": 1}', "default")]

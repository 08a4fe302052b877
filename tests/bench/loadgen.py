"""HTTP load: closed-loop clients on keep-alive connections, counting what completes in a window.

Two interchangeable generators. `wrk` (Debian's package) is used when it is on PATH: it is C and
costs the two cores little. Otherwise `python -m tests.bench.loadgen` processes, each with one
thread per keep-alive socket; they cost more CPU per request, which is why the benchmark
measures the generator's own ceiling in the same run and prints it next to what it measures.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import os
import pathlib
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.types.json import Jsonb

from tests.bench import stats

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_REQUESTS_PER_CONNECTION = 1_000_000
# Spawning interpreters takes a while on a busy machine; all clients start together after it.
START_DELAY = 0.5


@dataclasses.dataclass(frozen=True)
class Load:
    """What to send: one request, repeated by every client."""

    url: str
    method: str = "GET"
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class LoadResult:
    generator: str
    connections: int
    seconds: float
    ok: int
    failed: int
    p50_ms: float
    p99_ms: float
    client_cpu_seconds: float | None
    cpu: dict[str, Any] | None = None

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def generator_name(preferred: str = "auto") -> str:
    """`wrk` if asked for or found on PATH (with `auto`), else `python`."""
    if preferred == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return preferred


Meter = Callable[[], dict[str, float | None]]


def run(
    load: Load,
    connections: int,
    seconds: float,
    warmup: float,
    generator: str = "python",
    meter: Meter | None = None,
) -> LoadResult:
    """Drive `load` with `connections` closed-loop clients for `seconds` after `warmup`; with a
    `meter`, also the CPU the system used during the measured window."""
    if generator == "wrk":
        return _run_wrk(load, connections, seconds, warmup, meter)
    return _run_python(load, connections, seconds, warmup, meter)


# --- python -------------------------------------------------------------------------------


def _run_python(
    load: Load, connections: int, seconds: float, warmup: float, meter: Meter | None
) -> LoadResult:
    spec = {
        "kind": "http",
        "url": load.url,
        "method": load.method,
        "body": load.body.decode("utf-8"),
        "headers": load.headers,
    }
    return _run_children(spec, connections, seconds, warmup, "python", meter)


def run_inserts(
    database_url: str,
    connections: int,
    seconds: float,
    warmup: float,
    rows: int = 1,
    meter: Meter | None = None,
) -> LoadResult:
    """Closed-loop psycopg clients inserting `rows` jobs per transaction straight into `jobs`."""
    spec = {"kind": "insert", "url": database_url, "rows": rows, "prefix": f"raw{time.time_ns()}"}
    return _run_children(spec, connections, seconds, warmup, "psycopg", meter)


def _run_children(
    common: dict[str, Any],
    connections: int,
    seconds: float,
    warmup: float,
    name: str,
    meter: Meter | None = None,
) -> LoadResult:
    processes = min(connections, os.cpu_count() or 1)
    start_at = time.time() + START_DELAY
    specs = []
    for index in range(processes):
        threads = connections // processes + (1 if index < connections % processes else 0)
        specs.append(
            dict(
                common,
                process=index,
                threads=threads,
                start_at=start_at,
                measure_from=start_at + warmup,
                stop_at=start_at + warmup + seconds,
            )
        )
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.bench.loadgen"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in specs
    ]
    for child, spec in zip(children, specs, strict=True):
        assert child.stdin is not None
        child.stdin.write(json.dumps(spec))
        child.stdin.close()
    cpu = None
    if meter is not None:
        time.sleep(max(0.0, start_at + warmup - time.time()))
        before = meter()
        time.sleep(max(0.0, start_at + warmup + seconds - time.time()))
        cpu = stats.cpu_delta(before, meter())
    outputs = []
    for child in children:
        assert child.stdout is not None
        out = child.stdout.read()
        child.wait(timeout=START_DELAY + warmup + seconds + 120)
        if child.returncode != 0:
            raise RuntimeError(f"load generator child failed with exit code {child.returncode}")
        outputs.append(json.loads(out))
    latencies = [value for out in outputs for value in out["latencies_us"]]
    return LoadResult(
        generator=name,
        connections=connections,
        seconds=seconds,
        ok=sum(out["ok"] for out in outputs),
        failed=sum(out["failed"] for out in outputs),
        p50_ms=stats.percentile(latencies, 50) / 1000,
        p99_ms=stats.percentile(latencies, 99) / 1000,
        client_cpu_seconds=sum(out["cpu_seconds"] for out in outputs),
        cpu=cpu,
    )


class _Tally:
    """What one child's clients measured inside the window."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.latencies_us: list[int] = []

    def add(self, ok: int, failed: int, latencies_us: list[int]) -> None:
        with self.lock:
            self.ok += ok
            self.failed += failed
            self.latencies_us.extend(latencies_us)


def _closed_loop(tally: _Tally, attempt: Callable[[], bool]) -> None:
    """Call `attempt` back to back until the window closes; count what completes inside it."""
    spec = tally.spec
    latencies: list[int] = []
    ok = failed = 0
    time.sleep(max(0.0, spec["start_at"] - time.time()))
    for _ in range(MAX_REQUESTS_PER_CONNECTION):
        started = time.perf_counter()
        good = attempt()
        now = time.time()
        # A window shorter than one request (a quick run on a loaded machine) would otherwise
        # measure nothing at all: a client counts the request that outlived its empty window.
        measured_nothing = ok + failed == 0
        if now >= spec["stop_at"] and not measured_nothing:
            break
        if now >= spec["measure_from"]:
            if good:
                ok += 1
                latencies.append(int((time.perf_counter() - started) * 1e6))
            else:
                failed += 1
        if now >= spec["stop_at"]:
            break
    tally.add(ok, failed, latencies)


def _request_bytes(spec: dict[str, Any]) -> tuple[tuple[str, int], bytes]:
    parts = urlsplit(spec["url"])
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    body = spec["body"].encode("utf-8")
    lines = [f"{spec['method']} {path} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in spec["headers"].items()]
    if body or spec["method"] != "GET":
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return (parts.hostname or "127.0.0.1", parts.port or 80), head + body


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, bool]:
    """Read one response off a keep-alive connection: its status and whether the server closes."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    head = bytes(buffer[:end]).lower()
    status = int(head[9:12])
    length = 0
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
    total = end + 4 + length
    while len(buffer) < total:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    del buffer[:total]
    return status, b"\r\nconnection: close" in head


def _http_client(tally: _Tally) -> None:
    # A raw socket and a prebuilt request: http.client spends ~200 us of CPU per request parsing
    # headers, which on two cores would be taken from the server being measured.
    address, request = _request_bytes(tally.spec)
    buffer = bytearray()
    sock: socket.socket | None = None

    def attempt() -> bool:
        nonlocal sock
        try:
            if sock is None:
                sock = socket.create_connection(address, timeout=30)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffer.clear()
            sock.sendall(request)
            status, closing = _read_response(sock, buffer)
            good = 200 <= status < 300
        except (OSError, ValueError):
            closing, good = True, False
        if closing and sock is not None:
            sock.close()
            sock = None
        return good

    _closed_loop(tally, attempt)
    if sock is not None:
        sock.close()


_INSERT = (
    "INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts) VALUES (%s, %s, %s, %s, %s)"
)


def _insert_client(tally: _Tally, thread: int) -> None:
    spec = tally.spec
    due = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
    body = Jsonb({"order": 42, "note": "benchmark"})
    prefix = f"{spec['prefix']}p{spec['process']}t{thread}n"
    counter = itertools.count()
    with psycopg.connect(spec["url"], autocommit=True) as conn:

        def attempt() -> bool:
            rows = [(f"{prefix}{next(counter)}", body, due, due, 3) for _ in range(spec["rows"])]
            try:
                if len(rows) == 1:
                    conn.execute(_INSERT, rows[0], prepare=True)
                else:
                    with conn.transaction(), conn.cursor() as cur:
                        cur.executemany(_INSERT, rows)
            except psycopg.Error:
                return False
            return True

        _closed_loop(tally, attempt)


def _child_main() -> None:
    tally = _Tally(json.loads(sys.stdin.read()))
    threads = [
        threading.Thread(target=_http_client, args=(tally,))
        if tally.spec["kind"] == "http"
        else threading.Thread(target=_insert_client, args=(tally, index))
        for index in range(tally.spec["threads"])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "ok": tally.ok,
        "failed": tally.failed,
        "latencies_us": tally.latencies_us,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }
    print(json.dumps(out, separators=(",", ":")))


# --- wrk ----------------------------------------------------------------------------------

_WRK_SCRIPT = """
local f = io.open(%(body_path)s, "rb")
wrk.method = %(method)s
wrk.body = f:read("*a")
f:close()
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK-RESULT {"requests": %%d, "duration_us": %%d, "status": %%d, "socket": %%d,'
    .. ' "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(value: str) -> str:
    return json.dumps(value)


def _run_wrk(
    load: Load, connections: int, seconds: float, warmup: float, meter: Meter | None
) -> LoadResult:
    threads = min(connections, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        body_path = pathlib.Path(tmp) / "body"
        body_path.write_bytes(load.body)
        headers = "\n".join(
            f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in load.headers.items()
        )
        script = pathlib.Path(tmp) / "load.lua"
        script.write_text(
            _WRK_SCRIPT
            % {
                "body_path": _lua_string(str(body_path)),
                "method": _lua_string(load.method),
                "headers": headers,
            }
        )
        base = ["wrk", "-t", str(threads), "-c", str(connections), "--timeout", "30s"]
        base += ["-s", str(script)]
        if warmup > 0:
            subprocess.run(
                [*base, "-d", f"{max(1, round(warmup))}s", load.url],
                capture_output=True,
                check=True,
                timeout=warmup + 60,
            )
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        system_before = meter() if meter else None
        done = subprocess.run(
            [*base, "-d", f"{max(1, round(seconds))}s", load.url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = stats.cpu_delta(system_before, meter()) if meter and system_before else None
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRK-RESULT "))
    result = json.loads(line.removeprefix("WRK-RESULT "))
    failed = result["status"] + result["socket"]
    return LoadResult(
        generator="wrk",
        connections=connections,
        seconds=result["duration_us"] / 1e6,
        ok=result["requests"] - result["status"],
        failed=failed,
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        client_cpu_seconds=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        cpu=cpu,
    )


if __name__ == "__main__":
    _child_main()

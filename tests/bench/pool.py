"""The delivery ceiling: a plain `requests` thread pool, as large as the dispatcher's, POSTing
delivery-shaped requests to the receiver as fast as it can, in a process of its own; one such
process per dispatcher when several dispatchers are measured.

`python -m tests.bench.pool URL THREADS COUNT [FIRST]` prints "ready", waits for a line on stdin,
then sends and prints {"started": ..., "finished": ..., "ok": ..., "failed": ...} (epochs).
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import threading
import time
from typing import Any

import requests

from tests.bench import loadgen

_local = threading.local()


def delivery_request(index: int) -> tuple[bytes, dict[str, str]]:
    """A body and headers of the size and shape the dispatcher sends."""
    job_id = f"ceiling{index:019d}"
    body = json.dumps({"id": job_id, "cron_id": "", "body": {"due": 1.8e9 + index}})
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "scheduler-dispatch",
        "Scheduler-Secret": "test-secret-0123456789",
        "Scheduler-Delivery-Id": job_id,
        "Scheduler-Attempt": "1",
        "Scheduler-Scheduled-At": "2027-01-15T08:00:00.000Z",
        # The size of the dispatcher's signature header (t=<epoch>,v1=<64 hex digits>).
        "Scheduler-Signature": "t=1800000000,v1=" + "0" * 64,
    }
    return body.encode(), headers


def _post(url: str, index: int) -> bool:
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    body, headers = delivery_request(index)
    try:
        response = session.post(
            url, data=body, headers=headers, timeout=(5, 30), allow_redirects=False
        )
        _ = response.text
    except requests.RequestException:
        return False
    return 200 <= response.status_code < 300


def _child_main(url: str, threads: int, count: int, first: int) -> None:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        # Started and imported: the parent starts every pool at once.
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.time()
        results = list(pool.map(lambda index: _post(url, index), range(first, first + count)))
        finished = time.time()
    ok = sum(results)
    print(json.dumps({"started": started, "finished": finished, "ok": ok, "failed": count - ok}))


def run(url: str, threads: int, count: int, processes: int = 1) -> dict[str, Any]:
    """Send `count` deliveries, split between `processes` pools of `threads` threads started
    together; their combined rate, from the first one's start to the last one's end."""
    shares = [count // processes + (number < count % processes) for number in range(processes)]
    children = []
    for number, share in enumerate(shares):
        first = sum(shares[:number])
        children.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.bench.pool",
                    url,
                    str(threads),
                    str(share),
                    str(first),
                ],
                cwd=loadgen.ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a requests pool did not start")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=600)[0] for child in children]
        if any(child.returncode for child in children):
            raise RuntimeError("a requests pool failed")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    parts = [json.loads(output) for output in outputs]
    seconds = max(p["finished"] for p in parts) - min(p["started"] for p in parts)
    ok = sum(p["ok"] for p in parts)
    return {
        "seconds": seconds,
        "ok": ok,
        "failed": sum(p["failed"] for p in parts),
        "rate": ok / seconds if seconds > 0 else 0.0,
        "threads": threads,
        "processes": processes,
        "each": parts,
    }


if __name__ == "__main__":
    _child_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int((sys.argv[4:] or ["0"])[0]))

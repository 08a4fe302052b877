"""The delivery ceiling: a plain `requests` thread pool, as large as the dispatcher's, POSTing
delivery-shaped requests to the receiver as fast as it can, in a process of its own.

`python -m tests.bench.pool URL THREADS COUNT` prints {"seconds": ..., "ok": ..., "failed": ...}.
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


def _child_main(url: str, threads: int, count: int) -> None:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        results = list(pool.map(lambda index: _post(url, index), range(count)))
        seconds = time.perf_counter() - started
    ok = sum(results)
    print(json.dumps({"seconds": seconds, "ok": ok, "failed": count - ok}))


def run(url: str, threads: int, count: int) -> dict[str, Any]:
    """Send `count` deliveries from `threads` threads; seconds taken and outcomes."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.pool", url, str(threads), str(count)],
        cwd=loadgen.ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    result["rate"] = result["ok"] / result["seconds"]
    result["threads"] = threads
    return result


if __name__ == "__main__":
    _child_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))

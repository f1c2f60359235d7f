"""Throughput and latency under load: `cds-hooks serve` (gunicorn) on loopback, driven by wrk.

Without wrk (Debian package `wrk`) a bounded Python load generator stands in: it reports the
same numbers but saturates sooner, so its requests/s is a floor of what the server can do.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import fixtures
from bench.stats import percentile

_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("%(body)s", "rb"))
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-JSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, " ..
    "\\"p99_us\\": %%d, \\"max_us\\": %%d, \\"connect\\": %%d, \\"read\\": %%d, " ..
    "\\"write\\": %%d, \\"status\\": %%d, \\"timeout\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not listen within 60 s")


def _post(port: int, raw: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", f"/cds-services/{fixtures.SERVICE_ID}", raw, _HEADERS)
    status = connection.getresponse().status
    connection.close()
    return status


_HEADERS = {"Content-Type": "application/json"}


def _wrk(port: int, body_path: Path, seconds: int, connections: int, work: Path) -> dict:
    script = work / "post.lua"
    script.write_text(_LUA % {"body": body_path})
    url = f"http://127.0.0.1:{port}/cds-services/{fixtures.SERVICE_ID}"
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s"]
    out = subprocess.run(
        [*command, "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    found = re.search(r"BENCH-JSON (\{.*\})", out)
    if not found:
        raise RuntimeError(f"wrk printed no result: {out[-2000:]}")
    data = json.loads(found.group(1))
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "tool": "wrk",
        "requests": data["requests"],
        "requests_per_s": data["requests"] / (data["duration_us"] / 1e6),
        "p50": data["p50_us"] / 1000,
        "p99": data["p99_us"] / 1000,
        "max": data["max_us"] / 1000,
        "errors": errors,
        "error_detail": {k: data[k] for k in ("connect", "read", "write", "status", "timeout")},
    }


def _python_load(port: int, raw: bytes, seconds: int, connections: int) -> dict:
    """Closed loop: `connections` threads, each one keep-alive connection, for `seconds`."""
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    url = f"/cds-services/{fixtures.SERVICE_ID}"

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = []
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                connection.request("POST", url, raw, _HEADERS)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            mine.append((time.perf_counter() - started) * 1000)
            if not ok:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "tool": "python",
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies, default=0.0),
        "errors": errors[0],
    }


def run(
    size: int,
    seconds: int,
    connections: int,
    workers: int | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    from cds_hooks.gunicorn_conf import DEFAULT_THREADS, default_workers

    workers = workers or default_workers()
    raw = fixtures.body_bytes(size)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="cds-bench-load-") as tmp:
        work = Path(tmp)
        body_path = work / "body.json"
        body_path.write_bytes(raw)
        server_log = work / "serve.log"
        env = {
            **os.environ,
            "CDS_DATA_DIR": str(work / "var"),
            "CDS_NOW": fixtures.NOW,
            "CDS_LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, "-m", "cds_hooks.cli", "serve", "--port", str(port)]
        command += ["--workers", str(workers), "--threads", str(DEFAULT_THREADS)]
        with server_log.open("wb") as output:
            server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            _wait_listening(port, server, server_log)
            for _ in range(20):  # warm every worker
                if _post(port, raw) != 200:
                    raise RuntimeError(f"warm-up failed: {server_log.read_text()[-2000:]}")
            if shutil.which("wrk"):
                result = _wrk(port, body_path, seconds, connections, work)
            else:
                log("  wrk not found: using the Python load generator")
                result = _python_load(port, raw, seconds, connections)
        finally:
            server.terminate()
            server.wait(timeout=30)
    result.update(
        size=size,
        bytes=len(raw),
        seconds=seconds,
        connections=connections,
        workers=workers,
        threads=DEFAULT_THREADS,
    )
    log(
        f"  load: {result['requests_per_s']:.1f} req/s, p50 {result['p50']:.1f} ms, "
        f"p99 {result['p99']:.1f} ms, errors {result['errors']}"
    )
    return result

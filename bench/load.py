"""Over loopback HTTP: our `cds-hooks serve` (gunicorn) and the HealthChain peer, driven by wrk.

* `ours(...)` / `peer(...)`: a server process on a free port, with a given worker count.
* `drive(...)`: wrk (Debian package `wrk`) for N seconds at C connections: requests/s, p50, p99,
  errors (connect/read/write/timeouts + non-2xx). Without wrk a bounded Python load generator
  stands in (same numbers, but it saturates sooner: its requests/s is a floor).
* `worker_rss(...)`: resident memory of each worker process of a server (from /proc).

The peer runs in its own virtual environment under the bench work folder (bench/work/), made on
first use with pip from PyPI: healthchain==0.16.1 and uvicorn, as ../shared/peers/README.md says.
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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import fixtures
from bench.stats import percentile

WORK = Path(__file__).resolve().parent / "work"
PEERS = fixtures.REPO.parent / "shared" / "peers"
PEER_REQUIREMENTS = ("healthchain==0.16.1", "uvicorn")
PEER_PATH = "/cds-services/hc-antispastic"
OUR_PATH = f"/cds-services/{fixtures.SERVICE_ID}"

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  local odd = 0
  for _, t in ipairs(threads) do odd = odd + (t:get("odd") or 0) end
  io.write(string.format(
    "BENCH-JSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, " ..
    "\\"p99_us\\": %%d, \\"max_us\\": %%d, \\"connect\\": %%d, \\"read\\": %%d, " ..
    "\\"write\\": %%d, \\"status\\": %%d, \\"timeout\\": %%d, \\"unexpected\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout, odd))
end
"""
_POST = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("%(body)s", "rb"))
wrk.body = f:read("*a")
f:close()
threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) odd = 0 end
-- Every answer must be a 200 carrying the expected card, not just any 200.
local marker = "%(marker)s"
function response(status, headers, body)
  if status ~= 200 or (marker ~= "" and not string.find(body, marker, 1, true)) then
    odd = odd + 1
  end
end
"""


@dataclass
class Server:
    name: str
    port: int
    path: str
    process: subprocess.Popen
    workers: int
    marker: str = ""  # a string every answer under load must contain (its expected card)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not listen within 120 s")


@contextmanager
def _running(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    path: str,
    workers: int,
    folder: Path,
    warm_body: bytes,
) -> Iterator[Server]:
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=folder
        )
    try:
        _wait_listening(port, process, log)
        server = Server(name, port, path, process, workers)
        for _ in range(10 * workers):  # warm every worker
            status = post(server, warm_body)
            if status != 200:
                raise RuntimeError(f"{name} warm-up answered {status}: {log.read_text()[-2000:]}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@contextmanager
def ours(workers: int, folder: Path, warm_body: bytes) -> Iterator[Server]:
    """`cds-hooks serve` with `workers` workers (default threads), a fresh SQLite store."""
    from cds_hooks.gunicorn_conf import DEFAULT_THREADS

    port = free_port()
    env = {
        **os.environ,
        "CDS_DATA_DIR": str(folder / "var"),
        "CDS_NOW": fixtures.NOW,
        "CDS_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "cds_hooks.cli", "serve", "--port", str(port)]
    command += ["--workers", str(workers), "--threads", str(DEFAULT_THREADS)]
    with _running("ours", command, env, port, OUR_PATH, workers, folder, warm_body) as server:
        yield server


@contextmanager
def server_alone(workers: int, folder: Path, warm_body: bytes) -> Iterator[Server]:
    """gunicorn with our settings around a WSGI app that only reads the body (bench.server_alone):
    what the HTTP server costs per request before our app does anything."""
    from cds_hooks.gunicorn_conf import DEFAULT_THREADS

    port = free_port()
    command = [sys.executable, "-m", "bench.server_alone", "--port", str(port)]
    command += ["--workers", str(workers), "--threads", str(DEFAULT_THREADS)]
    env = {**os.environ, "PYTHONPATH": str(fixtures.REPO)}
    with _running("alone", command, env, port, OUR_PATH, workers, folder, warm_body) as server:
        yield server


def peer_python(log: Callable[[str], None]) -> Path:
    """The peer's own virtual environment under bench/work/, made once (pip from PyPI)."""
    venv = WORK / "peer-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = " ".join(PEER_REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"  making the peer's venv in {venv} (pip install {wanted})...")
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS], check=True)
    stamp.write_text(wanted)
    return python


@contextmanager
def peer(workers: int, folder: Path, warm_body: bytes, python: Path) -> Iterator[Server]:
    """The HealthChain peer under uvicorn with `workers` workers (its README's command), through
    bench/peer_uvicorn.py, which gives every connection TCP_NODELAY as `--workers 1` has: with
    more workers uvicorn 0.54 leaves Nagle on and each keep-alive request waits ~40 ms for a
    delayed ACK (uvicorn issue #3149; docs/performance.md)."""
    port = free_port()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    launcher = Path(__file__).resolve().parent / "peer_uvicorn.py"
    command = [str(python), str(launcher), "--app-dir", str(PEERS), "healthchain_app:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    command += ["--log-level", "warning", "--no-access-log"]
    with _running("peer", command, env, port, PEER_PATH, workers, folder, warm_body) as server:
        yield server


_HEADERS = {"Content-Type": "application/json"}


def post(server: Server, raw: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("POST", server.path, raw, _HEADERS)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def answer(server: Server, raw: bytes) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("POST", server.path, raw, _HEADERS)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def _wrk(server: Server, body: Path, connections: int, seconds: int) -> dict:
    threads = min(2, connections)
    script = body.parent / f"{server.name}-{os.getpid()}.lua"
    script.write_text((_POST + _DONE) % {"body": body, "marker": server.marker})
    url = f"http://127.0.0.1:{server.port}{server.path}"
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    out = subprocess.run(
        [*command, "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    found = re.search(r"BENCH-JSON (\{.*\})", out)
    if not found:
        raise RuntimeError(f"wrk printed no result: {out[-2000:]}")
    data = json.loads(found.group(1))
    detail = {k: data[k] for k in ("connect", "read", "write", "status", "timeout")}
    # 200s without the expected card (non-2xx are in `status` already)
    detail["unexpected"] = max(0, data["unexpected"] - data["status"])
    return {
        "tool": "wrk",
        "requests": data["requests"],
        "requests_per_s": data["requests"] / (data["duration_us"] / 1e6),
        "p50": data["p50_us"] / 1000,
        "p99": data["p99_us"] / 1000,
        "max": data["max_us"] / 1000,
        "errors": sum(detail.values()),
        "error_detail": detail,
    }


def _python_load(server: Server, raw: bytes, connections: int, seconds: float) -> dict:
    """Closed loop: `connections` threads, one keep-alive connection each."""
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        mine = []
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                connection.request("POST", server.path, raw, _HEADERS)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
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


def drive(server: Server, body: Path, connections: int, seconds: int) -> dict[str, Any]:
    """`connections` connections POSTing `body` for `seconds` seconds; also the CPU time the
    server's processes used meanwhile (a machine shared with the load generator and others
    gives a server less than its cores, so CPU per request is the steadier figure)."""
    cpu = server_cpu_seconds(server)
    if shutil.which("wrk"):
        result = _wrk(server, body, connections, seconds)
    else:
        result = _python_load(server, body.read_bytes(), connections, seconds)
    cpu = server_cpu_seconds(server) - cpu
    return {
        **result,
        "cpu_seconds": cpu,
        "cpu_ms_per_request": 1000 * cpu / result["requests"] if result["requests"] else 0.0,
        "connections": connections,
        "seconds": seconds,
        "workers": server.workers,
    }


def server_cpu_seconds(server: Server) -> float:
    """User + system CPU seconds of the server process and its children (the workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in [server.process.pid, *_children(server.process.pid)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / tick


def worker_rss(server: Server) -> dict[int, float]:
    """Resident memory (MiB) of each worker: the server process's child processes."""
    out = {}
    for child in _children(server.process.pid):
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[child] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return out


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # field 4 of /proc/<pid>/stat: the parent's pid
            found.append(int(entry.name))
    return sorted(found)

"""Real servers on loopback for tests: `cds-hooks serve` (gunicorn) as a process, a free port,
stopping a process, and an HTTP server in a thread (the fake FHIR servers build on it)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

FHIR_JSON = "application/fhir+json"


def free_port() -> int:
    """A loopback port nothing listens on (connecting to it is refused until something does)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate a server process and wait for it; kill it if it does not stop in `timeout` s."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class LoopbackHTTP(ThreadingHTTPServer):
    """An HTTP server on a free loopback port; `handler` answers (see `running`)."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def base(self) -> str:
        return f"http://{self.authority}"

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class QuietHandler(BaseHTTPRequestHandler):
    """No access log on the test output; `send` writes a whole answer."""

    def log_message(self, *args: Any) -> None:
        pass

    def send(self, status: int, body: Any, content_type: str = FHIR_JSON, **headers: str) -> None:
        """`body` as JSON (bytes as they are), its length, and `headers` (`Retry_After` ->
        `Retry-After`)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(raw)


Server = TypeVar("Server", bound=LoopbackHTTP)


@contextmanager
def running(server: Server) -> Iterator[Server]:
    """Serve `server` from a thread until the block ends, then close it."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve(
    folder: Path,
    env: Mapping[str, str] | None = None,
    *,
    workers: int = 1,
    threads: int = 2,
    extra: tuple[str, ...] = (),
) -> Iterator[int]:
    """Run `cds-hooks serve` until the block ends; yields its port. Its log is folder/serve.log."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    environ = {"CDS_DATA_DIR": str(folder), "CDS_LOG_LEVEL": "WARNING", **(env or {})}
    command = [sys.executable, "-m", "cds_hooks.cli", "serve", "--port", str(port)]
    command += ["--workers", str(workers), "--threads", str(threads), *extra]
    log = folder / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env={**os.environ, **environ}, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"server exited: {log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not listen within 60 s")
        yield port
    finally:
        stop(process)


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """One request on a new connection (so that any worker may take it); (status, JSON or text)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        sent = (
            {"Content-Type": "application/json", **(headers or {})} if data else {**(headers or {})}
        )
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(raw) if "json" in kind else raw.decode()
    finally:
        connection.close()

"""Start `cds-hooks serve` (gunicorn) as a real process on a free loopback port, for tests."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
        process.terminate()
        process.wait(timeout=30)


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

"""A local FHIR endpoint for the fetch benchmark: canned searchsets, a fixed delay on every call.

Runs in its own process so that serving never competes with the service for the GIL.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from bench import fixtures
from cds_hooks.services import OBSERVATION_SEARCHES


def _responses(size: int) -> dict[str, bytes]:
    """Body per resource type (the first path segment), from a record of `size` resources."""
    prefetch = fixtures.prefetch(size)
    out = {"Patient": json.dumps(prefetch["patient"]).encode()}
    for key, rtype in (
        ("conditions", "Condition"),
        ("medications", "MedicationRequest"),
        ("allergies", "AllergyIntolerance"),
    ):
        out[rtype] = json.dumps(prefetch[key]).encode()
    # Every Observation search gets every Observation (the record is indexed by id).
    observations = [
        entry["resource"]
        for search in OBSERVATION_SEARCHES
        for entry in prefetch[search.key].get("entry", [])
    ]
    out["Observation"] = json.dumps(fixtures.searchset(observations)).encode()
    return out


def _serve(size: int, delay: float, ready: multiprocessing.Queue) -> None:
    responses = _responses(size)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes

        def do_GET(self) -> None:
            time.sleep(delay)
            parts = urlsplit(self.path).path.strip("/").split("/")
            rtype = parts[1] if parts[0] == "fhir" and len(parts) > 1 else parts[0]
            body = responses.get(rtype)
            status = 200 if body is not None else 404
            body = body or b'{"resourceType": "OperationOutcome", "issue": []}'
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that hangs up early (a call past its deadline) is not news

    server = Server(("127.0.0.1", 0), Handler)
    ready.put(server.server_address[1])
    server.serve_forever()


class FhirServer:
    """`with FhirServer(size, delay) as base_url:` a slow FHIR server on a free loopback port."""

    def __init__(self, size: int, delay: float) -> None:
        self.size, self.delay = size, delay
        self._process: multiprocessing.Process | None = None

    def __enter__(self) -> str:
        ready: multiprocessing.Queue = multiprocessing.Queue()
        self._process = multiprocessing.Process(
            target=_serve, args=(self.size, self.delay, ready), daemon=True
        )
        self._process.start()
        return f"http://127.0.0.1:{ready.get(timeout=30)}/fhir"

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(5)

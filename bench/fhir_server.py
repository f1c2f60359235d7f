"""A local FHIR endpoint for the fetch benchmark: canned searchsets, a fixed delay on every call.

Runs in its own process so that serving never competes with the service for the GIL. An
Observation search answers, as a FHIR server does, only the Observations whose `code` is one of
the search's `code=` tokens (`system|code`): the record's 1,000 resources hold ~900
Observations, of which the service's five narrow searches ask for a few dozen. (Answering every
search with every Observation made the service parse ~4 MB per call, five copies of the labs,
and measured JSON parsing under the GIL, not fetch parallelism.)
"""

from __future__ import annotations

import json
import multiprocessing
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from bench import fixtures
from cds_hooks.services import OBSERVATION_SEARCHES


def _responses(size: int) -> tuple[dict[str, bytes], list[dict]]:
    """Body per resource type (the first path segment) and the Observations, from a record of
    `size` resources."""
    prefetch = fixtures.prefetch(size)
    out = {"Patient": json.dumps(prefetch["patient"]).encode()}
    for key, rtype in (
        ("conditions", "Condition"),
        ("medications", "MedicationRequest"),
        ("allergies", "AllergyIntolerance"),
    ):
        out[rtype] = json.dumps(prefetch[key]).encode()
    observations = [
        entry["resource"]
        for search in OBSERVATION_SEARCHES
        for entry in prefetch[search.key].get("entry", [])
    ]
    return out, observations


def _by_code(observations: list[dict], query: str) -> bytes:
    """The searchset of the Observations whose code matches one of `code=` (all without it)."""
    tokens = {t for value in parse_qs(query).get("code", []) for t in value.split(",")}
    found = [
        o
        for o in observations
        if not tokens
        or any(
            f"{c.get('system')}|{c.get('code')}" in tokens or c.get("code") in tokens
            for c in (o.get("code") or {}).get("coding", [])
        )
    ]
    return json.dumps(fixtures.searchset(found)).encode()


def _serve(size: int, delay: float, ready: multiprocessing.Queue) -> None:
    responses, observations = _responses(size)
    searches: dict[str, bytes] = {}  # Observation query -> answer, made once per query

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes

        def do_GET(self) -> None:
            time.sleep(delay)
            url = urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            rtype = parts[1] if parts[0] == "fhir" and len(parts) > 1 else parts[0]
            if rtype == "Observation":
                if url.query not in searches:
                    searches[url.query] = _by_code(observations, url.query)
                body: bytes | None = searches[url.query]
            else:
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
        request_queue_size = 128  # listen backlog: the default 5 drops parallel connects (1 s)

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

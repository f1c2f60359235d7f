"""The app's FHIR fetches run all at once, on kept connections (docs/performance.md, fetch mode).

No timing: a local FHIR server whose every answer waits at a barrier for N requests proves that N
searches were in flight together (a serialised fetch never fills the barrier and each search is
answered 503), and the client ports it saw prove that connections are kept, not reopened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from cds_hooks.app import create_app
from cds_hooks.commands.serve import DEFAULT_THREADS
from cds_hooks.errors import FhirError
from cds_hooks.fhir.client import FhirClient
from cds_hooks.fhir.settings import FhirSettings
from tests.servers import LoopbackHTTP, QuietHandler, running


class _Server(LoopbackHTTP):
    request_queue_size = 128  # every search of a round connects at once

    def handle_error(self, request, client_address):
        pass


@pytest.fixture
def barrier_server() -> Iterator[tuple[str, dict]]:
    state: dict = {"barrier": None, "ports": set(), "lock": threading.Lock()}

    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            with state["lock"]:
                state["ports"].add(self.client_address[1])
            status = 200
            if state["barrier"] is not None:
                try:
                    state["barrier"].wait(timeout=5)
                except threading.BrokenBarrierError:
                    status = 503
            kind = self.path.split("?")[0].rsplit("/", 1)[-1]
            bundle = {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": {"resourceType": "Condition", "id": kind}}],
            }
            self.send(status, bundle)

    with running(_Server(Handler)) as server:
        yield f"{server.base}/fhir", state


def _client(app, base: str) -> FhirClient:
    runtime = app.extensions["cds_hooks"]
    return FhirClient(base, "t", session=runtime.session, executor=runtime.executor, timeout=8.0)


def test_default_pool_runs_every_search_of_every_request_thread_at_once(tmp_path):
    templates = create_app({"DATA_DIR": str(tmp_path)}).extensions["cds_hooks"].templates
    assert FhirSettings().fhir_workers >= len(templates) * DEFAULT_THREADS


def test_searches_of_a_call_are_in_flight_together(tmp_path, barrier_server):
    base, state = barrier_server
    app = create_app({"DATA_DIR": str(tmp_path), "FHIR_ALLOW_PRIVATE": True})
    runtime = app.extensions["cds_hooks"]
    queries = {
        key: template.replace("{{context.patientId}}", "p1")
        for key, template in runtime.templates.items()
    }
    assert len(queries) <= runtime.settings.fhir.fhir_workers
    state["barrier"] = threading.Barrier(len(queries))
    got = _client(app, base).fetch_all(queries, time.monotonic() + 10)
    assert not [k for k, v in got.items() if isinstance(v, FhirError)]


def test_parallel_searches_keep_their_connections(tmp_path, barrier_server):
    base, state = barrier_server
    workers = 12  # more than urllib3's default pool of 10
    app = create_app(
        {"DATA_DIR": str(tmp_path), "FHIR_ALLOW_PRIVATE": True, "FHIR_WORKERS": workers}
    )
    client = _client(app, base)
    queries = {str(n): f"Condition?n={n}" for n in range(workers)}
    for _ in range(3):
        state["barrier"] = threading.Barrier(workers)
        got = client.fetch_all(queries, time.monotonic() + 10)
        assert not [k for k, v in got.items() if isinstance(v, FhirError)]
    # Three rounds of 12 at once on 12 kept connections; a pool of 10 reopens 2 per round.
    assert len(state["ports"]) == workers

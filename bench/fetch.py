"""FHIR-fetch mode: no prefetch but the patient, so the service runs every other search itself.

The local FHIR server adds `delay` to every call. Searches run in parallel, so the whole hook
call should take about one search's latency, not the sum of all of them. The searches are the
service's own prefetch templates (filled for the patient), every one of them, each also timed
alone through the same `FhirClient` and session: the slowest of those is the yardstick.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench import fixtures
from bench.fhir_server import FhirServer
from bench.inprocess import check_answer, make_app, wsgi_caller
from bench.stats import summary, timed_ms


def run(size: int, delay: float, iterations: int, log: Callable[[str], None]) -> dict[str, Any]:
    from cds_hooks.fhir.client import FhirClient

    with FhirServer(size, delay) as base, tempfile.TemporaryDirectory() as data_dir:
        app = make_app(data_dir, ALLOW_HTTP_FHIR=True, FHIR_ALLOW_PRIVATE=True)
        call = wsgi_caller(app)
        runtime = app.extensions["cds_hooks"]
        body = fixtures.request(None, fhir_server=base)
        body["prefetch"] = {"patient": fixtures.PATIENT}
        raw = json.dumps(body).encode()
        check_answer("fetch", call(raw))
        client = FhirClient(base, "bench-token", session=runtime.session, timeout=5.0)
        # What the service fetches: every template but the prefetched patient.
        queries = {
            key: template.replace("{{context.patientId}}", fixtures.PATIENT_ID)
            for key, template in runtime.templates.items()
            if key not in body["prefetch"]
        }
        single: dict[str, list[float]] = {key: [] for key in queries}
        total = []
        for _ in range(iterations):
            for key, query in queries.items():
                single[key].append(timed_ms(lambda q=query: client.search(q, time.monotonic() + 5)))
            total.append(timed_ms(lambda: call(raw)))
        one = {key: summary(samples) for key, samples in single.items()}
        slowest = max(s["p50"] for s in one.values())
        result = {
            "size": size,
            "delay_ms": delay * 1000,
            "searches": len(queries),
            "fhir_workers": runtime.settings.fhir.fhir_workers,
            "single": one,
            "slowest_single_p50": slowest,
            "sum_single_p50": sum(s["p50"] for s in one.values()),
            "service": summary(total),
        }
        result["service_over_single"] = result["service"]["p50"] / slowest
        log(
            f"  fetch mode: service {result['service']['p50']:.1f} ms, slowest of "
            f"{len(queries)} single searches {slowest:.1f} ms, "
            f"sum {result['sum_single_p50']:.1f} ms"
        )
        return result

"""In-process latency of one order-select call, side by side with its floor and a naive baseline.

Per record size, one loop interleaves three measurements on the same raw bytes, so that a noisy
machine slows all three alike and the ratios hold:

* floor: `json.loads(raw)` (the cost of reading the request at all);
* service: the whole call through the Flask test client (WSGI, JSON parse with duplicate-key
  check, schema validation, prefetch resolution, record, rules, cards, audit, response JSON);
* naive: `json.loads(raw)` plus fhir.resources (R4B) validation of every prefetched resource,
  what a service that builds models first would pay before running a single rule.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from typing import Any

from bench import fixtures
from bench.stats import summary, timed_ms


def make_app(data_dir: str, **extra: Any):
    """The app as `cds-hooks serve` builds it, with a fixed clock and a scratch data directory."""
    from cds_hooks.app import create_app

    config = {"NOW": fixtures.NOW, "DATA_DIR": data_dir, "LOG_LEVEL": "WARNING", **extra}
    return create_app(config)


def service_call(app) -> Callable[[bytes], Any]:
    client = app.test_client()
    url = f"/cds-services/{fixtures.SERVICE_ID}"

    def call(raw: bytes) -> Any:
        response = client.post(url, data=raw, content_type="application/json")
        if response.status_code != 200:
            raise RuntimeError(f"service answered {response.status_code}: {response.data[:300]!r}")
        return response

    return call


def naive(raw: bytes) -> int:
    """Parse, then validate every prefetched resource into a fhir.resources model."""
    from fhir.resources.R4B import get_fhir_model_class

    body = json.loads(raw)
    count = 0
    for value in body["prefetch"].values():
        if value is None:
            continue
        resources = (
            [e["resource"] for e in value.get("entry", [])]
            if value.get("resourceType") == "Bundle"
            else [value]
        )
        for resource in resources:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            count += 1
    return count


def check_answer(response: Any) -> list[str]:
    """The scenario's cards must be there: a fast wrong answer is no answer."""
    summaries = [card["summary"] for card in response.get_json()["cards"]]
    # The draft haloperidol meets the baclofen at every size; the stroke card goes away from
    # 1,000 resources on, where a Synthea patient's spinal cord paralysis is an indication.
    if not any("haloperidol" in s.lower() for s in summaries):
        raise RuntimeError(f"expected the baclofen/haloperidol card, got {summaries}")
    return summaries


def run(sizes: dict[int, tuple[int, int]], log: Callable[[str], None]) -> dict[str, Any]:
    """sizes: record size -> (service/floor iterations, naive iterations)."""
    with tempfile.TemporaryDirectory(prefix="cds-bench-") as data_dir:
        app = make_app(data_dir)
        call = service_call(app)
        tune_gc()
        results = {}
        for size, (iterations, naive_every) in sizes.items():
            raw = fixtures.body_bytes(size)
            cards = check_answer(call(raw))
            for _ in range(3):  # warm caches, pools, lazily compiled schemas
                call(raw)
                json.loads(raw)
            naive(raw)
            floor, service, slow = [], [], []
            for i in range(iterations):
                floor.append(timed_ms(lambda raw=raw: json.loads(raw)))
                service.append(timed_ms(lambda raw=raw: call(raw)))
                if i % naive_every == 0:
                    slow.append(timed_ms(lambda raw=raw: naive(raw)))
            row = {
                "size": size,
                "bytes": len(raw),
                "cards": len(cards),
                "floor": summary(floor),
                "service": summary(service),
                "naive": summary(slow),
            }
            row["service_over_floor"] = row["service"]["p50"] / row["floor"]["p50"]
            row["naive_over_service"] = row["naive"]["p50"] / row["service"]["p50"]
            results[str(size)] = row
            log(
                f"  {size:>6} resources: floor {row['floor']['p50']:.2f} ms, service "
                f"{row['service']['p50']:.2f} ms, naive {row['naive']['p50']:.1f} ms"
            )
    return results


def tune_gc() -> None:
    """The garbage-collector settings the production server runs with (gunicorn_conf)."""
    from cds_hooks.gunicorn_conf import tune_gc as production_gc

    production_gc()

"""The one path of a hook call: validate -> resolve data -> evaluate rules -> cards.

Views call `call_service`; `cds-hooks evaluate` and the benchmarks call it too, so there is a
single way a request becomes cards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests

from cds_hooks import protocol
from cds_hooks.engine import evaluate
from cds_hooks.fhir.resolver import client_for, resolve
from cds_hooks.knowledge import Knowledge
from cds_hooks.record import build_record
from cds_hooks.services import Service

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Collaborators built once per app (CONVENTIONS.md item 1), shared by all requests."""

    config: Mapping[str, Any]
    knowledge: Knowledge
    templates: dict[str, str]
    session: requests.Session
    executor: ThreadPoolExecutor
    clock: Callable[[], datetime]


@dataclass
class CallResult:
    response: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    drafts: list[str] = field(default_factory=list)


def call_service(service: Service, body: Any, runtime: Runtime) -> CallResult:
    protocol.validate(body, service.hook, service.drafts_field)
    config = runtime.config
    deadline = time.monotonic() + float(config["DEADLINE_SECONDS"])
    client = client_for(
        body,
        runtime.session,
        runtime.executor,
        timeout=float(config["FHIR_TIMEOUT_SECONDS"]),
        max_pages=int(config["FHIR_MAX_PAGES"]),
        max_bytes=int(config["FHIR_MAX_BYTES"]),
        allow_http=bool(config["ALLOW_HTTP_FHIR"]),
    )
    data = resolve(body, runtime.templates, client, deadline)
    unavailable = {
        key: f"{key}: {reason}"
        for key, reason in data.failures.items()
        if data.sources.get(key) == "failed"
    }
    record = build_record(
        service, body["context"], data.resources, data.medications, unavailable, runtime.knowledge
    )
    result = evaluate(record, runtime.knowledge, runtime.clock())
    return CallResult(
        response={"cards": result.cards(runtime.knowledge)},
        sources=dict(data.sources),
        fired=result.fired,
        skipped=sorted(result.skipped),
        drafts=[o.ref for o in record.drafts],
    )

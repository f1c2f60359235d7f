"""The one path of a hook call: validate -> resolve data -> evaluate rules -> cards.

Views call `call_service`; `cds-hooks evaluate` and the benchmarks call it too, so there is a
single way a request becomes cards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import requests

from cds_hooks import protocol
from cds_hooks.auth import Claims, Verifier
from cds_hooks.cards import Finding
from cds_hooks.engine import Evaluation, evaluate, triggers
from cds_hooks.errors import BadRequest
from cds_hooks.fhir.resolver import client_for, fetch_needed, resolve
from cds_hooks.knowledge import Knowledge
from cds_hooks.record import PatientRecord, build_drafts, build_record
from cds_hooks.services import Service
from cds_hooks.store import CallAudit, Caller, Candidate, Store

if TYPE_CHECKING:
    from cds_hooks.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Collaborators built once per app, shared by all requests."""

    settings: Settings
    knowledge: Knowledge
    templates: dict[str, str]
    session: requests.Session
    executor: ThreadPoolExecutor
    clock: Callable[[], datetime]
    store: Store | None = None  # audit, feedback, repeat suppression (docs/storage.md)
    verifier: Verifier | None = None  # client JWT check; None: auth off (docs/security.md)

    def __post_init__(self) -> None:
        # The rules' trigger sets, resolved (and checked) at start: the fast exit's one source.
        triggers(self.knowledge)


@dataclass
class CallResult:
    response: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    drafts: list[str] = field(default_factory=list)
    suppressed: dict[str, str] = field(default_factory=dict)  # card uuid -> why (not shown)
    # The suppressed cards themselves, in order: {"card", "why", "earlier": the card's uuid it
    # repeats} (the preview shows them folded).
    held_back: list[dict[str, Any]] = field(default_factory=list)


def call_service(
    service: Service, body: Any, runtime: Runtime, caller: Claims | None = None
) -> CallResult:
    """Answer a hook call; with a store, audit it (failures too) and drop repeated cards.

    `caller` is the verified client JWT's claims (None when authentication is off).
    """
    started, called_at = time.perf_counter(), runtime.clock()
    try:
        return _call_service(service, body, runtime, started, called_at, caller)
    except Exception as error:
        if runtime.store is not None:
            call = _call_audit(service, body, started, called_at)
            call.status = str(getattr(error, "code", "internal_error"))
            _audit(runtime.store, call)
        raise


def _call_service(
    service: Service,
    body: Any,
    runtime: Runtime,
    started: float,
    called_at: datetime,
    caller: Claims | None,
) -> CallResult:
    protocol.validate(body, service.hook, service.drafts_field)
    fhir = runtime.settings.fhir
    deadline = time.monotonic() + fhir.deadline_seconds
    try:
        client = client_for(
            body,
            runtime.session,
            runtime.executor,
            timeout=fhir.fhir_timeout_seconds,
            max_pages=fhir.fhir_max_pages,
            max_bytes=fhir.fhir_max_bytes,
            max_bytes_per_call=fhir.fhir_max_bytes_per_call,
            allow_http=fhir.allow_http_fhir,
            allowed=_fhir_allowlist(runtime, caller),
        )
    except BadRequest as refused:
        # fhirServer is checked only when it will be used: a complete prefetch never needs it.
        if fetch_needed(body, runtime.templates):
            raise
        log.info("fhirServer ignored (prefetch is complete): %s", refused.message)
        client = None
    data = resolve(body, runtime.templates, client, deadline)
    unavailable = {
        key: f"{key}: {reason}"
        for key, reason in data.failures.items()
        if data.sources.get(key) == "failed"
    }
    knowledge = runtime.knowledge
    drafts = build_drafts(service, body["context"], data.resources, data.medications, knowledge)
    targets = [o for o in drafts if o.selected]
    # An order nothing identifies could be anything a rule is about: it is named, not skipped.
    if triggers(knowledge).relevant(targets) or not all(o.identified for o in targets):
        record = build_record(
            service,
            body["context"],
            data.resources,
            data.medications,
            unavailable,
            knowledge,
            drafts,
        )
        result = evaluate(record, knowledge, runtime.clock())
    else:
        # Fast exit: no targeted draft is in any rule's trigger set, so no rule would run
        # (engine.evaluate gates on the same keys); the rest of the record is never built.
        record = PatientRecord(
            hook=service.hook,
            patient=None,
            conditions=[],
            drafts=drafts,
            orders_on_record=[],
            observations=[],
            allergies=[],
            unavailable=dict(unavailable),
        )
        result = Evaluation()
    pairs = result.carded(runtime.knowledge)
    call = CallResult(
        response={"cards": [card for _finding, card in pairs]},
        sources=dict(data.sources),
        fired=result.fired,
        skipped=sorted({*result.skipped, *result.failed}),  # every rule that did not run
        drafts=[o.ref for o in record.drafts],
    )
    if runtime.store is not None:
        audit = _call_audit(service, body, started, called_at)
        audit.sources, audit.drafts = call.sources, call.drafts
        audit.fired, audit.skipped = call.fired, call.skipped
        # Suppression is scoped to who called (issuer, tenant, fhirServer origin): issue 10.
        scope = Caller.of(caller, body.get("fhirServer"))
        candidates = _candidates(runtime.store, audit.patient_id, record, pairs, scope)
        suppressed = _audit(runtime.store, audit, candidates)
        call.suppressed = {uuid: why for uuid, (why, _earlier) in suppressed.items()}
        cards = call.response["cards"]
        call.held_back = [
            {"card": c, "why": suppressed[c["uuid"]][0], "earlier": suppressed[c["uuid"]][1]}
            for c in cards
            if c["uuid"] in suppressed
        ]
        call.response["cards"] = [c for c in cards if c["uuid"] not in suppressed]
    return call


def _fhir_allowlist(runtime: Runtime, caller: Claims | None) -> tuple[str, ...] | None:
    """The FHIR servers this call may reach: its issuer's `fhir_servers` when JWTs are on (none
    for a call without verified claims), else FHIR_SERVERS; None means any (public) server."""
    if runtime.verifier is not None:
        issuer = runtime.verifier.issuers.get(caller.iss) if caller is not None else None
        return issuer.fhir_servers if issuer is not None else ()
    return runtime.settings.fhir.fhir_servers or None


def _call_audit(service: Service, body: Any, started: float, called_at: datetime) -> CallAudit:
    body = body if isinstance(body, dict) else {}
    context = body.get("context") if isinstance(body.get("context"), dict) else {}
    return CallAudit(
        service_id=service.id,
        hook=service.hook,
        hook_instance=_text(body.get("hookInstance")),
        patient_id=_text(context.get("patientId")),
        called_at=called_at,
        duration_ms=(time.perf_counter() - started) * 1000,
    )


def _candidates(
    store: Store,
    patient_id: str | None,
    record: PatientRecord,
    pairs: list[tuple[Finding | None, dict[str, Any]]],
    caller: Caller,
) -> list[Candidate]:
    orders = {o.ref: o for o in record.drafts}
    candidates = []
    for finding, card in pairs:
        order = orders.get(finding.order or "") if finding else None
        candidates.append(
            Candidate(
                card=card,
                rule_id=card["source"]["topic"]["code"],
                order_ref=finding.order if finding else None,
                fingerprint=(
                    store.fingerprint(
                        patient_id,
                        finding.rule_id,
                        finding.template,
                        order,
                        _about(finding),
                        caller,
                    )
                    if finding and order and patient_id
                    else None
                ),
                client=caller.client,
            )
        )
    return candidates


def _about(finding: Finding) -> str:
    """What a card says beyond its order: a new interacting drug or lab value is a new card."""
    return "\n".join(line for line in finding.evidence if not line.startswith("Order: "))


def _audit(
    store: Store, call: CallAudit, candidates: list[Candidate] | None = None
) -> dict[str, tuple[str, str]]:
    """Write the audit; if the database fails, log it and show every card (fail open)."""
    try:
        return store.audit_call(call, candidates or [])
    except Exception:
        log.exception("audit of hook call %s failed; no cards suppressed", call.hook_instance)
        return {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None

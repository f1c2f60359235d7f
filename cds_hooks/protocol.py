"""Reading a hook call off the wire: content type, size, JSON, schema, and cross-field checks.

Everything a client can get wrong answers a 4xx with the JSON path of each problem (CDS Hooks
2.0 names no schema; ours are in `schemas/`). The JSON itself and its limits are `jsonbody`'s
(`parse_json` is re-exported here for the views). Nothing here knows about rules or FHIR servers.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from cds_hooks import schemas
from cds_hooks.errors import BadRequest, HookMismatch, Problem, UnsupportedMedia
from cds_hooks.fhir.read import as_dict, bundle_resources, ref_of
from cds_hooks.jsonbody import parse_json as parse_json  # the views' one entry for a body

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "application/fhir+json")


def check_content_type(mimetype: str | None) -> None:
    if (mimetype or "").lower() not in JSON_TYPES:
        raise UnsupportedMedia(f"send the hook request as application/json, not {mimetype!r}")


class BoundedRequest(Request):
    """A Request whose streamed body (chunked, no Content-Length) over the limit is a 413.

    Werkzeug stops reading such a body at MAX_CONTENT_LENGTH but hands back the cut-off bytes
    without an error, which would read as broken JSON (or, cut at the right place, as a shorter
    valid document).
    """

    def get_data(self, *args: Any, **kwargs: Any) -> Any:
        data = super().get_data(*args, **kwargs)
        limit = self.max_content_length
        if limit is not None and self.content_length is None and len(data) >= limit:
            raise RequestEntityTooLarge()
        return data


def validate(body: Any, hook: str, drafts_field: str) -> None:
    """Raise BadRequest listing every problem of a request for the service serving `hook`.

    A valid request is normalised in place where EHRs differ harmlessly: `patientId` and
    `encounterId` sent as references (`Patient/123`) or absolute URLs become the bare id (logged),
    as every prefetch template and rule expects (docs/integration.md).
    """
    if not isinstance(body, dict):
        raise BadRequest(
            "the body must be a JSON object (the hook request), not " + _kind(body),
            [Problem("$", "expected a JSON object")],
        )
    sent = body.get("hook")
    if isinstance(sent, str) and sent != hook:
        raise HookMismatch(
            f"this service answers the {hook!r} hook, not {sent[:100]!r}: call the service "
            "registered for that hook (see GET /cds-services)",
            [Problem("$.hook", f"expected {hook!r}")],
        )
    problems = schemas.problems(f"request-{hook}", body)
    if problems:
        raise BadRequest(f"the hook request is not valid: {schemas.summary(problems)}", problems)
    context = body["context"]
    _normalise_ids(context, body.get("hookInstance"))
    drafts = {ref_of(r) for r in bundle_resources(as_dict(context.get(drafts_field)))}
    problems = [
        Problem(
            f"$.context.selections[{i}]",
            f"context.selections[{i}] names {selection}, which is not one of the draftOrders: "
            "each selection must be the MedicationRequest/<id> of an order in draftOrders",
        )
        for i, selection in enumerate(context.get("selections", []))
        if selection not in drafts
    ]
    if problems:
        raise BadRequest(f"the hook request is not valid: {schemas.summary(problems)}", problems)


# `Patient/123`, `https://ehr.example.org/fhir/Patient/123` (the schema has checked the shape).
_CONTEXT_IDS = {"patientId": "Patient", "encounterId": "Encounter"}


def bare_id(value: str, kind: str = "Patient") -> str:
    """`Patient/123` or `https://ehr.example.org/fhir/Patient/123` -> `123`; `123` stays."""
    return value.rsplit(f"{kind}/", 1)[-1]


def _normalise_ids(context: dict[str, Any], hook_instance: Any) -> None:
    for field, kind in _CONTEXT_IDS.items():
        value = context.get(field)
        if isinstance(value, str) and "/" in value:
            bare = bare_id(value, kind)
            log.info(
                "hook %s: context.%s sent as a reference; read as the id %r",
                str(hook_instance)[:100],
                field,
                bare[:100],
            )
            context[field] = bare
    if context.get("userId") is None:
        log.info("hook %s: no context.userId (no rule needs it)", str(hook_instance)[:100])


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "a number" if isinstance(value, int | float) and not isinstance(value, bool) else "null"

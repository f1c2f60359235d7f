"""Reading a hook call off the wire: content type, size, JSON, schema, and cross-field checks.

Everything a client can get wrong answers a 4xx with the JSON path of each problem (CDS Hooks
2.0 names no schema; ours are in `schemas/`). Nothing here knows about rules or FHIR servers.
"""

from __future__ import annotations

import json
from typing import Any

from cds_hooks import schemas
from cds_hooks.errors import BadRequest, HookMismatch, Problem, UnsupportedMedia
from cds_hooks.fhir.read import as_dict, bundle_resources, ref_of

JSON_TYPES = ("application/json", "application/fhir+json")


def check_content_type(mimetype: str | None) -> None:
    if (mimetype or "").lower() not in JSON_TYPES:
        raise UnsupportedMedia(f"send the hook request as application/json, not {mimetype!r}")


def parse_json(raw: bytes) -> Any:
    """The body as JSON; duplicate keys, bad UTF-8 and absurd nesting are client errors."""
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as error:
        raise BadRequest(f"the body is not UTF-8 text: {error.reason}") from None
    except json.JSONDecodeError as error:
        raise BadRequest(
            f"the body is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        ) from None
    except _DuplicateKey as error:
        raise BadRequest(f"the body repeats the key {str(error)[:100]!r} in one object") from None
    except RecursionError:
        raise BadRequest("the body nests JSON too deeply") from None


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def validate(body: Any, hook: str, drafts_field: str) -> None:
    """Raise BadRequest listing every problem of a request for the service serving `hook`."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", [Problem("$", "not an object")])
    sent = body.get("hook")
    if isinstance(sent, str) and sent != hook:
        raise HookMismatch(
            f"this service answers the {hook!r} hook, not {sent[:100]!r}",
            [Problem("$.hook", f"expected {hook!r}")],
        )
    problems = schemas.problems(f"request-{hook}", body)
    if problems:
        raise BadRequest("the hook request is not valid", problems)
    context = body["context"]
    drafts = {ref_of(r) for r in bundle_resources(as_dict(context.get(drafts_field)))}
    problems = [
        Problem(f"$.context.selections[{i}]", f"{selection} is not in draftOrders")
        for i, selection in enumerate(context.get("selections", []))
        if selection not in drafts
    ]
    if problems:
        raise BadRequest("selections must point into draftOrders", problems)

"""The service's one error tree, and how each error reaches a client.

    CdsError                      status_code, code, to_dict()
    ├── BadRequest          400   bad_request: the body is not a valid hook call; lists problems
    │   └── HookMismatch    400   hook_mismatch: the body's hook is not this service's hook
    ├── Unauthorized        401   unauthorized: bare, the reason goes to the log only
    ├── NotFound            404   not_found: unknown service id or route
    ├── MethodNotAllowed    405   method_not_allowed
    ├── PreconditionFailed  412   prefetch_missing: no prefetch and no fhirServer for some key
    ├── PayloadTooLarge     413   payload_too_large
    └── UnsupportedMedia    415   unsupported_media_type

    FhirError                     a FHIR server could not give us data; never reaches a client
    ├── FhirTemporaryError        timeouts, 429, 5xx, connection errors: may work later
    └── FhirFatalError            401/403/404, garbage bodies: will not work with this request

Client errors answer JSON `{"error": code, "message": ..., "problems": [...]}`; FHIR errors
degrade the answer (the rules needing that data are skipped and an info card says so).
The split of FHIR failures follows smart-on-fhir/cumulus-fhir-support `errors.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request, located by its JSON path (e.g. `$.context.selections[0]`)."""

    path: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class CdsError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = problems or []

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.problems:
            body["problems"] = [p.to_dict() for p in self.problems]
        return body


class BadRequest(CdsError):
    status_code = 400
    code = "bad_request"


class HookMismatch(BadRequest):
    code = "hook_mismatch"


class Unauthorized(CdsError):
    status_code = 401
    code = "unauthorized"

    def to_dict(self) -> dict[str, Any]:
        # Best practice: a bare 401, nothing that helps an attacker tune a token.
        return {"error": self.code}


class NotFound(CdsError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(CdsError):
    status_code = 405
    code = "method_not_allowed"


class PreconditionFailed(CdsError):
    status_code = 412
    code = "prefetch_missing"


class PayloadTooLarge(CdsError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMedia(CdsError):
    status_code = 415
    code = "unsupported_media_type"


class FhirError(Exception):
    """A FHIR server did not give us usable data. `reason` is safe to show in a card."""

    temporary = False

    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class FhirTemporaryError(FhirError):
    temporary = True


class FhirFatalError(FhirError):
    temporary = False


def fhir_error_for_status(status: int, url_path: str) -> FhirError:
    """Map a FHIR server's HTTP status to our error (one place, as fhir-py does)."""
    reason = f"FHIR server answered HTTP {status} for {url_path}"
    if status in (408, 429) or status >= 500:
        return FhirTemporaryError(reason, status)
    return FhirFatalError(reason, status)

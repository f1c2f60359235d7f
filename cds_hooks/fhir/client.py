"""The one place that talks to a FHIR server: bounded, token-safe GETs, paging, parallel searches.

Everything here works against an absolute `deadline` (a `clock()` time for the whole hook call):
no request starts after it, every request's timeout is cut to the time left, and the parallel
helpers return at the deadline whatever is still running (CDS Hooks 2.0 "FHIR Resource Access";
services should answer "on the order of 500 ms").

The bearer token goes only to the origin (scheme, host, port) of `fhirServer`, compared on each
URL as the HTTP library will connect to it (`cds_hooks.outbound`): redirects are followed by hand
and only on that origin, and `next` links elsewhere are not followed. Every URL is checked before it
is requested, wherever it came from. The token and the Authorization header are never logged; logs
carry URL paths only (queries hold patient ids).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import requests

from cds_hooks import outbound, protocol
from cds_hooks.errors import (
    CdsError,
    FhirError,
    FhirFatalError,
    FhirTemporaryError,
    fhir_error_for_status,
)
from cds_hooks.fhir.read import bundle_resources, next_link

log = logging.getLogger(__name__)

T = TypeVar("T")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES = frozenset({429, 503})
_CHUNK = 64 * 1024
# Longer search URLs go as POST _search: 2,048 bytes is the request-line limit of many EHRs,
# proxies and servers (the CDS Hooks sandbox's "URI too long", cds-hooks/sandbox#47).
MAX_GET_URL_BYTES = 2048
_FORM = "application/x-www-form-urlencoded"

# Card-safe wording for the statuses a clinician's sidebar is most likely to see; the class of
# the error (temporary or fatal) always comes from `fhir_error_for_status`.
_STATUS_REASONS = {
    401: "the FHIR server refused the access token (HTTP 401)",
    403: "the access token does not allow reading this data (HTTP 403)",
    404: "the FHIR server does not know this resource or search (HTTP 404)",
    429: "the FHIR server is busy and asked us to slow down (HTTP 429)",
    500: "the FHIR server had an internal error (HTTP 500)",
    502: "the FHIR server could not be reached through its gateway (HTTP 502)",
    503: "the FHIR server is temporarily unavailable (HTTP 503)",
    504: "the FHIR server's gateway timed out (HTTP 504)",
}


def _path(url: str) -> str:
    """The path of a URL, for logs and messages (never the query: it holds patient ids)."""
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return "?"


def _is_read(query: str) -> bool:
    """`Type/id` or `Type/id/_history/vid` (prefetch templates are reads or searches)."""
    parts = urlsplit(query)
    if parts.query or parts.scheme:
        return False
    segments = parts.path.strip("/").split("/")
    shaped = len(segments) == 2 or (len(segments) == 4 and segments[2] == "_history")
    return shaped and segments[0][:1].isupper() and all(segments)


def _data_resources(bundle: dict) -> list[dict]:
    # OperationOutcome entries (search.mode "outcome") are warnings about the search, not data.
    return [r for r in bundle_resources(bundle) if r.get("resourceType") != "OperationOutcome"]


class FhirClient:
    """A FHIR REST client for one hook call: one server, one token, one deadline per call.

    `session` is shared by the app (connection pooling); this class never changes it. `executor`
    runs `fetch_all`/`read_all` in parallel; pass the app's shared pool (a private one is created
    on first use otherwise; `close()` shuts it down).
    """

    max_redirects = 3
    max_retries = 2
    retry_backoff = (0.1, 0.3)  # seconds before the 1st and 2nd retry when no Retry-After
    max_retry_after = 1.0  # a Retry-After longer than this is not waited for

    def __init__(
        self,
        base_url: str,
        access_token: str | None,
        *,
        session: requests.Session,
        timeout: float = 3.0,
        max_pages: int = 20,
        max_bytes: int = 20_000_000,
        max_bytes_per_call: int | None = None,
        executor: concurrent.futures.Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
        refusal: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._origin = outbound.origin(self.base_url)
        self._session = session
        self._timeout = timeout
        self._max_pages = max_pages
        self._max_bytes = max_bytes
        # One budget for the whole hook call: every page of every search and read counts.
        self._budget = max_bytes_per_call
        self._read = 0
        # Set when this server must not be contacted at all (not on the caller's allowlist).
        self._refusal = refusal
        self._executor = executor
        self._own_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._clock = clock
        self._headers = {"Accept": "application/fhir+json"}
        if access_token:
            self._headers["Authorization"] = f"Bearer {access_token}"

    def __repr__(self) -> str:  # never show the token
        return f"FhirClient({self.base_url!r})"

    # ---- public API -------------------------------------------------------------------------

    def search(self, query: str, deadline: float) -> list[dict]:
        """Resources of every entry (match and include) of a search, over all its pages.

        A search whose URL would pass MAX_GET_URL_BYTES goes as `POST [base]/[type]/_search`
        with the parameters form-encoded (FHIR R4 3.1.0.1.1), as many servers refuse long URLs.
        """
        url = self.url_for(query)
        path, _, params = url.partition("?")
        if len(url.encode()) > MAX_GET_URL_BYTES and params:
            bundle = self._get_bundle(f"{path.rstrip('/')}/_search", deadline, form=params)
            return self._page_on(bundle, None, deadline)
        bundle = self._get_bundle(url, deadline)
        return self._page_on(bundle, url, deadline)

    def read(self, reference: str, deadline: float) -> dict | None:
        """One resource by `Type/id` (or an absolute URL on this server); None if 404/410."""
        url = self.url_for(reference)
        data = self._get(url, deadline, missing_ok=True)
        if data is None:
            return None
        if data.get("resourceType") == "OperationOutcome":
            raise FhirFatalError("the FHIR server answered a read with an OperationOutcome")
        return data

    def follow_pages(self, bundle: dict, deadline: float) -> list[dict]:
        """A (prefetched) searchset's resources plus those of all its later pages."""
        return self._page_on(bundle, None, deadline)

    def fetch(self, query: str, deadline: float) -> list[dict]:
        """A prefetch-style query: a read (`Patient/1`: [it], or [] when 404/410) or a search."""
        if _is_read(query):
            resource = self.read(query, deadline)
            return [resource] if resource is not None else []
        return self.search(query, deadline)

    def fetch_all(
        self, queries: Mapping[str, str], deadline: float
    ) -> dict[str, list[dict] | FhirError]:
        """`fetch` in parallel: one result list or FhirError per key, back by the deadline."""
        calls = {key: (lambda q=query: self.fetch(q, deadline)) for key, query in queries.items()}
        return self.run_all(calls, deadline)

    def read_all(self, references: Iterable[str], deadline: float) -> dict[str, dict]:
        """Read resources in parallel; those not found or failed (logged) are simply absent."""
        refs = list(dict.fromkeys(references))
        calls = {ref: (lambda r=ref: self.read(r, deadline)) for ref in refs}
        found: dict[str, dict] = {}
        for ref, result in self.run_all(calls, deadline).items():
            if isinstance(result, FhirError):
                log.warning("FHIR read of %s failed: %s", _path(ref), result.reason)
            elif result is not None:
                found[ref] = result
        return found

    def run_all(
        self, calls: Mapping[str, Callable[[], T]], deadline: float
    ) -> dict[str, T | FhirError]:
        """Run calls on the executor and wait until the deadline at most.

        A call still running then is reported as a temporary error and left to finish on its own
        (its HTTP timeout is already cut to the deadline, so it does not run long).
        """
        started = self._clock()
        if not calls:
            return {}
        executor = self._get_executor()
        futures = {key: executor.submit(call) for key, call in calls.items()}
        budget = max(0.0, deadline - started)
        concurrent.futures.wait(futures.values(), timeout=max(0.0, deadline - self._clock()))
        results: dict[str, T | FhirError] = {}
        for key, future in futures.items():
            if not future.done():
                future.cancel()
                log.warning("FHIR call for %r still running at the deadline; not waited for", key)
                results[key] = FhirTemporaryError(
                    f"the FHIR server did not answer within {budget:.1f} s"
                )
                continue
            try:
                results[key] = future.result()
            except FhirError as exc:
                results[key] = exc
            except Exception:
                log.exception("unexpected error in FHIR call for %r", key)
                results[key] = FhirFatalError(
                    "an unexpected error occurred while reading FHIR data"
                )
        return results

    def url_for(self, query: str) -> str:
        """The absolute URL of a relative query/reference; it must stay on this server's origin."""
        if urlsplit(query).scheme:
            url = query
        else:  # relative to the base, as prefetch templates are ("Condition?patient=1")
            url = f"{self.base_url}/{query.lstrip('/')}"
        if not self.same_origin(url):
            raise FhirFatalError("the FHIR address is not on this request's FHIR server")
        return url

    def relative_reference(self, reference: str) -> str | None:
        """`Type/id...` of a reference that is relative or an absolute URL under base_url."""
        if not urlsplit(reference).scheme:
            return reference.lstrip("/") or None
        prefix = self.base_url + "/"
        if reference.startswith(prefix) and self.same_origin(reference):
            return reference[len(prefix) :] or None
        return None

    def same_origin(self, url: str) -> bool:
        """True when `url` is safe (outbound.parse) and connects to fhirServer's origin."""
        return self._origin is not None and outbound.origin(url) == self._origin

    def close(self) -> None:
        """Shut down the private executor, if one was created (a shared one is the caller's)."""
        with self._lock:
            if self._own_executor is not None:
                self._own_executor.shutdown(wait=False, cancel_futures=True)
                self._own_executor = None

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- internals --------------------------------------------------------------------------

    def _get_executor(self) -> concurrent.futures.Executor:
        if self._executor is not None:
            return self._executor
        with self._lock:
            if self._own_executor is None:
                self._own_executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=8, thread_name_prefix="fhir"
                )
            return self._own_executor

    def _page_on(self, bundle: dict, url: str | None, deadline: float) -> list[dict]:
        """Collect a Bundle's resources, then follow its `next` links (same origin, no loops)."""
        resources = _data_resources(bundle)
        seen: set[str] = set()
        if url:
            seen.add(url)
        for link in bundle.get("link") or []:
            if isinstance(link, dict) and link.get("relation") == "self":
                if isinstance(link.get("url"), str):
                    seen.add(link["url"])
        pages = 1
        while (link := next_link(bundle)) is not None:
            nxt = self._resolve_link(url, link)
            if nxt in seen:
                log.warning("FHIR paging loop at %s; keeping %d pages", _path(nxt), pages)
                break
            if not self.same_origin(nxt):
                log.warning("FHIR next link leaves the FHIR server; not followed (%d pages)", pages)
                break
            if pages >= self._max_pages:
                log.warning("FHIR search has more than %d pages; keeping those", self._max_pages)
                break
            seen.add(nxt)
            bundle = self._get_bundle(nxt, deadline)
            resources.extend(_data_resources(bundle))
            url = nxt
            pages += 1
        return resources

    def _resolve_link(self, current: str | None, link: str) -> str:
        """A next link as an absolute URL (RFC 3986: relative to the page it came from)."""
        if urlsplit(link).scheme:
            return link
        if current and not link.startswith("/"):
            return urljoin(current, link)
        return urljoin(self.base_url + "/", link)

    def _get_bundle(self, url: str, deadline: float, *, form: str | None = None) -> dict:
        data = self._get(url, deadline, form=form)
        assert data is not None
        kind = data.get("resourceType")
        if kind == "Bundle":
            return data
        if kind == "OperationOutcome":
            raise FhirFatalError("the FHIR server answered the search with an OperationOutcome")
        raise FhirFatalError(
            "the FHIR server answered the search with something other than a Bundle"
        )

    def _get(
        self, url: str, deadline: float, *, missing_ok: bool = False, form: str | None = None
    ) -> dict | None:
        """GET (or, with `form`, POST a search) a FHIR JSON object: manual same-origin
        redirects, retries for 429/503."""
        hops = 0
        attempt = 0
        while True:
            response = self._send(url, deadline, form=form)
            try:
                status = response.status_code
                location = response.headers.get("Location")
                if status in _REDIRECTS and location:
                    hops += 1
                    target = urljoin(url, location)
                    if not self.same_origin(target):
                        log.warning("FHIR server redirected %s to another origin", _path(url))
                        raise FhirFatalError(
                            "the FHIR server redirected to another server, which we do not follow"
                        )
                    if hops > self.max_redirects:
                        raise FhirFatalError("the FHIR server redirected too many times")
                    url = target
                    continue
                if status in _RETRY_STATUSES and attempt < self.max_retries:
                    delay = self._retry_delay(response, attempt)
                    if delay is not None and self._clock() + delay < deadline:
                        attempt += 1
                        log.info(
                            "FHIR server answered %d for %s; retry in %.2f s",
                            status,
                            _path(url),
                            delay,
                        )
                        time.sleep(delay)
                        continue
                if missing_ok and status in (404, 410):
                    return None
                if not 200 <= status < 300:
                    raise self._status_error(status, url)
                return self._parse(response, deadline)
            finally:
                response.close()

    def _send(self, url: str, deadline: float, *, form: str | None = None) -> requests.Response:
        if self._refusal is not None:
            raise FhirFatalError(self._refusal)
        if self._budget is not None and self._read >= self._budget:
            raise self._over_budget()
        if not self.same_origin(url):  # every URL, wherever it came from, just before it is sent
            log.warning("FHIR GET refused: %s is not on the FHIR server's origin", _path(url))
            raise FhirFatalError("the FHIR address is not on this request's FHIR server")
        left = deadline - self._clock()
        if left <= 0:
            raise FhirTemporaryError("deadline reached before the FHIR server could be asked")
        timeout = min(self._timeout, left)
        try:
            if form is None:
                response = self._session.get(
                    url, headers=self._headers, timeout=timeout, allow_redirects=False, stream=True
                )
            else:
                response = self._session.post(
                    url,
                    data=form,
                    headers={**self._headers, "Content-Type": _FORM},
                    timeout=timeout,
                    allow_redirects=False,
                    stream=True,
                )
        except outbound.DestinationRefused as refused:
            log.warning("FHIR GET %s refused: %s", _path(url), refused)
            raise FhirFatalError(
                "the FHIR server's address is on an internal network, which this service does "
                "not contact"
            ) from None
        except requests.Timeout:
            log.warning("FHIR GET %s timed out after %.2f s", _path(url), timeout)
            raise FhirTemporaryError(
                f"the FHIR server did not answer within {timeout:.1f} s"
            ) from None
        except requests.ConnectionError as exc:
            log.warning("FHIR GET %s: cannot connect (%s)", _path(url), type(exc).__name__)
            raise FhirTemporaryError("the FHIR server could not be reached") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
            log.warning("FHIR GET %s: invalid URL (%s)", _path(url), type(exc).__name__)
            raise FhirFatalError("the FHIR server address is not a valid URL") from None
        except requests.RequestException as exc:
            log.warning("FHIR GET %s failed (%s)", _path(url), type(exc).__name__)
            raise FhirTemporaryError("the request to the FHIR server failed") from None
        log.debug("FHIR GET %s -> %d", _path(url), response.status_code)
        return response

    def _count(self, size: int) -> None:
        if self._budget is None:
            return
        with self._lock:  # searches run in parallel on the executor
            self._read += size
            over = self._read > self._budget
        if over:
            raise self._over_budget()

    def _over_budget(self) -> FhirFatalError:
        log.warning("FHIR reads for this call passed FHIR_MAX_BYTES_PER_CALL (%d)", self._budget)
        mb = (self._budget or 0) / 1_000_000
        return FhirFatalError(
            f"this call read over {mb:g} MB from the FHIR server; the rest was not"
        )

    def _retry_delay(self, response: requests.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when the server asks for too long a wait."""
        header = response.headers.get("Retry-After")
        if header is None:
            return self.retry_backoff[min(attempt, len(self.retry_backoff) - 1)]
        try:
            seconds = float(header.strip())
        except ValueError:  # an HTTP date: not worth parsing for a sub-second budget
            return self.retry_backoff[min(attempt, len(self.retry_backoff) - 1)]
        if seconds < 0 or seconds > self.max_retry_after:
            return None
        return seconds

    def _status_error(self, status: int, url: str) -> FhirError:
        error = fhir_error_for_status(status, _path(url))
        log.warning("FHIR GET %s -> HTTP %d", _path(url), status)
        if status in _STATUS_REASONS:
            return type(error)(_STATUS_REASONS[status], status)
        return error

    def _parse(self, response: requests.Response, deadline: float) -> dict:
        """Read at most max_bytes of body before the deadline and parse it as a FHIR JSON object."""
        limit = self._max_bytes
        too_large = FhirFatalError(
            f"the FHIR server's answer was too large (over {limit / 1_000_000:g} MB)"
        )
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        try:
            for chunk in response.iter_content(_CHUNK):
                body += chunk
                self._count(len(chunk))
                if len(body) > limit:
                    log.warning("FHIR answer from %s over %d bytes", _path(response.url), limit)
                    raise too_large
                if self._clock() > deadline:
                    raise FhirTemporaryError("the FHIR server's answer did not finish in time")
        except requests.Timeout:
            raise FhirTemporaryError("the FHIR server stopped sending its answer") from None
        except requests.RequestException as exc:
            log.warning(
                "FHIR answer from %s broke off (%s)", _path(response.url), type(exc).__name__
            )
            raise FhirTemporaryError("the FHIR server's answer broke off") from None
        content_type = response.headers.get("Content-Type", "").lower()
        if "html" in content_type or body.lstrip()[:1] == b"<":
            raise FhirFatalError("the FHIR server sent a web page instead of FHIR JSON")
        try:  # the hook body's parser and limits: depth, sizes, NaN, absurd numbers, bad UTF-8
            data: Any = protocol.parse_json(bytes(body))
        except CdsError as error:
            log.warning("FHIR answer from %s refused: %s", _path(response.url), error.message)
            raise FhirFatalError(
                "the FHIR server's answer is not valid JSON within this service's limits"
            ) from None
        except (ValueError, RecursionError):  # defence in depth: never a 500 for a FHIR page
            raise FhirFatalError("the FHIR server's answer is not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            raise FhirFatalError("the FHIR server's answer is not a FHIR resource")
        return data

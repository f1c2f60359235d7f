"""JWK Sets fetched from registered URLs: cached, refetched when stale or on an unknown kid.

Fetched through the app's outbound session (cds_hooks.outbound: the same URL and destination
policy as FHIR requests), bounded in time and size, no redirects.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from cds_hooks import outbound
from cds_hooks.auth.issuers import MAX_JWKS_BYTES, AuthError, usable_keys

log = logging.getLogger("cds_hooks.auth")  # one logger for the package (docs/security.md)


@dataclass
class _CachedSet:
    keys: dict[str, dict]
    fetched_at: float


class JwksCache:
    """JWK Sets fetched from allowlisted URLs: cached, refetched when stale or on an unknown kid.

    An unknown `kid` refetches at most once per `min_refresh` seconds per URL, so a stream of
    tokens with made-up kids cannot turn the service into a request amplifier.
    """

    def __init__(
        self,
        session: requests.Session,
        *,
        timeout: float = 2.0,
        max_age: float = 3600.0,
        min_refresh: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._session = session
        self._timeout = timeout
        self._max_age = max_age
        self._min_refresh = min_refresh
        self._clock = clock
        self._sets: dict[str, _CachedSet] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def key(self, url: str, kid: str) -> dict:
        with self._guard:
            lock = self._locks.setdefault(url, threading.Lock())
        with lock:  # one fetch per URL at a time; others wait and reuse it
            cached = self._sets.get(url)
            now = self._clock()
            fresh = cached is not None and now - cached.fetched_at < self._max_age
            if fresh and cached is not None and kid in cached.keys:
                return cached.keys[kid]
            may_fetch = cached is None or now - cached.fetched_at >= self._min_refresh
            if may_fetch:
                try:
                    cached = _CachedSet(self._fetch(url), now)
                    self._sets[url] = cached
                except AuthError as error:
                    if cached is None:
                        raise
                    # Keep serving the last good set if the key server is down for a while.
                    log.warning("JWKS refresh failed (%s); keeping the cached set", error)
            if cached is not None and kid in cached.keys:
                return cached.keys[kid]
        raise AuthError(f"kid {kid[:64]!r} is not in the JWKS at {url[:200]}")

    def _fetch(self, url: str) -> dict[str, dict]:
        try:
            response = self._session.get(
                url,
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
                headers={"Accept": "application/json"},
            )
        except outbound.DestinationRefused as error:
            raise AuthError(f"JWKS fetch from {url[:200]} refused: {error}") from None
        except requests.RequestException as error:
            raise AuthError(f"JWKS fetch from {url[:200]} failed: {type(error).__name__}") from None
        try:
            if response.status_code != 200:
                raise AuthError(f"JWKS fetch from {url[:200]} answered HTTP {response.status_code}")
            body = bytearray()
            deadline = self._clock() + self._timeout
            for chunk in response.iter_content(16 * 1024):
                body += chunk
                if len(body) > MAX_JWKS_BYTES or self._clock() > deadline:
                    raise AuthError(f"JWKS at {url[:200]} is too large or too slow")
        except requests.RequestException as error:
            raise AuthError(
                f"JWKS fetch from {url[:200]} broke off: {type(error).__name__}"
            ) from None
        finally:
            response.close()
        try:
            document = json.loads(bytes(body))
        except ValueError:
            raise AuthError(f"JWKS at {url[:200]} is not JSON") from None
        keys, refused = usable_keys(document)
        if refused:
            log.warning("JWKS at %s: keys left out: %s", url[:200], "; ".join(refused)[:500])
        log.info("JWKS fetched from %s: %d signing keys", url[:200], len(keys))
        return keys

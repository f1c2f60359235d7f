"""The one policy for requests this service makes (FHIR reads, JWK Set fetches): where they may go.

Two checks, both here, both used by the FHIR client and the JWKS fetcher through `session()`:

* The URL (`parse`): read exactly as requests and urllib3 will connect to it (the same parser that
  prepares the request), and refused when it carries user info, a backslash, a control or
  whitespace character, or a host that the HTTP library would rewrite (percent-escapes, non-ASCII,
  a trailing dot). `https://evil.example\\@ehr.example/` names `ehr.example` to `urllib.parse` but
  connects to `evil.example`: comparing origins on `Target` closes that gap.
* The destination (`Destinations`): the host is resolved once, every address it resolves to must
  be public (not loopback, unspecified, link-local, private, shared 100.64/10, multicast, reserved
  or an IPv6 form embedding one of those), in every numeric spelling (`127.1`, `2130706433`,
  `0x7f000001`, `[::ffff:127.0.0.1]`), and the connection goes to the address that was checked (no
  second lookup, so DNS rebinding cannot swap it). TLS still verifies the certificate for the host
  name (SNI and Host stay the name). `allow_private` (CDS_FHIR_ALLOW_PRIVATE) admits loopback and
  private addresses for local sandboxes; link-local (cloud metadata) and the rest stay refused.

With an HTTPS proxy (CDS_HTTPS_PROXY) the proxy connects, so the address is checked but not
pinned: the proxy resolves the name again and is trusted to enforce its own egress rules.
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import certifi
import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection
from urllib3.util import parse_url

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_CHARS = 8192
# Control characters, space and every other whitespace, backslash: never in a URL we follow.
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f\\\s]")
# A host name as the HTTP library connects to it, unchanged by its normalisation.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# What CDS_FHIR_ALLOW_PRIVATE admits: a sandbox's own machine and its private networks.
SANDBOX_KINDS = frozenset({"loopback", "private", "shared"})


class UnsafeURL(ValueError):
    """A URL this service will not request; str() says why (no query: it may hold patient ids)."""


class DestinationRefused(Exception):
    """The host resolves to an address this service does not connect to; str() says why.

    Not an OSError on purpose: urllib3 would wrap it into a generic connection error and retry.
    """


@dataclass(frozen=True)
class Target:
    """A URL as the HTTP library will send it: the prepared URL and the parts it connects to."""

    url: str
    scheme: str
    host: str  # lower case; an IPv6 literal without brackets
    port: int
    path: str  # normalised by the same parser (dot segments resolved), "/" at least

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    def under(self, base: Target) -> bool:
        """Same origin as `base` and at or below its path (segment by segment)."""
        if self.origin != base.origin:
            return False
        prefix = base.path.rstrip("/")
        return not prefix or self.path == prefix or self.path.startswith(prefix + "/")


def parse(url: Any, schemes: Sequence[str] = ("https", "http")) -> Target:
    """`url` as the request will be made, or UnsafeURL saying why it is refused."""
    if not isinstance(url, str) or not url:
        raise UnsafeURL("the URL is empty")
    if len(url) > MAX_URL_CHARS:
        raise UnsafeURL("the URL is too long")
    if _FORBIDDEN.search(url):
        raise UnsafeURL("the URL holds a backslash, a space or a control character")
    if not url.isascii():
        raise UnsafeURL("the URL holds non-ASCII characters")
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
        parts = parse_url(prepared.url or "")
        typed = parse_url(url)
    except (requests.RequestException, ValueError):
        raise UnsafeURL("the URL cannot be parsed") from None
    if parts.auth is not None or typed.auth is not None or "@" in (typed.netloc or ""):
        raise UnsafeURL("the URL carries user info (user:password@)")
    scheme = (parts.scheme or "").lower()
    if scheme not in schemes:
        raise UnsafeURL(f"the URL's scheme must be {' or '.join(schemes)}")
    host = parts.host or ""
    written = _written_host(url)
    if not host or written is None or written.lower() != host:
        raise UnsafeURL("the URL's host changes when normalised")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare == host and not _HOST_NAME.match(host):
        raise UnsafeURL("the URL's host is not a plain host name or address")
    if bare != host:
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            raise UnsafeURL("the URL's host is not a valid IPv6 address") from None
    port = parts.port or DEFAULT_PORTS[scheme]
    return Target(prepared.url or "", scheme, bare, port, parts.path or "/")


def _written_host(url: str) -> str | None:
    """The host exactly as written between `//` and the port, path, query or fragment."""
    _scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] if end > 0 else None
    return authority.rsplit(":", 1)[0] if ":" in authority else authority


def origin(url: Any) -> tuple[str, str, int] | None:
    """The (scheme, host, port) a URL connects to, or None when `parse` refuses it."""
    try:
        return parse(url).origin
    except UnsafeURL:
        return None


# ---- destinations ------------------------------------------------------------------------------


def address_kind(address: IPAddress) -> str | None:
    """Why an address is not public ("loopback", "private", ...), or None for a public one.

    IPv6 forms that carry an IPv4 address (mapped, compatible, 6to4, Teredo, NAT64) are judged
    by the IPv4 address they carry.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_kind(embedded) or None
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared"
    if address.is_private and not address.is_reserved:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "special-purpose"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    packed = address.packed
    if address in _NAT64 or (packed[:12] == bytes(12) and int(address) > 1):
        return ipaddress.IPv4Address(packed[12:])  # NAT64, or IPv4-compatible ::a.b.c.d
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a host spells numerically, in any form the C resolver accepts, or None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:  # 127.1, 2130706433, 0x7f000001, 0177.0.0.1: the legacy inet_aton forms
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


Resolver = Callable[[str, int], list[IPAddress]]


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Addresses of `host` from the system resolver, in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


@dataclass(frozen=True)
class Destinations:
    """Which addresses requests may connect to (see the module docstring)."""

    allow_private: bool = False
    resolver: Resolver | None = None  # None: the system resolver (tests pass their own)

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address of `host`, all checked; DestinationRefused if any one is refused."""
        name = host.lower().rstrip(".")
        if name == "localhost" or name.endswith(".localhost"):
            addresses: list[IPAddress] = [ipaddress.ip_address("127.0.0.1")]  # RFC 6761
        elif (literal := literal_address(name)) is not None:
            addresses = [literal]
        else:
            # A failed lookup (socket.gaierror) propagates: it is an unreachable server, not a
            # refused one (urllib3 words it as a connection error).
            addresses = (self.resolver or system_resolver)(name, port)
        if not addresses:
            raise DestinationRefused(f"{host} has no address")
        for address in addresses:
            kind = address_kind(address)
            if kind is not None and not (self.allow_private and kind in SANDBOX_KINDS):
                hint = " (CDS_FHIR_ALLOW_PRIVATE=true admits it)" if kind in SANDBOX_KINDS else ""
                raise DestinationRefused(
                    f"{host} is a {kind} address ({address}), which this service does not "
                    f"contact{hint}"
                )
        return addresses


# ---- the transport: connections pinned to checked addresses ----------------------------------


class _PinnedMixin:
    """`_new_conn` of a urllib3 connection: resolve through the policy, connect to that address.

    The connection keeps `host` (the name) for the Host header, SNI and certificate checks.
    """

    destinations: Destinations
    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        try:
            addresses = self.destinations.resolve(self.host, self.port)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error  # type: ignore[arg-type]
        last: OSError | None = None
        for address in addresses:
            try:
                sock = urllib3_connection.create_connection(
                    (str(address), self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as error:
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from error
            except OSError as error:
                last = error
                continue
            return sock
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}")  # type: ignore[arg-type]


def _pools(destinations: Destinations) -> dict[str, type]:
    http_conn = type("PinnedHTTPConnection", (_PinnedMixin, HTTPConnection), {})
    https_conn = type("PinnedHTTPSConnection", (_PinnedMixin, HTTPSConnection), {})
    http_conn.destinations = https_conn.destinations = destinations  # type: ignore[attr-defined]
    return {
        "http": type("PinnedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("PinnedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


class PolicyAdapter(HTTPAdapter):
    """Every request is URL-checked; every direct connection goes to a checked address."""

    def __init__(
        self,
        destinations: Destinations,
        ssl_context: ssl.SSLContext | None = None,
        pool_size: int = requests.adapters.DEFAULT_POOLSIZE,
    ):
        self.destinations = destinations
        self._ssl_context = ssl_context
        # Kept connections per host: as many as may run at once (the FHIR executor's threads),
        # else each search past the pool opens a new connection (and TLS handshake) and drops it.
        super().__init__(max_retries=0, pool_maxsize=pool_size)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._ssl_context is not None:
            kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pools(self.destinations)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        if self._ssl_context is not None:
            proxy_kwargs.setdefault("ssl_context", self._ssl_context)
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            target = parse(request.url)
        except UnsafeURL as error:
            raise requests.exceptions.InvalidURL(str(error), request=request) from None
        if kwargs.get("proxies") and requests.utils.select_proxy(
            str(request.url), kwargs["proxies"]
        ):
            # The proxy connects, not us: check what the name resolves to here, at least.
            self.destinations.resolve(target.host, target.port)
        return super().send(request, *args, **kwargs)


def ssl_context(ca_bundle: str = "") -> ssl.SSLContext:
    """certifi's roots plus, if given, a PEM bundle of the hospital's own CAs."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"CDS_CA_BUNDLE: cannot load {ca_bundle}: {error}") from None
    return context


def session(
    destinations: Destinations,
    *,
    ca_bundle: str = "",
    https_proxy: str = "",
    pool_size: int = requests.adapters.DEFAULT_POOLSIZE,
) -> requests.Session:
    """A requests Session for outbound calls under this policy (one per app, shared)."""
    result = requests.Session()
    # Never let ~/.netrc or proxy variables replace the EHR's bearer token or reroute it: the
    # proxy, if any, is the one configured explicitly (CDS_HTTPS_PROXY).
    result.trust_env = False
    # Shared by every user's calls: a cookie one EHR call sets must not ride on the next one.
    result.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = PolicyAdapter(
        destinations, ssl_context(ca_bundle) if ca_bundle else None, pool_size=pool_size
    )
    result.mount("https://", adapter)
    result.mount("http://", adapter)
    if https_proxy:
        result.proxies = {"https": https_proxy}
    return result

"""Outbound requests: no token leaves the FHIR server's origin, no call reaches an internal host.

Two loopback HTTP servers play the EHR's FHIR server and an attacker's catcher; the tricks come
through every place a URL can come from (next links fetched and prefetched, redirects). Every
internal-address spelling is refused before any connection: the socket-level connect is patched
to record and refuse, so nothing is ever sent off loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from cds_hooks import create_app, outbound
from cds_hooks.outbound import DestinationRefused, Destinations, UnsafeURL
from tests.factories import (
    PATIENT_ID,
    STROKE,
    condition,
    fhir_authorization,
    hook_request,
    med_request,
    searchset,
)
from tests.servers import LoopbackHTTP, QuietHandler, running

SELECT = "/cds-services/antispasticity-order-select"
TOKEN = "fhir-access-token-outbound"
DEGRADED = "DATA-UNAVAILABLE"
PUBLIC = "93.184.215.14"  # a public address: never actually contacted (connect is patched)


class Server(LoopbackHTTP):
    """A loopback HTTP server answering from `routes` (path -> status, headers, body)."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization)
        self.cookies: list[str | None] = []  # the Cookie header of each request
        self.routes: dict[str, tuple[int, dict[str, str], Any]] = {}


class _Handler(QuietHandler):
    server: Server

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        self.server.cookies.append(self.headers.get("Cookie"))
        path = self.path.split("?", 1)[0]
        status, headers, body = self.server.routes.get(path, (404, {}, {"resourceType": "x"}))
        self.send(status, body, **headers)


@pytest.fixture
def ehr() -> Iterator[Server]:
    with running(Server()) as server:
        yield server


@pytest.fixture
def catcher() -> Iterator[Server]:
    """The attacker's server: must never see a request, least of all the token."""
    with running(Server()) as server:
        yield server


def _app(knowledge, tmp_path, **settings: Any):
    config = {
        "NOW": "2026-11-21T12:00:00Z",
        "KNOWLEDGE": knowledge,
        "DATA_DIR": str(tmp_path),
        "METRICS": False,
        "DEADLINE_SECONDS": 2.0,
        **settings,
    }
    return create_app(config).test_client()


@pytest.fixture
def sandbox(knowledge, tmp_path):
    """An app that may reach loopback over http: the fake servers live there."""
    return _app(knowledge, tmp_path, ALLOW_HTTP_FHIR=True, FHIR_ALLOW_PRIVATE=True)


def _call(client, server: str, *, prefetch_conditions: dict | None = None) -> list[str]:
    body = hook_request([med_request("d1")], conditions=[condition("c1", STROKE)])
    if prefetch_conditions is None:
        del body["prefetch"]["conditions"]
    else:
        body["prefetch"]["conditions"] = prefetch_conditions
    body["fhirServer"] = server
    body["fhirAuthorization"] = fhir_authorization(TOKEN, PATIENT_ID)
    response = client.post(SELECT, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]


def _page(next_url: str | None = None) -> dict:
    bundle = searchset([condition("c1", STROKE)])
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def _tricks(ehr: Server, catcher: Server) -> list[str]:
    """URLs that `urllib.parse` reads as the EHR and the HTTP library sends to the catcher."""
    return [
        f"http://{catcher.authority}\\@{ehr.authority}/fhir/Condition?page=2",
        f"http://{catcher.authority}\\x@{ehr.authority}/fhir/Condition?page=2",
        f"http://{catcher.authority}\\\\@{ehr.authority}/fhir/Condition?page=2",
    ]


# ---- the URL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example\\@ehr.example/fhir",
        "https://ehr.example\\/fhir",
        "https://user:pw@ehr.example/fhir",
        "https://ehr.example@evil.example/fhir",
        "https://ehr.example /fhir",
        "https://ehr.example/fhir\tx",
        "https://ehr.example/fh\nir",
        "https://ehr.example/fhir\x00",
        "https://%65hr.example/fhir",
        "https://\uff45hr.example/fhir",  # a fullwidth e
        "https://ehr.example./fhir",
        "https://[::1/fhir",
        "ftp://ehr.example/fhir",
        "//ehr.example/fhir",
        "",
    ],
)
def test_unsafe_urls_are_refused(url):
    with pytest.raises(UnsafeURL):
        outbound.parse(url)


def test_a_url_is_read_as_the_http_library_connects():
    target = outbound.parse("HTTPS://EHR.Example:443/fhir/a/../Patient?x=1")
    assert target.origin == ("https", "ehr.example", 443)
    assert target.path == "/fhir/Patient"
    base = outbound.parse("https://ehr.example/fhir/")
    assert target.under(base)
    assert not outbound.parse("https://ehr.example/fhirx/Patient").under(base)
    assert not outbound.parse("https://ehr.example:8443/fhir/Patient").under(base)


# ---- tricks through every source of a URL -------------------------------------------------------


def test_backslash_next_links_in_fetched_pages_send_nothing_to_the_catcher(sandbox, ehr, catcher):
    for trick in _tricks(ehr, catcher):
        ehr.routes["/fhir/Condition"] = (200, {}, _page(trick))
        codes = _call(sandbox, f"{ehr.base}/fhir")
        assert catcher.seen == [], trick
        assert "BAC-INDICATION" in codes or DEGRADED in codes


def test_backslash_redirects_send_nothing_to_the_catcher(sandbox, ehr, catcher):
    for trick in _tricks(ehr, catcher):
        ehr.routes["/fhir/Condition"] = (302, {"Location": trick}, b"")
        assert DEGRADED in _call(sandbox, f"{ehr.base}/fhir")
        assert catcher.seen == [], trick


def test_backslash_next_links_in_prefetched_pages_send_nothing_to_the_catcher(
    sandbox, ehr, catcher
):
    for trick in _tricks(ehr, catcher):
        _call(sandbox, f"{ehr.base}/fhir", prefetch_conditions=_page(trick))
        assert catcher.seen == [], trick


def test_next_links_with_user_info_are_not_followed(sandbox, ehr):
    ehr.routes["/fhir/Condition"] = (
        200,
        {},
        _page(f"http://someone:secret@{ehr.authority}/fhir/Condition?page=2"),
    )
    _call(sandbox, f"{ehr.base}/fhir")
    assert [path for path, _auth in ehr.seen if "page=2" in path] == []


def test_a_fhir_server_with_user_info_or_a_backslash_is_refused(sandbox, ehr, catcher):
    for server in (
        f"http://x:y@{ehr.authority}/fhir",
        f"http://{catcher.authority}\\@{ehr.authority}/fhir",
    ):
        body = hook_request([med_request("d1")])
        del body["prefetch"]["conditions"]
        body["fhirServer"] = server
        response = sandbox.post(SELECT, json=body)
        assert response.status_code == 400, server
    assert catcher.seen == [] and ehr.seen == []


def test_jku_urls_with_tricks_are_refused_at_start():
    from cds_hooks.auth import load_issuers

    for url in ("https://evil.example\\@ehr.example/jwks.json", "https://u@ehr.example/jwks"):
        with pytest.raises(ValueError, match="jku"):
            load_issuers({"https://ehr.example": {"jku": [url]}})


# ---- destinations -------------------------------------------------------------------------------


@pytest.fixture
def connects(monkeypatch) -> list[Any]:
    """Every socket connect attempt, recorded and refused: nothing leaves this machine."""
    attempts: list[Any] = []

    def refuse(sock: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise ConnectionRefusedError("connect patched out by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


INTERNAL = [
    ("127.0.0.1", "loopback"),
    ("127.1", "loopback"),
    ("2130706433", "loopback"),
    ("0x7f000001", "loopback"),
    ("0177.0.0.1", "loopback"),
    ("[::1]", "loopback"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[::ffff:7f00:1]", "loopback"),
    ("[::127.0.0.1]", "loopback"),
    ("localhost", "loopback"),
    ("api.localhost", "loopback"),
    ("169.254.169.254", "link-local"),
    ("[::ffff:169.254.169.254]", "link-local"),
    ("[fe80::1]", "link-local"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("[fc00::1]", "private"),
    ("[fd12:3456::1]", "private"),
    ("100.64.0.1", "shared"),
    ("0.0.0.0", "unspecified"),
    ("0", "unspecified"),
    ("[::]", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("[ff02::1]", "multicast"),
    ("240.0.0.1", "reserved"),
    ("[2002:7f00:1::]", "loopback"),  # 6to4 around 127.0.0.1
    ("[64:ff9b::a9fe:a9fe]", "link-local"),  # NAT64 around 169.254.169.254
]


@pytest.mark.parametrize(("host", "kind"), INTERNAL)
def test_internal_destinations_are_refused_without_a_connection(
    knowledge, tmp_path, connects, caplog, host, kind
):
    client = _app(knowledge, tmp_path)  # the default: internal addresses refused
    caplog.set_level(logging.WARNING)
    assert DEGRADED in _call(client, f"https://{host}/fhir")
    assert connects == []
    assert kind in caplog.text


@pytest.mark.parametrize(("host", "kind"), INTERNAL)
def test_the_policy_names_the_kind_of_each_internal_address(host, kind):
    with pytest.raises(DestinationRefused, match=kind):
        Destinations(resolver=_no_dns).resolve(host.strip("[]"), 443)


def _no_dns(host: str, port: int) -> list:
    raise AssertionError(f"{host} is a literal address: no DNS lookup expected")


def test_allow_private_admits_loopback_and_private_but_never_metadata():
    sandbox = Destinations(allow_private=True, resolver=_no_dns)
    assert sandbox.resolve("127.1", 80) == [ipaddress.ip_address("127.0.0.1")]
    assert sandbox.resolve("10.1.2.3", 80) == [ipaddress.ip_address("10.1.2.3")]
    for host in ("169.254.169.254", "0.0.0.0", "224.0.0.1"):
        with pytest.raises(DestinationRefused):
            sandbox.resolve(host, 80)


def test_a_name_resolving_to_a_public_and_a_private_address_is_refused(
    knowledge, tmp_path, monkeypatch, connects, catcher
):
    """urllib3 tries each address in turn: public first, then the loopback catcher."""
    real = socket.getaddrinfo

    def answers(host, port, *args, **kwargs):
        if host == "fhir.example":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", answers)
    client = _app(knowledge, tmp_path, ALLOW_HTTP_FHIR=True)
    assert DEGRADED in _call(client, f"http://fhir.example:{catcher.server_address[1]}/fhir")
    assert connects == []
    assert catcher.seen == []


def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch, connects):
    """A resolver answering public first and loopback afterwards is asked once per connection."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        if host == "fhir.example":
            asked.append(host)
            address = PUBLIC if len(asked) == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with outbound.session(Destinations()) as session, pytest.raises(requests.ConnectionError):
        session.get("https://fhir.example/fhir/metadata", timeout=2)
    assert asked == ["fhir.example"]
    assert connects == [(PUBLIC, 443)]


def test_the_app_session_refuses_internal_destinations(knowledge, tmp_path, connects):
    app = create_app({"KNOWLEDGE": knowledge, "DATA_DIR": str(tmp_path), "METRICS": False})
    session = app.extensions["cds_hooks"].session
    for host in ("127.1", "[::ffff:127.0.0.1]", "169.254.169.254"):
        with pytest.raises(DestinationRefused):
            session.get(f"https://{host}/latest/meta-data/", timeout=2)
    assert connects == []


def test_a_loopback_fhir_server_is_refused_by_default(knowledge, tmp_path, ehr, caplog):
    ehr.routes["/fhir/Condition"] = (200, {}, _page())
    client = _app(knowledge, tmp_path, ALLOW_HTTP_FHIR=True)
    caplog.set_level(logging.WARNING)
    assert DEGRADED in _call(client, f"{ehr.base}/fhir")
    assert ehr.seen == []
    assert "CDS_FHIR_ALLOW_PRIVATE" in caplog.text
    assert "BAC-INDICATION" in _call(
        _app(knowledge, tmp_path / "b", ALLOW_HTTP_FHIR=True, FHIR_ALLOW_PRIVATE=True),
        f"{ehr.base}/fhir",
    )


# ---- what comes back: parse failures and the byte budget ----------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceType": "Bundle", "type": "searchset", "entry": '
        + b"[" * 10_000
        + b"]" * 10_000
        + b"}",
        b'{"resourceType": "Bundle", "x": "\xff\xfe bad utf-8"}',
        b'{"resourceType": "Bundle", "total": 1' + b"0" * 5000 + b"}",
        b'{"resourceType": "Bundle", "total": 1e999}',
        b'{"resourceType": "Bundle", "total": NaN}',
    ],
    ids=["10000-deep", "bad-utf8", "5000-digit-int", "float-overflow", "nan"],
)
def test_an_unparseable_fhir_page_is_a_data_failure_not_a_500(sandbox, ehr, body):
    ehr.routes["/fhir/Condition"] = (200, {}, body)
    codes = _call(sandbox, f"{ehr.base}/fhir")
    assert DEGRADED in codes
    assert "BAC-INDICATION" not in codes


def test_an_unparseable_next_page_of_a_prefetched_search_is_a_data_failure(sandbox, ehr):
    deep = b'{"resourceType": "Bundle", "entry": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    ehr.routes["/fhir/Condition"] = (200, {}, deep)
    codes = _call(
        sandbox, f"{ehr.base}/fhir", prefetch_conditions=_page(f"{ehr.base}/fhir/Condition?p=2")
    )
    assert DEGRADED in codes


def test_one_byte_budget_per_call_across_pages_and_searches(knowledge, tmp_path, ehr):
    """Each page is under FHIR_MAX_BYTES; together they pass the call's budget."""
    filler = [condition(f"x{i}", STROKE) for i in range(40)]  # ~15 KB a page
    for page in range(1, 30):
        bundle = searchset(filler)
        if page < 29:
            bundle["link"] = [{"relation": "next", "url": f"{ehr.base}/fhir/p{page + 1}"}]
        ehr.routes[f"/fhir/p{page}" if page > 1 else "/fhir/Condition"] = (200, {}, bundle)
    settings = {"ALLOW_HTTP_FHIR": True, "FHIR_ALLOW_PRIVATE": True, "FHIR_MAX_PAGES": 100}
    roomy = _app(knowledge, tmp_path / "a", **settings)
    assert "BAC-INDICATION" in _call(roomy, f"{ehr.base}/fhir")
    pages_read = len(ehr.seen)
    ehr.seen.clear()
    tight = _app(knowledge, tmp_path / "b", FHIR_MAX_BYTES_PER_CALL=100_000, **settings)
    codes = _call(tight, f"{ehr.base}/fhir")
    assert DEGRADED in codes
    assert "BAC-INDICATION" not in codes  # half a search is not "nothing found"
    assert len(ehr.seen) < pages_read  # it stopped asking


# ---- allowlists of FHIR servers -----------------------------------------------------------------

ALLOWED = "https://ehr.example/fhir"


def _fetches(client, server: str, headers: dict | None = None) -> tuple[list[str], list[str]]:
    """(card topics, URLs requested) for a call whose conditions must be fetched from `server`."""
    import responses

    body = hook_request([med_request("d1")], conditions=[condition("c1", STROKE)])
    del body["prefetch"]["conditions"]
    body["fhirServer"] = server
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer"}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{server}/Condition", json=_page())
        response = client.post(SELECT, json=body, headers=headers or {})
        requested = [call.request.url for call in mock.calls]
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return [c["source"]["topic"]["code"] for c in response.get_json()["cards"]], requested


def test_fhir_servers_allowlist_without_issuers(knowledge, tmp_path, connects):
    client = _app(knowledge, tmp_path, FHIR_SERVERS=ALLOWED)
    codes, requested = _fetches(client, ALLOWED)
    assert "BAC-INDICATION" in codes and len(requested) == 1
    for other in (
        "https://other.example/fhir",
        "https://ehr.example/fhirx",
        "https://ehr.example:8443/fhir",
    ):
        codes, requested = _fetches(client, other)
        assert DEGRADED in codes, other
        assert requested == [], other
    assert connects == []


def _issuer_app(knowledge, tmp_path, **issuer: Any):
    from cds_hooks.commands.keys import new_key, public_jwk

    key = new_key("ES384")
    iss = "https://ehr.example"
    client = _app(
        knowledge,
        tmp_path,
        AUTH_ISSUERS={iss: {"jwks": {"keys": [public_jwk(key)]}, **issuer}},
        PUBLIC_BASE_URL="http://localhost",
    )
    return client, key, iss


def _bearer(key, iss: str) -> dict[str, str]:
    from cds_hooks.commands.keys import mint_token

    token = mint_token(key, iss=iss, aud=f"http://localhost{SELECT}")
    return {"Authorization": f"Bearer {token}"}


def test_an_issuers_fhir_servers_decide_which_servers_its_calls_reach(
    knowledge, tmp_path, connects
):
    client, key, iss = _issuer_app(knowledge, tmp_path, fhir_servers=[ALLOWED])
    codes, requested = _fetches(client, ALLOWED, _bearer(key, iss))
    assert "BAC-INDICATION" in codes and len(requested) == 1
    codes, requested = _fetches(client, "https://other.example/fhir", _bearer(key, iss))
    assert DEGRADED in codes and requested == []
    assert connects == []


def test_an_issuer_without_fhir_servers_never_has_a_server_contacted(knowledge, tmp_path):
    client, key, iss = _issuer_app(knowledge, tmp_path)
    codes, requested = _fetches(client, ALLOWED, _bearer(key, iss))
    assert DEGRADED in codes and requested == []


def test_issuer_fhir_servers_must_be_https_urls():
    from cds_hooks.auth import load_issuers

    jwks = {"keys": [{"kty": "EC", "kid": "k", "crv": "P-384", "x": "a", "y": "b"}]}
    issuers = load_issuers({"https://ehr.example": {"jwks": jwks, "fhir_servers": [ALLOWED]}})
    assert issuers["https://ehr.example"].fhir_servers == (ALLOWED,)
    for bad in ("http://ehr.example/fhir", "https://evil\\@ehr.example/fhir", "ehr.example"):
        with pytest.raises(ValueError, match="fhir_servers"):
            load_issuers({"https://ehr.example": {"jwks": jwks, "fhir_servers": [bad]}})


# ---- a hospital's own CA, and its proxy ---------------------------------------------------------


def _throwaway_ca(folder, name: str) -> tuple[str, str, str]:
    """(CA PEM path, server cert PEM path, server key PEM path) for host `name`."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Hospital Root CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tuple(str(p) for p in paths)  # type: ignore[return-value]


HOSPITAL = "fhir.hospital.test"


@pytest.fixture
def tls_ehr(tmp_path, monkeypatch) -> Iterator[tuple[Server, str]]:
    """A TLS FHIR server on loopback with a certificate from a private CA, named HOSPITAL."""
    import ssl

    ca, cert, key = _throwaway_ca(tmp_path, HOSPITAL)
    real = socket.getaddrinfo

    def hospital_dns(host, port, *args, **kwargs):  # the hospital's DNS, for this name only
        if host == HOSPITAL:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hospital_dns)
    server = Server()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.routes["/fhir/Condition"] = (200, {}, _page())
    with running(server):
        yield server, ca


def test_ca_bundle_makes_a_private_ca_fhir_server_work(knowledge, tmp_path, tls_ehr, caplog):
    server, ca = tls_ehr
    url = f"https://{HOSPITAL}:{server.server_address[1]}/fhir"
    untrusted = _app(knowledge, tmp_path / "a", FHIR_ALLOW_PRIVATE=True)
    assert DEGRADED in _call(untrusted, url)  # certifi's roots alone: the TLS check fails
    trusted = _app(knowledge, tmp_path / "b", FHIR_ALLOW_PRIVATE=True, CA_BUNDLE=ca)
    assert "BAC-INDICATION" in _call(trusted, url)
    assert (f"/fhir/Condition?patient=Patient/{PATIENT_ID}", f"Bearer {TOKEN}") in server.seen


def test_the_ca_bundle_adds_to_the_public_roots():
    import certifi

    context = outbound.ssl_context(certifi.where())
    public = len(outbound.ssl_context().get_ca_certs())
    assert public > 50 and len(context.get_ca_certs()) >= public


class _ConnectProxy(LoopbackHTTP):
    """A minimal HTTPS proxy (CONNECT tunnels) on loopback that records what it was asked."""

    def __init__(self) -> None:
        super().__init__(_ProxyHandler)
        self.asked: list[str] = []


class _ProxyHandler(QuietHandler):
    server: _ConnectProxy

    def do_CONNECT(self) -> None:
        import selectors

        self.server.asked.append(self.path)
        host, _, port = self.path.rpartition(":")
        upstream = socket.create_connection((host, int(port)), timeout=5)
        self.send_response(200, "Connection established")
        self.end_headers()
        # selectors (epoll), not select(): the full suite may hold descriptors above 1024.
        with selectors.DefaultSelector() as selector, upstream:
            selector.register(self.connection, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, self.connection)
            while True:
                ready = selector.select(timeout=5)
                if not ready:
                    return
                for key, _events in ready:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)


def test_environment_proxies_netrc_and_cookies_never_reach_fhir_requests(
    ehr, catcher, monkeypatch, tmp_path
):
    """Requests go as the service sets them: a proxy variable does not reroute them (through the
    catcher), ~/.netrc adds no credentials, and a cookie one answer sets never rides on the next
    (the session is shared by every caller's calls)."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, catcher.base)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    patient = {"resourceType": "Patient", "id": PATIENT_ID}
    ehr.routes["/fhir/a"] = (200, {"Set-Cookie": "session=caller-a; Path=/"}, patient)
    ehr.routes["/fhir/b"] = (200, {}, patient)
    session = outbound.session(Destinations(allow_private=True))
    for path in ("/fhir/a", "/fhir/b"):
        assert session.get(ehr.base + path, timeout=5).status_code == 200
    assert catcher.seen == []
    assert ehr.seen == [("/fhir/a", None), ("/fhir/b", None)]
    assert ehr.cookies == [None, None]


def test_https_proxy_carries_fhir_requests(knowledge, tmp_path, tls_ehr):
    server, ca = tls_ehr
    with running(_ConnectProxy()) as proxy:
        url = f"https://{HOSPITAL}:{server.server_address[1]}/fhir"
        client = _app(
            knowledge,
            tmp_path,
            FHIR_ALLOW_PRIVATE=True,
            CA_BUNDLE=ca,
            HTTPS_PROXY=proxy.base,
        )
        assert "BAC-INDICATION" in _call(client, url)
        assert proxy.asked == [f"{HOSPITAL}:{server.server_address[1]}"]


def test_through_a_proxy_internal_destinations_are_still_refused(knowledge, tmp_path, connects):
    client = _app(knowledge, tmp_path, HTTPS_PROXY="http://127.0.0.1:9")
    assert DEGRADED in _call(client, "https://169.254.169.254/fhir")
    assert connects == []  # not even the proxy was asked


def test_fhir_allow_private_off_words_keep_loopback_refused(knowledge, tmp_path, ehr, monkeypatch):
    ehr.routes["/fhir/Condition"] = (200, {}, _page())
    for word in ("no", "off", "False", "0"):
        monkeypatch.setenv("CDS_FHIR_ALLOW_PRIVATE", word)
        client = _app(knowledge, tmp_path / word, ALLOW_HTTP_FHIR=True)
        assert DEGRADED in _call(client, f"{ehr.base}/fhir")
    assert ehr.seen == []
    monkeypatch.setenv("CDS_FHIR_ALLOW_PRIVATE", "yes")
    assert "BAC-INDICATION" in _call(
        _app(knowledge, tmp_path / "yes", ALLOW_HTTP_FHIR=True), f"{ehr.base}/fhir"
    )


def test_jwks_fetches_follow_the_same_destination_policy(knowledge, tmp_path, connects, caplog):
    """A registered key-set URL on an internal address is never fetched: the token is refused."""
    from cds_hooks.commands.keys import mint_token, new_key

    key = new_key("ES384")
    iss = "https://ehr.example"
    jku = "https://169.254.169.254/latest/jwks.json"
    client = _app(
        knowledge,
        tmp_path,
        AUTH_ISSUERS={iss: {"jku": [jku]}},
        PUBLIC_BASE_URL="http://localhost",
    )
    caplog.set_level(logging.WARNING)
    token = mint_token(key, iss=iss, aud="http://localhost/cds-services", jku=jku)
    response = client.get("/cds-services", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert connects == []
    assert "link-local" in caplog.text

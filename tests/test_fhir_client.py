"""FhirClient against a fake FHIR server (`responses`) and, for timing, a real local HTTP server."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import responses
from responses.matchers import query_string_matcher

from cds_hooks.errors import FhirFatalError, FhirTemporaryError
from cds_hooks.fhir.client import FhirClient

BASE = "https://fhir.example.org/r4"
TOKEN = "s3cr3t-access-token"
FHIR_JSON = "application/fhir+json"


def bundle(*resources: dict, next_url: str | None = None, self_url: str | None = None) -> dict:
    links = []
    if self_url:
        links.append({"relation": "self", "url": self_url})
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [{"resource": r} for r in resources],
    }


def cond(cid: str) -> dict:
    return {"resourceType": "Condition", "id": cid}


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture
def fhir() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def client(session, executor) -> FhirClient:
    return FhirClient(BASE, TOKEN, session=session, executor=executor, timeout=2.0)


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def test_headers_bearer_sent_and_never_logged(fhir, client, caplog):
    caplog.set_level(logging.DEBUG)
    fhir.get(f"{BASE}/Condition", json=bundle(cond("1")))
    fhir.get(f"{BASE}/Patient/9", status=401)
    assert client.search("Condition?patient=9", soon()) == [cond("1")]
    with pytest.raises(FhirFatalError) as err:
        client.read("Patient/9", soon())
    assert err.value.status == 401
    assert "refused the access token" in err.value.reason
    headers = fhir.calls[0].request.headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == FHIR_JSON
    assert fhir.calls[0].request.url == f"{BASE}/Condition?patient=9"
    assert caplog.records  # something was logged, and none of it is the token
    assert TOKEN not in caplog.text
    assert "Authorization" not in caplog.text
    assert TOKEN not in repr(client)


def test_no_token_no_authorization_header(fhir, session, executor):
    fhir.get(f"{BASE}/Condition", json=bundle())
    FhirClient(BASE, None, session=session, executor=executor).search("Condition", soon())
    assert "Authorization" not in fhir.calls[0].request.headers


def test_paging_over_three_pages_with_includes(fhir, client):
    med = {"resourceType": "Medication", "id": "m1"}
    page1 = bundle(cond("1"), med, next_url=f"{BASE}?_getpages=abc&_offset=2")
    page2 = bundle(cond("2"), next_url=f"{BASE}?_getpages=abc&_offset=4")
    page3 = bundle(cond("3"))
    fhir.get(f"{BASE}/Condition", json=page1)
    fhir.get(BASE, json=page2, match=[query_string_matcher("_getpages=abc&_offset=2")])
    fhir.get(BASE, json=page3, match=[query_string_matcher("_getpages=abc&_offset=4")])
    got = client.search("Condition?patient=1", soon())
    assert got == [cond("1"), med, cond("2"), cond("3")]
    assert len(fhir.calls) == 3


def test_outcome_entries_are_not_data(fhir, client):
    outcome = {"resourceType": "OperationOutcome", "issue": []}
    fhir.get(f"{BASE}/Condition", json=bundle(cond("1"), outcome))
    assert client.search("Condition", soon()) == [cond("1")]


def test_max_pages_keeps_what_it_has(fhir, session, executor, caplog):
    c = FhirClient(BASE, TOKEN, session=session, executor=executor, max_pages=2)
    fhir.get(f"{BASE}/Condition", json=bundle(cond("1"), next_url=f"{BASE}/p2"))
    fhir.get(f"{BASE}/p2", json=bundle(cond("2"), next_url=f"{BASE}/p3"))
    assert c.search("Condition", soon()) == [cond("1"), cond("2")]
    assert len(fhir.calls) == 2
    assert "more than 2 pages" in caplog.text


def test_next_link_loop_stops(fhir, client, caplog):
    fhir.get(f"{BASE}/Condition", json=bundle(cond("1"), next_url=f"{BASE}/p2"))
    fhir.get(f"{BASE}/p2", json=bundle(cond("2"), next_url=f"{BASE}/Condition?patient=1"))
    got = client.search("Condition?patient=1", soon())
    assert got == [cond("1"), cond("2")]
    assert len(fhir.calls) == 2
    assert "paging loop" in caplog.text


def test_next_link_to_other_host_not_followed(fhir, client, caplog):
    fhir.get(f"{BASE}/Condition", json=bundle(cond("1"), next_url="https://evil.example/r4/p2"))
    assert client.search("Condition", soon()) == [cond("1")]
    assert len(fhir.calls) == 1
    assert "not followed" in caplog.text


@pytest.mark.parametrize(
    "other",
    ["http://fhir.example.org/r4/p2", "https://fhir.example.org:8443/r4/p2"],
)
def test_next_link_other_scheme_or_port_not_followed(fhir, client, other):
    fhir.get(f"{BASE}/Condition", json=bundle(cond("1"), next_url=other))
    assert client.search("Condition", soon()) == [cond("1")]
    assert len(fhir.calls) == 1


def test_relative_next_link_followed(fhir, client):
    fhir.get(
        f"{BASE}/Condition",
        json=bundle(cond("1"), next_url="/r4/Condition?page=2"),
        match=[query_string_matcher("")],
    )
    fhir.get(f"{BASE}/Condition", json=bundle(cond("2")), match=[query_string_matcher("page=2")])
    assert client.search("Condition", soon()) == [cond("1"), cond("2")]


def test_follow_pages_of_prefetched_bundle(fhir, client):
    first = bundle(cond("1"), next_url=f"{BASE}/p2")
    fhir.get(f"{BASE}/p2", json=bundle(cond("2")))
    assert client.follow_pages(first, soon()) == [cond("1"), cond("2")]


def test_same_origin_redirect_followed(fhir, client):
    fhir.get(f"{BASE}/Medication/1", status=302, headers={"Location": "/r4/Medication/1b"})
    fhir.get(f"{BASE}/Medication/1b", json={"resourceType": "Medication", "id": "1b"})
    assert client.read("Medication/1", soon()) == {"resourceType": "Medication", "id": "1b"}
    assert fhir.calls[1].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_redirect_to_other_host_is_an_error(fhir, client):
    fhir.get(f"{BASE}/Condition", status=307, headers={"Location": "https://evil.example/steal"})
    with pytest.raises(FhirFatalError, match="another server"):
        client.search("Condition", soon())
    assert len(fhir.calls) == 1


def test_redirect_loop_is_an_error(fhir, client):
    fhir.get(f"{BASE}/Condition", status=302, headers={"Location": f"{BASE}/Condition"})
    with pytest.raises(FhirFatalError, match="too many"):
        client.search("Condition", soon())
    assert len(fhir.calls) == client.max_redirects + 1


def test_absolute_query_on_other_server_refused(fhir, client):
    with pytest.raises(FhirFatalError):
        client.search("https://evil.example/r4/Condition", soon())
    assert len(fhir.calls) == 0


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, FhirFatalError),
        (401, FhirFatalError),
        (403, FhirFatalError),
        (404, FhirFatalError),
        (500, FhirTemporaryError),
        (502, FhirTemporaryError),
    ],
)
def test_status_mapping_for_search(fhir, client, status, kind):
    fhir.get(f"{BASE}/Condition", status=status, json={"resourceType": "OperationOutcome"})
    with pytest.raises(kind) as err:
        client.search("Condition", soon())
    assert type(err.value) is kind
    assert err.value.status == status
    assert str(status) in err.value.reason
    assert len(fhir.calls) == 1  # no retry


@pytest.mark.parametrize("status", [404, 410])
def test_read_missing_is_none(fhir, client, status):
    fhir.get(f"{BASE}/Medication/x", status=status)
    assert client.read("Medication/x", soon()) is None


def test_429_then_200_is_retried(fhir, client):
    fhir.get(f"{BASE}/Condition", status=429, headers={"Retry-After": "0"})
    fhir.get(f"{BASE}/Condition", json=bundle(cond("1")))
    assert client.search("Condition", soon()) == [cond("1")]
    assert len(fhir.calls) == 2


def test_503_retried_then_gives_up(fhir, client):
    fhir.get(f"{BASE}/Condition", status=503, headers={"Retry-After": "0"})
    with pytest.raises(FhirTemporaryError) as err:
        client.search("Condition", soon())
    assert err.value.status == 503
    assert len(fhir.calls) == 1 + client.max_retries


def test_long_retry_after_not_waited_for(fhir, client):
    fhir.get(f"{BASE}/Condition", status=429, headers={"Retry-After": "120"})
    started = time.monotonic()
    with pytest.raises(FhirTemporaryError):
        client.search("Condition", soon())
    assert time.monotonic() - started < 0.5
    assert len(fhir.calls) == 1


def test_no_retry_when_backoff_passes_deadline(fhir, client):
    fhir.get(f"{BASE}/Condition", status=503)  # default backoff 0.1 s > 0.05 s left
    with pytest.raises(FhirTemporaryError):
        client.search("Condition", soon(0.05))
    assert len(fhir.calls) == 1


def test_html_body_is_fatal(fhir, client):
    fhir.get(f"{BASE}/Condition", body="<html><body>Login</body></html>", content_type="text/html")
    with pytest.raises(FhirFatalError, match="web page"):
        client.search("Condition", soon())


def test_html_body_without_html_content_type_is_fatal(fhir, client):
    fhir.get(f"{BASE}/Condition", body="  <!DOCTYPE html><html></html>", content_type=FHIR_JSON)
    with pytest.raises(FhirFatalError, match="web page"):
        client.search("Condition", soon())


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a FHIR resource"),
        (json.dumps(cond("1")), "other than a Bundle"),
        (json.dumps({"resourceType": "OperationOutcome"}), "OperationOutcome"),
    ],
)
def test_bad_search_bodies_are_fatal(fhir, client, body, match):
    fhir.get(f"{BASE}/Condition", body=body, content_type=FHIR_JSON)
    with pytest.raises(FhirFatalError, match=match):
        client.search("Condition", soon())


def test_oversized_body_is_fatal(fhir, session, executor):
    c = FhirClient(BASE, TOKEN, session=session, executor=executor, max_bytes=1000)
    big = json.dumps(bundle(*[cond(str(i)) for i in range(100)]))
    fhir.get(f"{BASE}/Condition", body=big, content_type=FHIR_JSON)
    with pytest.raises(FhirFatalError, match="too large"):
        c.search("Condition", soon())


def test_declared_oversized_body_is_refused_unread(fhir, session, executor):
    c = FhirClient(BASE, TOKEN, session=session, executor=executor, max_bytes=1000)
    big = json.dumps(bundle(*[cond(str(i)) for i in range(100)]))
    fhir.get(
        f"{BASE}/Condition",
        body=big,
        content_type=FHIR_JSON,
        auto_calculate_content_length=True,
    )
    with pytest.raises(FhirFatalError, match="too large"):
        c.search("Condition", soon())


def test_connection_refused_is_temporary(fhir, client):
    fhir.get(f"{BASE}/Condition", body=requests.ConnectionError("refused"))
    with pytest.raises(FhirTemporaryError, match="could not be reached"):
        client.search("Condition", soon())


def test_timeout_exception_is_temporary(fhir, client):
    fhir.get(f"{BASE}/Condition", body=requests.ReadTimeout("slow"))
    with pytest.raises(FhirTemporaryError, match="did not answer within"):
        client.search("Condition", soon())


def test_nothing_starts_after_deadline(fhir, client):
    with pytest.raises(FhirTemporaryError, match="deadline reached"):
        client.search("Condition", time.monotonic() - 0.01)
    assert len(fhir.calls) == 0


def test_request_timeout_is_cut_to_deadline(fhir, session, executor):
    seen = {}

    def spy(request):
        seen["timeout"] = request.req_kwargs["timeout"]
        return 200, {"Content-Type": FHIR_JSON}, json.dumps(bundle())

    fhir.add_callback(responses.GET, f"{BASE}/Condition", callback=spy)
    c = FhirClient(BASE, TOKEN, session=session, executor=executor, timeout=3.0)
    c.search("Condition", soon(1.0))
    assert 0.5 < seen["timeout"] <= 1.0
    c.search("Condition", soon(60))
    assert seen["timeout"] == 3.0


def test_fetch_all_mixes_results_and_errors(fhir, client):
    fhir.get(f"{BASE}/Condition", json=bundle(cond("1")))
    fhir.get(f"{BASE}/Observation", status=403)
    got = client.fetch_all({"conditions": "Condition", "labs": "Observation"}, soon())
    assert got["conditions"] == [cond("1")]
    assert isinstance(got["labs"], FhirFatalError)
    assert got["labs"].status == 403


def test_fetch_all_does_not_wait_for_straggler(fhir, client):
    # `responses` ignores HTTP timeouts, so this callback stands for a server that never answers.
    release = threading.Event()

    def stuck(request):
        release.wait(2.0)
        return 200, {}, json.dumps(bundle())

    fhir.add_callback(responses.GET, f"{BASE}/Observation", callback=stuck)
    fhir.get(f"{BASE}/Condition", json=bundle(cond("1")))
    started = time.monotonic()
    got = client.fetch_all({"labs": "Observation", "conditions": "Condition"}, soon(0.1))
    elapsed = time.monotonic() - started
    release.set()
    assert elapsed < 0.5
    assert isinstance(got["labs"], FhirTemporaryError)
    assert "did not answer within 0.1 s" in got["labs"].reason
    assert got["conditions"] == [cond("1")]


def test_read_all_keeps_only_found(fhir, client):
    fhir.get(f"{BASE}/Medication/1", json={"resourceType": "Medication", "id": "1"})
    fhir.get(f"{BASE}/Medication/2", status=404)
    fhir.get(f"{BASE}/Medication/3", status=500)
    got = client.read_all(["Medication/1", "Medication/2", "Medication/3", "Medication/1"], soon())
    assert got == {"Medication/1": {"resourceType": "Medication", "id": "1"}}
    assert len(fhir.calls) == 3  # 500 is not retried


def test_private_executor_when_none_given(fhir, session):
    fhir.get(f"{BASE}/Condition", json=bundle(cond("1")))
    with FhirClient(BASE, TOKEN, session=session) as c:
        assert c.fetch_all({"a": "Condition"}, soon()) == {"a": [cond("1")]}


def test_relative_reference(session):
    c = FhirClient(BASE + "/", TOKEN, session=session)
    assert c.relative_reference("Medication/1") == "Medication/1"
    assert c.relative_reference(f"{BASE}/Medication/1") == "Medication/1"
    assert c.relative_reference("https://other.example/r4/Medication/1") is None
    assert c.relative_reference("https://fhir.example.org/r5/Medication/1") is None


# ---- a real local server, for timeouts and parallelism --------------------------------------


class _SlowHandler(BaseHTTPRequestHandler):
    delays: dict[str, float] = {}  # noqa: RUF012

    def do_GET(self):
        path = self.path.split("?")[0].rsplit("/", 1)[-1]
        time.sleep(self.delays.get(path, 0.0))
        body = json.dumps(bundle(cond(path))).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", FHIR_JSON)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up on us; that is the point of the test

    def log_message(self, format, *args):
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


@pytest.fixture
def slow_server() -> Iterator[tuple[str, dict[str, float]]]:
    delays: dict[str, float] = {}
    handler = type("Handler", (_SlowHandler,), {"delays": delays})
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir", delays
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_slow_search_times_out_others_succeed(slow_server, session, executor):
    base, delays = slow_server
    delays["Slow"] = 0.6
    c = FhirClient(base, TOKEN, session=session, executor=executor, timeout=3.0)
    started = time.monotonic()
    got = c.fetch_all({"slow": "Slow", "a": "A", "b": "B"}, soon(0.2))
    elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert isinstance(got["slow"], FhirTemporaryError)
    assert got["a"] == [cond("A")]
    assert got["b"] == [cond("B")]


def test_searches_run_in_parallel(slow_server, session, executor):
    base, delays = slow_server
    for name in "ABCD":
        delays[name] = 0.2
    c = FhirClient(base, TOKEN, session=session, executor=executor)
    started = time.monotonic()
    got = c.fetch_all({name: name for name in "ABCD"}, soon())
    elapsed = time.monotonic() - started
    assert got == {name: [cond(name)] for name in "ABCD"}
    assert elapsed < 0.6


def test_fetch_all_handles_reads_and_searches(fhir, client):
    patient = {"resourceType": "Patient", "id": "p1"}
    fhir.get(f"{BASE}/Patient/p1", json=patient)
    fhir.get(f"{BASE}/Practitioner/gone", status=404)
    fhir.get(f"{BASE}/Patient/p1/Condition", json=bundle(cond("1")))
    got = client.fetch_all(
        {"pt": "Patient/p1", "user": "Practitioner/gone", "compartment": "Patient/p1/Condition"},
        soon(),
    )
    assert got == {"pt": [patient], "user": [], "compartment": [cond("1")]}

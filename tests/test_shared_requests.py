"""Every third-party hook request in ../shared/data/hook-requests answers 200 or a clear 4xx."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds_hooks.services import SERVICES
from tests.conftest import assert_valid_response
from tests.test_protocol import JARGON

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "hook-requests"
FILES = sorted(SHARED.glob("*.json")) if SHARED.is_dir() else []


@pytest.mark.skipif(not FILES, reason=f"{SHARED} is not present beside the checkout")
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("service", [s.id for s in SERVICES])
def test_third_party_request_never_5xx(client, path, service):
    response = client.post(
        f"/cds-services/{service}", data=path.read_bytes(), content_type="application/json"
    )
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    body = response.get_json()
    if response.status_code == 200:
        assert_valid_response(body)
        # None of these files involves baclofen or tizanidine (data/README.md).
        assert body["cards"] == []
    else:
        # A message a person understands: the field, what was expected, the JSON path beside it.
        assert body["error"] and body["message"]
        for text in [body["message"], *(p["message"] for p in body.get("problems", []))]:
            assert not any(jargon in text for jargon in JARGON), text
        for problem in body.get("problems", []):
            assert problem["path"].startswith("$")

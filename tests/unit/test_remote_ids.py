"""With sync configured, fhircare refuses up front the client ids HAPI would refuse at push."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fhircare.api.app import create_app
from fhircare.config import Settings
from fhircare.remote.ids import hapi_accepts_new_id


@pytest.fixture
def synced(tmp_path):
    settings = Settings(
        data=tmp_path / "data",
        base_url="http://testserver/fhir",
        hapi_url="http://hapi.invalid/fhir",
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_ids_hapi_accepts() -> None:
    assert not hapi_accepts_new_id("123456")
    assert all(hapi_accepts_new_id(i) for i in ("p1", "1-2", "1.5", "0x1", "f4e1c2d0-uuid"))


def test_numeric_client_id_is_refused_when_syncing(synced) -> None:
    r = synced.put("/fhir/Patient/123", json={"resourceType": "Patient", "id": "123"})
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["code"] == "business-rule" and "HAPI-0960" in issue["diagnostics"]
    assert synced.get("/fhir/Patient/123").status_code == 404  # nothing written
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "id": "77"},
                "request": {"method": "PUT", "url": "Patient/77"},
            }
        ],
    }
    assert synced.post("/fhir", json=bundle).status_code == 422


def test_other_ids_and_server_chosen_ids_are_accepted_when_syncing(synced) -> None:
    assert (
        synced.put("/fhir/Patient/p123", json={"resourceType": "Patient", "id": "p123"}).status_code
        == 201
    )
    created = synced.post("/fhir/Patient", json={"resourceType": "Patient", "id": "999"})
    assert created.status_code == 201 and created.json()["id"] != "999"  # the server chose


def test_numeric_client_ids_stay_allowed_without_sync(client) -> None:
    r = client.put("/fhir/Patient/123", json={"resourceType": "Patient", "id": "123"})
    assert r.status_code == 201

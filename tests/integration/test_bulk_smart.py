"""Bulk Data export under FHIRCARE_AUTH=smart: backend-services tokens with system-level
read and search scopes may kick off, poll and download; patient and user tokens may not,
nor may another client poll someone else's job."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.integration import test_smart_api
from tests.integration.test_smart_api import AUD, auth, token

# the SMART app and signing keys of the SMART tests
keys = test_smart_api.keys
smart = test_smart_api.smart

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def _path(url: str) -> str:
    assert url.startswith(AUD), url
    return "/fhir" + url[len(AUD) :]


def _load(c: TestClient, k: dict[str, Any]) -> None:
    admin = auth(token(k, "system/*.cruds"))
    for rid in ("s1", "s2"):
        r = c.put(
            f"/fhir/Patient/{rid}", json={"resourceType": "Patient", "id": rid}, headers=admin
        )
        assert r.status_code in (200, 201), r.text
        r = c.put(
            f"/fhir/Observation/{rid}-o",
            json={
                "resourceType": "Observation",
                "id": f"{rid}-o",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                "subject": {"reference": f"Patient/{rid}"},
            },
            headers=admin,
        )
        assert r.status_code in (200, 201), r.text


def _export(c: TestClient, headers: dict[str, str], params: Any = None) -> dict[str, Any]:
    r = c.get("/fhir/$export", params=params, headers={**ASYNC, **headers})
    assert r.status_code == 202, r.text
    url = r.headers["content-location"]
    assert c.app.state.exports.wait(url.rsplit("/", 1)[-1], 60)  # type: ignore[attr-defined]
    done = c.get(_path(url), headers=headers)
    assert done.status_code == 200, done.text
    return {"url": url, **done.json()}


def test_backend_service_token_exports_and_downloads(
    smart: TestClient,
    keys: dict[str, Any],
) -> None:
    _load(smart, keys)
    system = auth(token(keys, "system/*.rs", client_id="backend1"))
    manifest = _export(smart, system, {"_type": "Patient,Observation"})
    assert manifest["requiresAccessToken"] is True
    item = next(o for o in manifest["output"] if o["type"] == "Observation")
    assert smart.get(_path(item["url"]), headers=system).status_code == 200
    assert smart.get(_path(item["url"])).status_code == 401  # the token is required
    other_client = auth(token(keys, "system/*.rs", client_id="backend2"))
    assert smart.get(_path(item["url"]), headers=other_client).status_code == 403
    assert smart.get(_path(manifest["url"]), headers=other_client).status_code == 403
    patient = auth(token(keys, "patient/*.rs", patient="s1"))
    assert smart.get(_path(manifest["url"]), headers=patient).status_code == 403
    assert smart.delete(_path(manifest["url"]), headers=other_client).status_code == 403
    assert smart.delete(_path(manifest["url"]), headers=system).status_code == 202


def test_v1_and_per_type_system_scopes(smart: TestClient, keys: dict[str, Any]) -> None:
    _load(smart, keys)
    v1 = auth(token(keys, "system/*.read"))
    assert {o["type"] for o in _export(smart, v1, {"_type": "Patient"})["output"]} == {"Patient"}
    per_type = auth(token(keys, "system/Patient.rs system/Group.read"))
    # without _type: only the types the token may read
    assert {o["type"] for o in _export(smart, per_type)["output"]} == {"Patient"}
    r = smart.get(
        "/fhir/$export", params={"_type": "Patient,Observation"}, headers={**ASYNC, **per_type}
    )
    assert r.status_code == 403 and "Observation" in r.json()["issue"][0]["diagnostics"]


def test_patient_and_user_tokens_may_not_export(smart: TestClient, keys: dict[str, Any]) -> None:
    _load(smart, keys)
    for scope, claims in (
        ("patient/*.rs", {"patient": "s1"}),
        ("user/*.rs", {"fhirUser": "Practitioner/p1"}),
        ("system/*.s", {}),  # search without read
        ("system/Patient.rs?gender=male", {}),  # a narrowed scope cannot be checked on export
    ):
        headers = {**ASYNC, **auth(token(keys, scope, **claims))}
        for path in ("/fhir/$export", "/fhir/Patient/$export"):
            r = smart.get(path, headers=headers)
            assert r.status_code == 403, (scope, path, r.text)
            assert r.json()["resourceType"] == "OperationOutcome"
    assert smart.get("/fhir/$export", headers=ASYNC).status_code == 401

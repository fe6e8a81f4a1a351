"""SMART on FHIR enforced by the API: tokens, scopes, the patient compartment, audit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fhircare.api.app import create_app
from fhircare.config import Settings

ISS = "https://auth.example.org"
AUD = "http://testserver/fhir"


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
    }


@pytest.fixture
def smart(tmp_path: Path, keys: dict[str, Any]) -> Iterator[TestClient]:
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(keys["rsa"].public_key()))
    ec_jwk = json.loads(ECAlgorithm.to_jwk(keys["ec"].public_key()))
    rsa_jwk.update(kid="r1", alg="RS256", use="sig")
    ec_jwk.update(kid="e1", alg="ES256", use="sig")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_jwk, ec_jwk]}))
    settings = Settings(
        data=tmp_path / "d",
        base_url=AUD,
        auth="smart",
        auth_jwks=str(jwks),
        auth_issuer=ISS,
        auth_audience=AUD,
        auth_token_url="https://auth.example.org/token",
        auth_authorize_url="https://auth.example.org/authorize",
    )
    with TestClient(create_app(settings)) as c:
        yield c


def token(keys: dict[str, Any], scope: str, *, alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ISS,
        "aud": AUD,
        "sub": "u1",
        "client_id": "app1",
        "scope": scope,
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    key, kid = (keys["rsa"], "r1") if alg == "RS256" else (keys["ec"], "e1")
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def auth(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


@pytest.fixture
def world(smart: TestClient, keys: dict[str, Any]) -> dict[str, str]:
    admin = auth(token(keys, "system/*.cruds"))
    out = {}
    for name in ("alice", "bob"):
        pid = smart.post(
            "/fhir/Patient",
            json={"resourceType": "Patient", "name": [{"family": name}]},
            headers=admin,
        )
        assert pid.status_code == 201
        out[name] = pid.json()["id"]
        cp = smart.post(
            "/fhir/CarePlan",
            headers=admin,
            json={
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "subject": {"reference": f"Patient/{out[name]}"},
            },
        )
        out[f"{name}_plan"] = cp.json()["id"]
    return out


def test_no_or_bad_token_is_401(smart: TestClient, keys: dict[str, Any]) -> None:
    r = smart.get("/fhir/Patient")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json()["resourceType"] == "OperationOutcome"
    expired = token(keys, "system/*.rs", exp=int(time.time()) - 3600)
    assert smart.get("/fhir/Patient", headers=auth(expired)).status_code == 401
    wrong_aud = token(keys, "system/*.rs", aud="https://other.example/fhir")
    assert smart.get("/fhir/Patient", headers=auth(wrong_aud)).status_code == 401
    forged = jwt.encode(
        {"iss": ISS, "aud": AUD, "exp": int(time.time()) + 60, "scope": "system/*.cruds"},
        "a-shared-secret-that-is-long-enough-32b",
        algorithm="HS256",
    )
    assert smart.get("/fhir/Patient", headers=auth(forged)).status_code == 401
    assert smart.get("/fhir/metadata").status_code == 200  # discovery stays public


def test_patient_token_sees_only_its_compartment(
    smart: TestClient, keys: dict[str, Any], world: dict[str, str]
) -> None:
    t = auth(token(keys, "patient/*.rs", alg="ES256", patient=world["alice"]))
    assert smart.get(f"/fhir/Patient/{world['alice']}", headers=t).status_code == 200
    other = smart.get(f"/fhir/Patient/{world['bob']}", headers=t)
    assert other.status_code == 403 and other.json()["resourceType"] == "OperationOutcome"
    assert smart.get(f"/fhir/CarePlan/{world['bob_plan']}", headers=t).status_code == 403
    plans = smart.get("/fhir/CarePlan", headers=t).json()
    assert {e["resource"]["id"] for e in plans["entry"]} == {world["alice_plan"]}
    bob_search = smart.get("/fhir/CarePlan", params={"patient": world["bob"]}, headers=t).json()
    assert bob_search.get("entry", []) == []
    inc = smart.get("/fhir/CarePlan", params={"_include": "CarePlan:subject"}, headers=t).json()
    assert {e["resource"]["id"] for e in inc["entry"]} == {world["alice_plan"], world["alice"]}
    hist = smart.get("/fhir/CarePlan/_history", headers=t).json()
    assert all(
        e["resource"]["subject"]["reference"] == f"Patient/{world['alice']}" for e in hist["entry"]
    )


def test_writes_are_confined_and_scopes_named(
    smart: TestClient, keys: dict[str, Any], world: dict[str, str]
) -> None:
    t = auth(token(keys, "patient/CarePlan.cruds patient/Patient.rs", patient=world["alice"]))
    body = {
        "resourceType": "CarePlan",
        "status": "draft",
        "intent": "plan",
        "subject": {"reference": f"Patient/{world['bob']}"},
    }
    assert smart.post("/fhir/CarePlan", json=body, headers=t).status_code == 403
    body["subject"]["reference"] = f"Patient/{world['alice']}"
    assert smart.post("/fhir/CarePlan", json=body, headers=t).status_code == 201
    goal = {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "x"},
        "subject": {"reference": f"Patient/{world['alice']}"},
    }
    refused = smart.post("/fhir/Goal", json=goal, headers=t)
    assert refused.status_code == 403
    assert "patient/Goal.c" in refused.json()["issue"][0]["diagnostics"]
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {**body, "subject": {"reference": f"Patient/{world['bob']}"}},
                "request": {"method": "POST", "url": "CarePlan"},
            }
        ],
    }
    before = smart.get("/fhir/CarePlan", headers=auth(token(keys, "system/*.rs"))).json()["total"]
    assert smart.post("/fhir", json=tx, headers=t).status_code == 403
    after = smart.get("/fhir/CarePlan", headers=auth(token(keys, "system/*.rs"))).json()["total"]
    assert before == after


def test_v1_scopes_and_user_level(
    smart: TestClient, keys: dict[str, Any], world: dict[str, str]
) -> None:
    t = auth(token(keys, "user/CarePlan.read"))
    assert smart.get("/fhir/CarePlan", headers=t).json()["total"] == 2
    assert smart.delete(f"/fhir/CarePlan/{world['bob_plan']}", headers=t).status_code == 403


def test_discovery_documents_are_truthful(smart: TestClient) -> None:
    doc = smart.get("/.well-known/smart-configuration").json()
    assert doc["token_endpoint"] == "https://auth.example.org/token"
    assert smart.get("/fhir/.well-known/smart-configuration").json() == doc
    security = smart.get("/fhir/metadata").json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


def test_reads_and_writes_leave_audit_events(
    smart: TestClient, keys: dict[str, Any], world: dict[str, str]
) -> None:
    t = auth(token(keys, "patient/*.rs", patient=world["alice"]))
    smart.get(f"/fhir/CarePlan/{world['alice_plan']}", headers=t)
    smart.app.state.audit.flush()
    events = smart.get(
        "/fhir/AuditEvent",
        params={"entity": f"CarePlan/{world['alice_plan']}"},
        headers=auth(token(keys, "system/*.rs")),
    ).json()
    actions = [e["resource"]["action"] for e in events.get("entry", [])]
    assert "C" in actions and "R" in actions
    smart.get("/fhir/CarePlan", params={"status": "active"}, headers=t)
    smart.app.state.audit.flush()
    by_patient = smart.get(
        "/fhir/AuditEvent",
        params={"patient": f"Patient/{world['alice']}"},
        headers=auth(token(keys, "system/*.rs")),
    ).json()
    subtypes = {c["code"] for e in by_patient["entry"] for c in e["resource"].get("subtype", [])}
    assert "search-type" in subtypes


def test_event_endpoints_and_operations_are_guarded(
    smart: TestClient, keys: dict[str, Any], world: dict[str, str]
) -> None:
    evil = {"resourceType": "Patient", "id": "evil", "name": [{"family": "Forged"}]}
    assert smart.put("/events/hapi/Patient/evil", json=evil).status_code == 401
    patient_token = auth(token(keys, "patient/*.rs", patient=world["alice"]))
    assert (
        smart.put("/events/hapi/Patient/evil", json=evil, headers=patient_token).status_code == 403
    )
    system = auth(token(keys, "system/*.rs"))
    assert smart.get("/fhir/Patient/evil", headers=system).status_code == 404
    assert (
        smart.post("/hl7v2", content=b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\r").status_code
        == 401
    )

    other = smart.post(f"/fhir/Patient/{world['bob']}/$validate", headers=patient_token)
    assert other.status_code == 403
    obs_only = auth(token(keys, "user/Observation.rs"))
    hist = smart.get("/fhir/_history", headers=obs_only).json()
    assert all(
        e["resource"]["resourceType"] == "Observation"
        for e in hist.get("entry", [])
        if "resource" in e
    )
    assert (
        smart.get(
            "/care/worklist", params={"practitioner": "Practitioner/x"}, headers=obs_only
        ).status_code
        == 403
    )

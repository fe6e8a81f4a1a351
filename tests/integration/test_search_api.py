"""Search through the REST API: result shaping (_include, _revinclude, _elements, _summary,
_total), lenient handling, every R4 type served, the CapabilityStatement, deletes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhircare.api.app import create_app
from fhircare.config import Settings
from fhircare.fhir import registry

FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data=tmp_path / "data",
        base_url="http://testserver/fhir",
        seed_definitions=False,
        allow_cascading_deletes=True,
    )
    with TestClient(create_app(settings)) as c:
        for r in (
            {"resourceType": "Organization", "id": "org", "name": "Acme"},
            {"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Welby"}]},
            {
                "resourceType": "Patient",
                "id": "ann",
                "name": [{"family": "Smith"}],
                "gender": "female",
                "managingOrganization": {"reference": "Organization/org"},
                "text": {
                    "status": "generated",
                    "div": '<div xmlns="http://www.w3.org/1999/xhtml">Ann</div>',
                },
            },
            {
                "resourceType": "CarePlan",
                "id": "cp",
                "status": "active",
                "intent": "plan",
                "subject": {"reference": "Patient/ann"},
                "author": {"reference": "Practitioner/doc"},
            },
            {
                "resourceType": "Goal",
                "id": "g",
                "lifecycleStatus": "active",
                "description": {"text": "Walk"},
                "subject": {"reference": "Patient/ann"},
            },
        ):
            put = c.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r, headers=FHIR)
            assert put.status_code == 201, put.text
        yield c


def found(bundle: dict[str, Any], mode: str | None = None) -> list[str]:
    return sorted(
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if mode is None or e["search"]["mode"] == mode
    )


def test_include_star_and_iterate(api: TestClient) -> None:
    # every reference *search parameter* (CarePlan.author is none in R4, as in HAPI)
    b = api.get("/fhir/CarePlan?_include=CarePlan:*").json()
    assert found(b, "include") == ["Patient/ann"]
    b = api.get("/fhir/CarePlan?_include=*&_include:iterate=Patient:organization").json()
    assert found(b, "include") == ["Organization/org", "Patient/ann"]
    b = api.get("/fhir/CarePlan?_include=*&_include:iterate=*").json()
    assert found(b, "include") == ["Organization/org", "Patient/ann"]
    b = api.get("/fhir/CarePlan?_include=CarePlan:subject").json()
    assert found(b, "include") == ["Patient/ann"]


def test_revinclude_star(api: TestClient) -> None:
    b = api.get("/fhir/Patient?_revinclude=*").json()
    assert found(b, "include") == ["CarePlan/cp", "Goal/g"]
    b = api.get("/fhir/Patient?_revinclude=Goal:patient").json()
    assert found(b, "include") == ["Goal/g"]


def test_elements_and_summary_subset_and_tag(api: TestClient) -> None:
    (entry,) = api.get("/fhir/Patient?_elements=name").json()["entry"]
    res = entry["resource"]
    assert set(res) == {"resourceType", "id", "meta", "name"}
    assert {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "SUBSETTED",
    }.items() <= res["meta"]["tag"][0].items()
    res = api.get("/fhir/Patient?_summary=true").json()["entry"][0]["resource"]
    assert "text" not in res and res["gender"] == "female"
    res = api.get("/fhir/Patient?_summary=text").json()["entry"][0]["resource"]
    assert set(res) == {"resourceType", "id", "meta", "text"}
    res = api.get("/fhir/Patient?_summary=data").json()["entry"][0]["resource"]
    assert "text" not in res and "name" in res
    b = api.get("/fhir/Patient?_summary=count").json()
    assert b["total"] == 1 and "entry" not in b
    assert api.get("/fhir/Patient?_summary=nope").status_code == 400


def test_total_modes_and_fhirpy_count(api: TestClient) -> None:
    assert "total" not in api.get("/fhir/Patient?_total=none").json()
    assert api.get("/fhir/Patient?_total=accurate").json()["total"] == 1
    b = api.get("/fhir/CarePlan?_count=0&_totalMethod=count").json()  # what fhirpy count() sends
    assert b["total"] == 1 and b["entry"] == []
    assert api.get("/fhir/Patient?_total=sometimes").status_code == 400


def test_unknown_parameters_400_or_ignored_when_lenient(api: TestClient) -> None:
    r = api.get("/fhir/Patient?colour=blue")
    assert r.status_code == 400
    assert "Valid search parameters for this search are: [" in r.json()["issue"][0]["diagnostics"]
    r = api.get("/fhir/Patient?colour=blue&gender=female", headers={"Prefer": "handling=lenient"})
    assert r.status_code == 200 and found(r.json()) == ["Patient/ann"]
    assert r.json()["link"][0]["url"] == "http://testserver/fhir/Patient?gender=female"
    r = api.get("/fhir/Patient?gender=female", headers={"Prefer": "handling=strict"})
    assert r.status_code == 200


def test_paging_links_cover_every_match(api: TestClient) -> None:
    for i in range(5):
        body = {
            "resourceType": "Flag",
            "status": "active",
            "code": {"text": f"f{i}"},
            "subject": {"reference": "Patient/ann"},
        }
        assert api.post("/fhir/Flag", json=body, headers=FHIR).status_code == 201
    seen: list[str] = []
    url = "/fhir/Flag?patient=Patient/ann&_count=2"
    while url:
        b = api.get(url).json()
        assert b["total"] == 5
        seen += found(b)
        nxt = [link["url"] for link in b["link"] if link["relation"] == "next"]
        url = nxt[0].replace("http://testserver", "") if nxt else ""
    assert len(set(seen)) == 5


def test_delete_refused_while_referenced_then_cascade(api: TestClient) -> None:
    r = api.delete("/fhir/Patient/ann")
    assert r.status_code == 409
    assert "CarePlan/cp" in r.json()["issue"][0]["diagnostics"]
    assert api.get("/fhir/Patient/ann").status_code == 200
    assert api.delete("/fhir/Patient/ann?_cascade=nope").status_code == 400
    assert api.delete("/fhir/Patient/ann?_cascade=delete").status_code == 200
    assert api.get("/fhir/CarePlan/cp").status_code == 410
    assert api.get("/fhir/Goal/g").status_code == 410


def test_cascade_is_off_by_default(tmp_path: Path) -> None:
    settings = Settings(
        data=tmp_path / "d", base_url="http://testserver/fhir", seed_definitions=False
    )
    with TestClient(create_app(settings)) as c:
        assert (
            c.put(
                "/fhir/Patient/p", json={"resourceType": "Patient", "id": "p"}, headers=FHIR
            ).status_code
            == 201
        )
        assert c.delete("/fhir/Patient/p?_cascade=delete").status_code == 400


def test_transaction_delete_keeps_integrity(api: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "Organization/org"}}],
    }
    r = api.post("/fhir", json=bundle, headers=FHIR)
    assert r.status_code == 409 and "Patient/ann" in r.text
    assert api.get("/fhir/Organization/org").status_code == 200


@pytest.mark.parametrize(
    "resource",
    [
        {
            "resourceType": "Claim",
            "status": "active",
            "type": {"text": "x"},
            "use": "claim",
            "patient": {"reference": "Patient/ann"},
            "created": "2020-01-01",
            "provider": {"reference": "Organization/org"},
            "priority": {"text": "normal"},
            "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "c"}}],
        },
        {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="},
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {
                    "fullUrl": "urn:uuid:0b2c8c3e-8d2b-4c3b-9f3e-3c3f1d7e7a11",
                    "resource": {"resourceType": "Patient", "active": True},
                }
            ],
        },
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational"}],
        },
        {"resourceType": "Device", "status": "active"},
        {"resourceType": "MedicinalProduct", "name": [{"productName": "Aspirin"}]},
        {
            "resourceType": "Evidence",
            "status": "active",
            "exposureBackground": {"reference": "EvidenceVariable/ev"},
        },
    ],
    ids=lambda r: r["resourceType"],
)
def test_every_r4_type_is_stored_read_and_searched(api: TestClient, resource: dict) -> None:
    rtype = resource["resourceType"]
    if rtype == "Evidence":
        ev = {
            "resourceType": "EvidenceVariable",
            "id": "ev",
            "status": "active",
            "characteristic": [{"definitionCodeableConcept": {"text": "x"}}],
        }
        assert api.put("/fhir/EvidenceVariable/ev", json=ev, headers=FHIR).status_code == 201
    r = api.post(f"/fhir/{rtype}", json=resource, headers=FHIR)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert api.get(f"/fhir/{rtype}/{rid}").json()["meta"]["versionId"] == "1"
    assert found(api.get(f"/fhir/{rtype}?_id={rid}").json()) == [f"{rtype}/{rid}"]


def test_r4_only_types_are_validated_from_the_definitions(api: TestClient) -> None:
    bad = {"resourceType": "MedicinalProduct", "name": [{"productName": 5}]}
    r = api.post("/fhir/MedicinalProduct", json=bad, headers=FHIR)
    assert r.status_code == 422 and "MedicinalProduct.name[0].productName" in r.text
    bad = {"resourceType": "EvidenceVariable", "status": "active"}  # characteristic 1..*
    assert api.post("/fhir/EvidenceVariable", json=bad, headers=FHIR).status_code == 422
    bad = {"resourceType": "SubstancePolymer", "class": {"text": "x"}, "oops": 1}
    r = api.post("/fhir/SubstancePolymer", json=bad, headers=FHIR)
    assert r.status_code == 422 and "oops" in r.text


def test_r4_bindings_and_r4b_only_elements(api: TestClient) -> None:
    obs = {"resourceType": "Observation", "status": "definitely", "code": {"text": "x"}}
    r = api.post("/fhir/Observation", json=obs, headers=FHIR)
    assert r.status_code == 422 and "definitely" in r.text
    plan = {
        "resourceType": "PlanDefinition",
        "status": "draft",
        "subjectCanonical": "http://example.org/x",
    }  # R4B only
    r = api.post("/fhir/PlanDefinition", json=plan, headers=FHIR)
    assert r.status_code == 422 and "subjectCanonical" in r.text


def test_posted_search_parameter_is_declared_and_searchable(api: TestClient) -> None:
    sp = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/sp/goal-text",
        "name": "goaltext",
        "status": "active",
        "description": "Goal text",
        "code": "description-text",
        "base": ["Goal"],
        "type": "string",
        "expression": "Goal.description.text",
    }
    assert api.post("/fhir/SearchParameter", json=sp, headers=FHIR).status_code == 201
    assert found(api.get("/fhir/Goal?description-text=wal").json()) == ["Goal/g"]
    cs = api.get("/fhir/metadata").json()
    goal = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Goal")
    declared = {p["name"]: p["definition"] for p in goal["searchParam"]}
    assert declared["description-text"] == "http://example.org/sp/goal-text"
    bad = dict(sp, url="http://example.org/sp/bad", code="bad", expression="Goal.(((")
    assert api.post("/fhir/SearchParameter", json=bad, headers=FHIR).status_code == 422


def test_capability_statement_declares_what_works(api: TestClient) -> None:
    cs = api.get("/fhir/metadata").json()
    rest = cs["rest"][0]
    types = {r["type"]: r for r in rest["resource"]}
    assert set(types) == set(registry.resource_types())
    patient = types["Patient"]
    names = {p["name"] for p in patient["searchParam"]}
    assert "status" not in names and {"birthdate", "_id", "_lastUpdated"} <= names
    assert "near" not in {p["name"] for p in types["Location"]["searchParam"]}
    assert "patient" in {p["name"] for p in types["AllergyIntolerance"]["searchParam"]}
    assert "AllergyIntolerance:patient" in patient["searchRevInclude"]
    assert all(p["definition"].startswith("http") for p in patient["searchParam"])
    # each declared parameter is accepted (a wrong value type would be 400, not "unknown")
    for rtype in ("Patient", "Observation", "CarePlan", "Claim"):
        for p in types[rtype]["searchParam"]:
            r = api.get(f"/fhir/{rtype}?{p['name']}:missing=true")
            assert r.status_code == 200, (rtype, p["name"], r.text[:200])
    codes = {i["code"] for i in patient["interaction"]}
    assert {"read", "vread", "update", "delete", "create", "search-type"} <= codes
    assert {"transaction", "batch", "history-system"} <= {i["code"] for i in rest["interaction"]}


def test_read_honours_summary_and_elements(api: TestClient) -> None:
    res = api.get("/fhir/Patient/ann?_elements=gender").json()
    assert set(res) == {"resourceType", "id", "meta", "gender"}
    assert res["meta"]["tag"][0]["code"] == "SUBSETTED"
    assert "text" not in api.get("/fhir/Patient/ann?_summary=data").json()
    assert api.get("/fhir/Patient/ann?_summary=count").status_code == 400
    assert "text" in api.get("/fhir/Patient/ann").json()

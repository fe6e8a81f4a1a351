"""The FHIR facade through the ASGI app with the store on disk."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhircare.api.app import create_app
from fhircare.config import Settings

FHIR = {"Content-Type": "application/fhir+json"}


def patient(family: str = "Nguyen", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["An"]}], **extra}


def careplan(pid: str, status: str = "active", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "status": status,
        "intent": "plan",
        "subject": {"reference": f"Patient/{pid}"},
        **extra,
    }


@pytest.fixture
def pid(client: TestClient) -> str:
    return client.post("/fhir/Patient", json=patient()).json()["id"]


def test_metadata_is_a_truthful_capability_statement(client: TestClient) -> None:
    r = client.get("/fhir/metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    types = {res["type"]: res for res in cs["rest"][0]["resource"]}
    for needed in (
        "Patient",
        "CarePlan",
        "Task",
        "Goal",
        "QuestionnaireResponse",
        "List",
        "DetectedIssue",
        "Provenance",
        "MedicationStatement",
        "PlanDefinition",
    ):
        assert needed in types
    names = {p["name"] for p in types["CarePlan"]["searchParam"]}
    assert {"patient", "status", "category", "_lastUpdated", "identifier"} <= names
    assert {"transaction", "batch"} <= {i["code"] for i in cs["rest"][0]["interaction"]}


def test_create_read_update_vread_delete_history(client: TestClient, pid: str) -> None:
    r = client.post("/fhir/CarePlan", json=careplan(pid))
    assert r.status_code == 201
    cp = r.json()
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"].endswith(f"/fhir/CarePlan/{cp['id']}/_history/1")
    assert cp["meta"]["versionId"] == "1" and cp["meta"]["lastUpdated"].endswith("Z")

    cp["status"] = "on-hold"
    r = client.put(f"/fhir/CarePlan/{cp['id']}", json=cp)
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"2"'
    assert client.get(f"/fhir/CarePlan/{cp['id']}").json()["status"] == "on-hold"
    assert client.get(f"/fhir/CarePlan/{cp['id']}/_history/1").json()["status"] == "active"

    assert client.delete(f"/fhir/CarePlan/{cp['id']}").status_code == 200
    gone = client.get(f"/fhir/CarePlan/{cp['id']}")
    assert gone.status_code == 410 and gone.json()["resourceType"] == "OperationOutcome"
    hist = client.get(f"/fhir/CarePlan/{cp['id']}/_history").json()
    assert hist["type"] == "history" and hist["total"] == 3
    assert [e["request"]["method"] for e in hist["entry"]] == ["DELETE", "PUT", "POST"]
    assert client.get(f"/fhir/CarePlan/{cp['id']}/_history/2").json()["status"] == "on-hold"
    type_hist = client.get("/fhir/CarePlan/_history").json()
    assert type_hist["total"] == 3


def test_update_with_client_id_creates_and_if_match_guards(client: TestClient, pid: str) -> None:
    cid = f"cp-{uuid.uuid4().hex[:8]}"
    body = careplan(pid, id=cid)
    r = client.put(f"/fhir/CarePlan/{cid}", json=body)
    assert r.status_code == 201
    body["status"] = "on-hold"
    r = client.put(f"/fhir/CarePlan/{cid}", json=body, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200
    body["status"] = "active"
    stale = client.put(f"/fhir/CarePlan/{cid}", json=body, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/CarePlan/{cid}").json()["meta"]["versionId"] == "2"
    mismatch = client.put(f"/fhir/CarePlan/{cid}", json=careplan(pid, id="other"))
    assert mismatch.status_code == 400
    same = client.put(f"/fhir/CarePlan/{cid}", json=client.get(f"/fhir/CarePlan/{cid}").json())
    assert same.status_code == 200 and same.json()["meta"]["versionId"] == "2"  # no-op update


def test_conditional_create_returns_existing(client: TestClient) -> None:
    mrn = uuid.uuid4().hex
    body = patient(identifier=[{"system": "urn:oid:2.16.840.1.113883.19.5", "value": mrn}])
    hdr = {"If-None-Exist": f"identifier=urn:oid:2.16.840.1.113883.19.5|{mrn}"}
    first = client.post("/fhir/Patient", json=body, headers=hdr)
    second = client.post("/fhir/Patient", json=body, headers=hdr)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert (
        client.get(
            "/fhir/Patient", params={"identifier": f"urn:oid:2.16.840.1.113883.19.5|{mrn}"}
        ).json()["total"]
        == 1
    )


def test_conditional_update_and_delete(client: TestClient) -> None:
    mrn = uuid.uuid4().hex
    body = patient(identifier=[{"system": "http://h.example/mrn", "value": mrn}])
    r = client.put(f"/fhir/Patient?identifier=http://h.example/mrn|{mrn}", json=body)
    assert r.status_code == 201
    r2 = client.put(
        f"/fhir/Patient?identifier=http://h.example/mrn|{mrn}", json={**body, "gender": "female"}
    )
    assert r2.status_code == 200 and r2.json()["id"] == r.json()["id"]
    assert r2.json()["meta"]["versionId"] == "2"
    assert client.delete(f"/fhir/Patient?identifier=http://h.example/mrn|{mrn}").status_code == 200
    assert client.get(f"/fhir/Patient/{r.json()['id']}").status_code == 410


def test_prefer_minimal_and_outcome(client: TestClient) -> None:
    r = client.post("/fhir/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b"" and r.headers["Location"]
    r = client.post("/fhir/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"})
    assert r.json()["resourceType"] == "OperationOutcome"


def test_search_params_paging_sort_and_include(client: TestClient, pid: str) -> None:
    other = client.post("/fhir/Patient", json=patient("Other")).json()["id"]
    ids = []
    for i in range(7):
        body = careplan(
            pid,
            status="active" if i % 2 else "completed",
            category=[
                {
                    "coding": [
                        {
                            "system": "http://hl7.org/fhir/us/core/CodeSystem/careplan-category",
                            "code": "assess-plan",
                        }
                    ]
                }
            ],
            identifier=[{"system": "http://fhircare.org/test", "value": f"{pid}-cp{i}"}],
        )
        ids.append(client.post("/fhir/CarePlan", json=body).json()["id"])
    client.post("/fhir/CarePlan", json=careplan(other))

    b = client.get("/fhir/CarePlan", params={"patient": f"Patient/{pid}", "_count": 3}).json()
    assert b["total"] == 7 and len(b["entry"]) == 3
    seen = [e["resource"]["id"] for e in b["entry"]]
    nxt = next(link["url"] for link in b["link"] if link["relation"] == "next")
    while nxt:
        page = client.get(nxt.replace("http://testserver", "")).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        assert any(link["relation"] == "previous" for link in page["link"])
        nxt = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert sorted(seen) == sorted(ids)

    assert (
        client.get(
            "/fhir/CarePlan", params={"subject": f"Patient/{pid}", "status": "active"}
        ).json()["total"]
        == 3
    )
    assert (
        client.get("/fhir/CarePlan", params={"patient": pid, "status": "active,completed"}).json()[
            "total"
        ]
        == 7
    )
    assert (
        client.get(
            "/fhir/CarePlan", params={"identifier": f"http://fhircare.org/test|{pid}-cp3"}
        ).json()["total"]
        == 1
    )
    assert (
        client.get(
            "/fhir/CarePlan",
            params={
                "patient": pid,
                "category": "http://hl7.org/fhir/us/core/CodeSystem/careplan-category|assess-plan",
            },
        ).json()["total"]
        == 7
    )
    assert client.get("/fhir/CarePlan", params={"_id": ids[0]}).json()["total"] == 1

    desc = client.get("/fhir/CarePlan", params={"patient": pid, "_sort": "-_lastUpdated"}).json()
    stamps = [e["resource"]["meta"]["lastUpdated"] for e in desc["entry"]]
    assert stamps == sorted(stamps, reverse=True)

    inc = client.get("/fhir/CarePlan", params={"_id": ids[0], "_include": "CarePlan:subject"})
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in inc.json()["entry"]}
    assert modes == {("CarePlan", "match"), ("Patient", "include")}

    count = client.get("/fhir/CarePlan", params={"patient": pid, "_summary": "count"}).json()
    assert count["total"] == 7 and "entry" not in count


def test_last_updated_search(client: TestClient, pid: str) -> None:
    first = client.post("/fhir/CarePlan", json=careplan(pid)).json()
    second = client.post("/fhir/CarePlan", json=careplan(pid)).json()
    stamp = first["meta"]["lastUpdated"]
    gt = client.get("/fhir/CarePlan", params={"_lastUpdated": f"gt{stamp}"}).json()
    assert [e["resource"]["id"] for e in gt["entry"]] == [second["id"]]
    ge = client.get("/fhir/CarePlan", params={"_lastUpdated": f"ge{stamp}"}).json()
    assert ge["total"] == 2
    le = client.get("/fhir/CarePlan", params={"_lastUpdated": f"le{stamp}"}).json()
    assert [e["resource"]["id"] for e in le["entry"]] == [first["id"]]
    assert (
        client.get("/fhir/CarePlan", params={"_lastUpdated": "lt2000-01-01"}).json()["total"] == 0
    )
    bad = client.get("/fhir/CarePlan", params={"_lastUpdated": "gtyesterday"})
    assert bad.status_code == 400


def test_transaction_is_atomic_and_rewrites_urn_references(client: TestClient) -> None:
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:p1",
                "resource": patient("Tx"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:g1",
                "resource": {
                    "resourceType": "Goal",
                    "lifecycleStatus": "active",
                    "description": {"text": "HbA1c below 7%"},
                    "subject": {"reference": "urn:uuid:p1"},
                },
                "request": {"method": "POST", "url": "Goal"},
            },
            {
                "fullUrl": "urn:uuid:c1",
                "resource": {
                    "resourceType": "CarePlan",
                    "status": "active",
                    "intent": "plan",
                    "subject": {"reference": "urn:uuid:p1"},
                    "goal": [{"reference": "urn:uuid:g1"}],
                },
                "request": {"method": "POST", "url": "CarePlan"},
            },
        ],
    }
    r = client.post("/fhir", json=tx)
    assert r.status_code == 200
    resp = r.json()
    assert resp["type"] == "transaction-response"
    assert [e["response"]["status"] for e in resp["entry"]] == ["201 Created"] * 3
    cp_loc = resp["entry"][2]["response"]["location"]
    cp = client.get("/fhir/" + cp_loc.split("/_history")[0]).json()
    pat_id = resp["entry"][0]["response"]["location"].split("/")[1]
    assert cp["subject"]["reference"] == f"Patient/{pat_id}"
    assert cp["goal"][0]["reference"].startswith("Goal/")

    before = client.get("/fhir/Patient", params={"family": "Atomic"}).json()["total"]
    bad = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:a",
                "resource": patient("Atomic"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Goal",
                    "lifecycleStatus": "nonsense",
                    "description": {"text": "x"},
                    "subject": {"reference": "urn:uuid:a"},
                },
                "request": {"method": "POST", "url": "Goal"},
            },
        ],
    }
    r = client.post("/fhir", json=bad)
    assert r.status_code == 422
    assert "Bundle.entry[1]" in r.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/Patient", params={"family": "Atomic"}).json()["total"] == before


def test_transaction_rewrites_urn_references_inside_contained_resources(
    client: TestClient,
) -> None:
    """A claim-like resource whose contained ServiceRequest names the Bundle's Patient by urn
    (what Synthea's ExplanationOfBenefit does) is stored with the new id there too."""
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:cp1",
                "resource": patient("Contained"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "CarePlan",
                    "status": "active",
                    "intent": "plan",
                    "subject": {"reference": "urn:uuid:cp1"},
                    "contained": [
                        {
                            "resourceType": "ServiceRequest",
                            "id": "ref1",
                            "status": "active",
                            "intent": "order",
                            "subject": {"reference": "urn:uuid:cp1"},
                        }
                    ],
                    "activity": [{"reference": {"reference": "#ref1"}}],
                },
                "request": {"method": "POST", "url": "CarePlan"},
            },
        ],
    }
    r = client.post("/fhir", json=tx)
    assert r.status_code == 200, r.text
    resp = r.json()["entry"]
    pat = resp[0]["response"]["location"].split("/_history")[0]
    cp = client.get("/fhir/" + resp[1]["response"]["location"].split("/_history")[0]).json()
    assert cp["subject"]["reference"] == pat
    assert cp["contained"][0]["subject"]["reference"] == pat
    assert cp["activity"][0]["reference"]["reference"] == "#ref1"

    # outside a transaction a urn in a contained resource resolves to nothing: refused
    alone = dict(tx["entry"][1]["resource"], subject={"reference": pat})
    r = client.post("/fhir/CarePlan", json=alone)
    assert r.status_code == 422
    assert "contained" in r.json()["issue"][0]["diagnostics"]


def test_transaction_conditional_delete_removes_every_match(client: TestClient) -> None:
    """conditionalDelete is `multiple` in the CapabilityStatement: in a transaction too."""
    family = f"D{uuid.uuid4().hex[:12]}"
    for _ in range(3):
        assert client.post("/fhir/Patient", json=patient(family)).status_code == 201
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "DELETE", "url": f"Patient?family={family}"}},
            {"request": {"method": "DELETE", "url": f"Patient?family={family}x"}},
            {"request": {"method": "DELETE", "url": f"Patient?family={family}y"}},
        ],
    }
    r = client.post("/fhir", json=tx)
    assert r.status_code == 200, r.text
    assert client.get("/fhir/Patient", params={"family:exact": family}).json()["total"] == 0


def test_batch_runs_each_entry_on_its_own(client: TestClient) -> None:
    family = f"B{uuid.uuid4().hex[:12]}"
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": patient(family), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {"resourceType": "Patient", "gender": "bogus"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": f"Patient?family={family}"}},
            {"request": {"method": "GET", "url": "Patient/missing"}},
        ],
    }
    r = client.post("/fhir", json=batch)
    assert r.status_code == 200
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0] == "201 Created" and statuses[1] == "422"
    assert r.json()["entry"][2]["resource"]["total"] == 1
    assert statuses[3] == "404"


@pytest.mark.parametrize(
    ("method", "url", "body", "headers", "status"),
    [
        ("POST", "/fhir/Patient", b"{not json", FHIR, 400),
        ("POST", "/fhir/Patient", b'{"resourceType": "Observation", "status": "final"}', FHIR, 400),
        (
            "POST",
            "/fhir/Patient",
            b'{"resourceType": "Patient", "birthDate": "1990-13-45"}',
            FHIR,
            422,
        ),
        ("POST", "/fhir/Patient", b'{"resourceType": "Patient", "unknownThing": 1}', FHIR, 422),
        (
            "POST",
            "/fhir/Patient",
            b'<Patient xmlns="http://hl7.org/fhir"/>',
            {"Content-Type": "application/fhir+xml"},
            415,
        ),
        ("GET", "/fhir/Unicorn/1", None, {}, 404),
        ("GET", "/fhir/Patient/does-not-exist", None, {}, 404),
        ("GET", "/fhir/Patient/bad$id", None, {}, 400),
        ("GET", "/fhir/Patient?_count=abc", None, {}, 400),
        ("POST", "/fhir", b'{"resourceType": "Bundle", "type": "collection"}', FHIR, 400),
    ],
)
def test_bad_input_gets_an_operation_outcome(
    client: TestClient, method: str, url: str, body: bytes | None, headers: dict, status: int
) -> None:
    before = client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"]
    r = client.request(method, url, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == before


def test_invalid_resource_names_the_failing_element(client: TestClient) -> None:
    r = client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "X", "use": "weird"}]}
    )
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["Patient.name[0].use"]


def test_body_too_large_is_413(tmp_path: Any) -> None:
    app = create_app(Settings(data=tmp_path / "d", max_body_bytes=2000))
    with TestClient(app) as c:
        big = patient("X" * 5000)
        r = c.post("/fhir/Patient", json=big)
        assert r.status_code == 413
        assert r.json()["resourceType"] == "OperationOutcome"


def test_data_survives_restart(tmp_path: Any) -> None:
    settings = Settings(data=tmp_path / "d")
    with TestClient(create_app(settings)) as c:
        pid = c.post("/fhir/Patient", json=patient("Persist")).json()["id"]
    with TestClient(create_app(settings)) as c:
        assert c.get(f"/fhir/Patient/{pid}").json()["name"][0]["family"] == "Persist"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"resourceType": "Patient", "name": []}, "Patient.name"),
        ({"resourceType": "Patient", "name": [{"given": [""]}]}, "Patient.name[0].given[0]"),
        ({"resourceType": "Patient", "gender": None}, "Patient.gender"),
        ({"resourceType": "Patient", "name": [{}]}, "Patient.name[0]"),
    ],
)
def test_empty_elements_are_refused(client: TestClient, body: dict, where: str) -> None:
    r = client.post("/fhir/Patient", json=body)
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == [where]


def test_a_claimed_fhircare_profile_is_enforced(client: TestClient, pid: str) -> None:
    profile = "http://fhircare.org/fhir/StructureDefinition/fhircare-task"
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "meta": {"profile": [profile]},
        "for": {"reference": f"Patient/{pid}"},
        "authoredOn": "2026-11-20T10:00:00Z",
    }
    r = client.post("/fhir/Task", json=task)
    assert r.status_code == 422
    paths = [p for issue in r.json()["issue"] for p in issue.get("expression", [])]
    assert "Task.code" in paths and "Task" in paths  # missing code; fta-1 owner-or-requester
    task["code"] = {
        "coding": [
            {"system": "http://fhircare.org/fhir/CodeSystem/care-task", "code": "follow-up-call"}
        ]
    }
    task["requester"] = {"reference": f"Patient/{pid}"}
    assert client.post("/fhir/Task", json=task).status_code == 201
    del task["meta"]  # without the claim only the base specification applies
    del task["code"]
    assert client.post("/fhir/Task", json=task).status_code == 201

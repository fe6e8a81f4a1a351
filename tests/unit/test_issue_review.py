"""DetectedIssue/$review through the FHIR API: accept, override (with a reason), call the
prescriber; each one commit with its Provenance, refused whole when it cannot stand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhircare.api.app import create_app
from fhircare.config import Settings

ROOT = Path(__file__).resolve().parents[2]
FHIR = {"Content-Type": "application/fhir+json"}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CARE_TASK = "http://fhircare.org/fhir/CodeSystem/care-task"
REVIEWER = "Practitioner/reviewer-1"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data=tmp_path / "data", base_url="http://testserver/fhir", care_manager=REVIEWER,
        fsync=False, audit=False,
    )
    with TestClient(create_app(settings)) as c:
        practitioner = {"resourceType": "Practitioner", "id": "reviewer-1",
                        "name": [{"family": "Reviewer", "given": ["Robin"]}]}
        assert c.put(f"/fhir/{REVIEWER}", json=practitioner, headers=FHIR).status_code == 201
        bundle = json.loads((ROOT / "examples" / "discharge-bundle.json").read_text())
        bundle["type"] = "transaction"
        for entry in bundle["entry"]:
            r = entry["resource"]
            entry["request"] = {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
        assert c.post("/fhir", json=bundle, headers=FHIR).status_code == 200
        yield c


def issues(api: TestClient) -> dict[str, dict[str, Any]]:
    """The discharge's DetectedIssues by code (high-risk apixaban, omission lisinopril)."""
    found = api.get("/fhir/DetectedIssue", params={"patient": "Patient/example-dana"}).json()
    out = {}
    for e in found["entry"]:
        out[e["resource"]["code"]["coding"][0]["code"]] = e["resource"]
    assert set(out) == {"high-risk", "omission"}
    return out


def review(api: TestClient, issue: dict[str, Any], decision: str, version: str | None = None,
           **extra: str) -> Any:
    params = [{"name": "decision", "valueCode": decision},
              {"name": "reviewer", "valueReference": {"reference": REVIEWER}}]
    params += [{"name": k, "valueString": v} for k, v in extra.items()]
    headers = {**FHIR, "If-Match": f'W/"{version or issue["meta"]["versionId"]}"'}
    return api.post(f"/fhir/DetectedIssue/{issue['id']}/$review",
                    json={"resourceType": "Parameters", "parameter": params}, headers=headers)


def review_tasks(api: TestClient, issue_id: str) -> list[dict[str, Any]]:
    found = api.get("/fhir/Task", params={"focus": f"DetectedIssue/{issue_id}"}).json()
    return [e["resource"] for e in found.get("entry") or []]


def provenances(api: TestClient) -> list[dict[str, Any]]:
    found = api.get("/fhir/Provenance", params={"agent": REVIEWER}).json()
    return [e["resource"] for e in found.get("entry") or []]


def test_accept_records_therapy_appropriate_completes_the_review_and_is_final(
    api: TestClient,
) -> None:
    issue = issues(api)["high-risk"]
    (task,) = review_tasks(api, issue["id"])
    assert task["status"] == "requested"
    answer = review(api, issue, "accept")
    assert answer.status_code == 200, answer.text
    written = {e["resource"]["resourceType"] for e in answer.json()["entry"]}
    assert written == {"DetectedIssue", "Task", "Provenance"}

    stored = api.get(f"/fhir/DetectedIssue/{issue['id']}").json()
    (mitigation,) = stored["mitigation"]
    assert mitigation["action"]["coding"] == [
        {"system": ACT_CODE, "code": "1", "display": "Therapy Appropriate"}
    ]
    assert mitigation["author"] == {"reference": REVIEWER}
    (done,) = review_tasks(api, issue["id"])
    assert done["status"] == "completed"
    assert done["output"][0]["valueReference"] == {"reference": f"DetectedIssue/{issue['id']}"}
    (prov,) = provenances(api)
    assert {"reference": f"DetectedIssue/{issue['id']}/_history/2"} in prov["target"]
    assert {"reference": f"Task/{task['id']}/_history/2"} in prov["target"]
    assert prov["entity"][0]["what"]["reference"] == f"DetectedIssue/{issue['id']}/_history/1"
    assert prov["agent"][0]["type"]["coding"][0]["code"] == "verifier"

    again = review(api, stored, "override", reason="changed my mind")
    assert again.status_code == 409
    assert "already decided" in again.json()["issue"][0]["diagnostics"]


def test_override_needs_a_reason_and_keeps_it_with_its_code(api: TestClient) -> None:
    issue = issues(api)["omission"]
    refused = review(api, issue, "override")
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["reason"]
    assert api.get(f"/fhir/DetectedIssue/{issue['id']}").json()["meta"]["versionId"] == "1"
    assert provenances(api) == []

    bad_code = review(api, issue, "override", reason="x", reasonCode="1")
    assert bad_code.status_code == 422

    reason = "Stopped on purpose: acute kidney injury during the stay"
    answer = review(api, issue, "override", reason=reason, reasonCode="22")
    assert answer.status_code == 200, answer.text
    stored = api.get(f"/fhir/DetectedIssue/{issue['id']}").json()
    action = stored["mitigation"][0]["action"]
    assert action["coding"][0] == {
        "system": ACT_CODE, "code": "22", "display": "appropriate indication or diagnosis"
    }
    assert reason in action["text"]
    (prov,) = provenances(api)
    assert reason in prov["reason"][0]["text"]
    assert [t["status"] for t in review_tasks(api, issue["id"])] == ["completed"]


def test_a_stale_version_is_refused_and_writes_nothing(api: TestClient) -> None:
    issue = issues(api)["omission"]
    stale = review(api, issue, "accept", version="7")
    assert stale.status_code == 412
    assert "changed since you read it" in stale.json()["issue"][0]["diagnostics"]
    assert "mitigation" not in api.get(f"/fhir/DetectedIssue/{issue['id']}").json()
    assert [t["status"] for t in review_tasks(api, issue["id"])] == ["requested"]


def test_call_the_prescriber_opens_a_task_once_and_leaves_the_issue_open(
    api: TestClient,
) -> None:
    issue = issues(api)["high-risk"]
    (review_task,) = review_tasks(api, issue["id"])
    answer = review(api, issue, "call-prescriber", reason="dose for renal function?")
    assert answer.status_code == 200, answer.text
    call = next(
        t for t in review_tasks(api, issue["id"])
        if t["code"]["coding"][0] == {
            "system": CARE_TASK, "code": "prescriber-contact", "display": "Contact the prescriber"
        }
    )
    assert call["status"] == "requested"
    assert call["owner"] == {"reference": REVIEWER}
    assert call["priority"] == "urgent"  # a high-severity issue
    assert call["partOf"] == [{"reference": f"Task/{review_task['id']}"}]
    assert call["for"] == {"reference": "Patient/example-dana"}
    stored = api.get(f"/fhir/DetectedIssue/{issue['id']}").json()
    assert "mitigation" not in stored and stored["meta"]["versionId"] == "1"
    assert api.get(f"/fhir/Task/{review_task['id']}").json()["status"] == "requested"

    twice = review(api, issue, "call-prescriber")
    assert twice.status_code == 409
    # the issue can still be settled once the prescriber answered
    assert review(api, issue, "accept", reason="prescriber confirmed").status_code == 200


@pytest.mark.parametrize(
    ("decision", "reviewer", "status"),
    [("approve", REVIEWER, 422), ("accept", "Patient/example-dana", 422),
     ("accept", "Practitioner/nobody", 422)],
)
def test_bad_decisions_and_reviewers_are_refused(
    api: TestClient, decision: str, reviewer: str, status: int
) -> None:
    issue = issues(api)["high-risk"]
    params = [{"name": "decision", "valueCode": decision},
              {"name": "reviewer", "valueReference": {"reference": reviewer}}]
    answer = api.post(f"/fhir/DetectedIssue/{issue['id']}/$review",
                      json={"resourceType": "Parameters", "parameter": params}, headers=FHIR)
    assert answer.status_code == status, answer.text
    assert "mitigation" not in api.get(f"/fhir/DetectedIssue/{issue['id']}").json()

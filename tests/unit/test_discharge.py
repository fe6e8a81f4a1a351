"""Discharge processing: business days, plans by disposition, idempotency, the care plan."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from fhircare.care.plans import apply_plan_definition
from fhircare.fhir.references import iter_references, parse_local
from fhircare.fhir.validation import validate_resource
from fhircare.services.bus import MessageBus
from fhircare.store.embedded import EmbeddedStore
from fhircare.transitions import discharge
from fhircare.transitions.business_days import (
    add_business_days,
    business_deadline,
    calendar_deadline,
)
from tests.unit.care_helpers import CM, condition, make_store, put, seed_patient

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DISPO = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
V2_0112 = "http://terminology.hl7.org/CodeSystem/v2-0112"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CARE_TASK = "http://fhircare.org/fhir/CodeSystem/care-task"
NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
FRIDAY_END = "2025-02-28T15:00:00-05:00"


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    s = make_store(tmp_path / "data")
    yield s
    s.close()


def encounter(
    store: EmbeddedStore,
    patient: str,
    *,
    eid: str = "e1",
    end: str = FRIDAY_END,
    dispo: tuple[str, str] | None = (DISPO, "home"),
    cls: str = "IMP",
    status: str = "finished",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": eid,
        "status": status,
        "class": {"system": ACT, "code": cls},
        "subject": {"reference": patient},
        "period": {"start": "2025-02-24T10:00:00-05:00", "end": end},
    }
    if dispo:
        body["hospitalization"] = {
            "dischargeDisposition": {"coding": [{"system": dispo[0], "code": dispo[1]}]}
        }
    return put(store, body)


def home_meds(store: EmbeddedStore, patient: str) -> None:
    """Two pre-admission medications; one is missing from the (empty) discharge list."""
    for mid, code, name in [
        ("mr-amlo", "197361", "amlodipine 5 MG Oral Tablet"),
        ("mr-metf", "861007", "metformin hydrochloride 500 MG Oral Tablet"),
    ]:
        put(
            store,
            {
                "resourceType": "MedicationRequest",
                "id": mid,
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {
                    "coding": [{"system": RXNORM, "code": code, "display": name}]
                },
                "subject": {"reference": patient},
                "authoredOn": "2024-12-01",
            },
        )


def by_type(resources: list[dict[str, Any]], rtype: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == rtype]


def care_task_codes(tasks: list[dict[str, Any]], status: str | None = None) -> list[str]:
    return sorted(
        c["code"]
        for t in tasks
        if status is None or t["status"] == status
        for c in t["code"].get("coding", [])
        if c["system"] == CARE_TASK
    )


# ---- business days ------------------------------------------------------------------------


def test_business_days() -> None:
    friday = date(2025, 2, 28)
    assert add_business_days(friday, 1) == date(2025, 3, 3)  # Monday
    assert add_business_days(friday, 2) == date(2025, 3, 4)  # Tuesday
    assert add_business_days(friday, 0) == friday
    assert add_business_days(date(2025, 3, 1), 1) == date(2025, 3, 3)  # Saturday -> Monday
    assert add_business_days(date(2025, 3, 3), 2) == date(2025, 3, 5)  # Monday -> Wednesday
    holiday = {date(2025, 3, 3)}
    assert add_business_days(friday, 2, holiday) == date(2025, 3, 5)  # Monday off -> Wednesday
    end = datetime.fromisoformat(FRIDAY_END)
    assert business_deadline(end, 2).isoformat() == "2025-03-04T23:59:59-05:00"
    assert calendar_deadline(end, 7).isoformat() == "2025-03-07T23:59:59-05:00"
    with pytest.raises(ValueError):
        add_business_days(friday, -1)


def test_is_discharge_and_disposition() -> None:
    base = {
        "resourceType": "Encounter",
        "id": "x",
        "status": "finished",
        "class": {"system": ACT, "code": "IMP"},
        "period": {"start": "2025-01-01", "end": "2025-01-03"},
    }
    assert discharge.is_discharge(base)
    for cls in ("EMER", "OBSENC", "ACUTE", "NONAC"):
        assert discharge.is_discharge(base | {"class": {"system": ACT, "code": cls}})
    assert not discharge.is_discharge(base | {"class": {"system": ACT, "code": "AMB"}})
    assert not discharge.is_discharge(base | {"status": "in-progress"})
    assert not discharge.is_discharge(base | {"period": {"start": "2025-01-01"}})

    def plan(system: str, code: str) -> str:
        hosp = {"dischargeDisposition": {"coding": [{"system": system, "code": code}]}}
        return discharge.disposition_plan(base | {"hospitalization": hosp})

    assert plan(DISPO, "home") == "home"
    assert plan(DISPO, "aadvice") == "home"
    assert plan(DISPO, "snf") == "snf"
    assert plan(V2_0112, "03") == "snf"
    assert plan(V2_0112, "06") == "home"
    assert plan("http://www.nubc.org/patient-discharge", "01") == "home"
    assert plan(DISPO, "exp") == "none"
    assert plan(V2_0112, "20") == "none"
    assert discharge.disposition_plan(base) == "home"  # unknown -> home


# ---- plans ----------------------------------------------------------------------------------


def test_home_discharge_applies_transitional_care(store: EmbeddedStore) -> None:
    patient = seed_patient(store)
    home_meds(store, patient)
    enc = encounter(store, patient)
    out = discharge.process_discharge(store, enc, care_manager=CM, now=NOW)
    for r in out:
        validate_resource(r)
    tasks = by_type(out, "Task")
    # one of each TCM Task: the PlanDefinition's own contact/review/visit Tasks were taken over
    tcm = [t for t in tasks if discharge.ID_SYSTEM in str(t.get("identifier"))]
    assert care_task_codes(tcm) == [
        "face-to-face-visit",
        "interactive-contact",
        "medication-review",
        "schedule-appointment",
    ]
    assert care_task_codes(tasks).count("interactive-contact") == 1
    due = {
        t["code"]["coding"][0]["code"]: t["restriction"]["period"]["end"]
        for t in tcm
        if t.get("restriction")
    }
    assert due["interactive-contact"] == "2025-03-04T23:59:59-05:00"  # Friday -> Tuesday
    assert due["medication-review"] == "2025-03-04T23:59:59-05:00"
    # LACE 4 (stay 4 days) and no high-severity issue: moderate -> visit within 14 days
    assert by_type(out, "Observation")[0]["valueInteger"] == 4
    assert not [i for i in by_type(out, "DetectedIssue") if i["severity"] == "high"]
    assert due["face-to-face-visit"] == "2025-03-14T23:59:59-05:00"
    assert {t["priority"] for t in tcm} == {"routine"}
    (plan,) = by_type(out, "CarePlan")
    assert plan["instantiatesCanonical"] == [
        "http://fhircare.org/fhir/PlanDefinition/transitional-care"
    ]
    activity_refs = {a["reference"]["reference"] for a in plan["activity"] if "reference" in a}
    for t in tcm:
        assert f"Task/{t['id']}" in activity_refs
        assert t["focus"]["reference"] == f"CarePlan/{plan['id']}"
        assert t["owner"]["reference"] == CM
        assert t["meta"]["profile"] == [
            "http://fhircare.org/fhir/StructureDefinition/fhircare-task"
        ]
    for ref in activity_refs:  # nothing on the plan points to a Task that was not written
        rtype, rid, _ = parse_local(ref)
        assert store.exists(rtype, rid)
    assert store.get_meta("discharge.e1")["plan"] == "home"


def test_medrec_outputs_resolve_in_store(store: EmbeddedStore) -> None:
    patient = seed_patient(store)
    home_meds(store, patient)
    out = discharge.process_discharge(store, encounter(store, patient), care_manager=CM, now=NOW)
    med = [
        r
        for r in out
        if r["resourceType"] in ("List", "DetectedIssue", "MedicationStatement")
        or (r["resourceType"] == "Task" and "medrec" in str(r.get("identifier")))
    ]
    assert by_type(med, "List") and by_type(med, "DetectedIssue") and by_type(med, "Task")
    for r in med:
        for _, ref in iter_references(r):
            assert not ref["reference"].startswith("urn:"), ref
            local = parse_local(ref["reference"])
            if local and "/_history/" not in ref["reference"]:
                assert store.exists(local[0], local[1]), ref["reference"]
    issue_task = by_type(med, "Task")[0]
    assert issue_task["focus"]["reference"].startswith("DetectedIssue/")


def test_snf_discharge_hands_off(store: EmbeddedStore) -> None:
    patient = seed_patient(store)
    enc = encounter(store, patient, dispo=(V2_0112, "03"))
    out = discharge.process_discharge(store, enc, care_manager=CM, now=NOW)
    for r in out:
        validate_resource(r)
    tasks = by_type(out, "Task")
    assert care_task_codes(tasks, "requested").count("interactive-contact") == 0
    assert "snf-handoff" in care_task_codes(tasks, "requested")
    assert "snf-medication-list" in care_task_codes(tasks, "requested")
    drafts = [t for t in tasks if t["status"] == "draft"]
    assert "interactive-contact" in care_task_codes(drafts)
    assert all("restriction" not in t for t in drafts)
    (plan,) = by_type(out, "CarePlan")
    assert plan["instantiatesCanonical"] == [
        "http://fhircare.org/fhir/PlanDefinition/transitional-care-snf"
    ]
    referrals = by_type(out, "ServiceRequest")
    assert referrals and all(sr["status"] == "draft" for sr in referrals)


def test_expired_writes_nothing_but_the_marker_and_why(store: EmbeddedStore) -> None:
    patient = seed_patient(store)
    home_meds(store, patient)
    enc = encounter(store, patient, dispo=(DISPO, "exp"))
    before = store.count("Task")
    written = discharge.process_discharge(store, enc, care_manager=CM, now=NOW)
    assert [r["resourceType"] for r in written] == ["AuditEvent"]
    assert store.count("Task") == before
    assert store.count("List") == 0
    assert store.get_meta("discharge.e1")["plan"] == "none"
    assert store.get_meta("discharge.e1")["state"] == "no-follow-up"
    assert discharge.find_unprocessed(store) == []


def test_left_against_advice_still_gets_contact(store: EmbeddedStore) -> None:
    patient = seed_patient(store)
    enc = encounter(store, patient, dispo=(DISPO, "aadvice"))
    out = discharge.process_discharge(store, enc, care_manager=CM, now=NOW)
    assert "interactive-contact" in care_task_codes(by_type(out, "Task"), "requested")


def test_high_lace_means_seven_day_visit(store: EmbeddedStore) -> None:
    patient = seed_patient(store)
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    for cid, code in [("chf", "I50.9"), ("copd", "J44.9"), ("ckd", "N18.4")]:
        condition(store, patient, cid, icd, code)  # Charlson 1 + 1 + 2 = 4 -> C 5
    enc = encounter(store, patient, cls="EMER")  # A 3, L 4 (4 days): LACE 12
    out = discharge.process_discharge(store, enc, care_manager=CM, now=NOW)
    (obs,) = by_type(out, "Observation")
    assert obs["valueInteger"] == 12
    assert obs["interpretation"][0]["coding"][0]["code"] == "high-risk"
    visit = next(t for t in by_type(out, "Task") if care_task_codes([t]) == ["face-to-face-visit"])
    assert visit["restriction"]["period"]["end"] == "2025-03-07T23:59:59-05:00"
    assert visit["priority"] == "urgent"
    assert store.get_meta("discharge.e1")["complexity"] == "high"


# ---- idempotency ------------------------------------------------------------------------------


def test_processing_twice_is_once(store: EmbeddedStore) -> None:
    patient = seed_patient(store)
    home_meds(store, patient)
    enc = encounter(store, patient)
    first = discharge.process_discharge(store, enc, care_manager=CM, now=NOW)
    assert first
    seq = store.last_seq
    assert discharge.process_discharge(store, enc, care_manager=CM, now=NOW) == []
    assert store.last_seq == seq


def test_changed_signature_reruns_without_duplicates(store: EmbeddedStore) -> None:
    patient = seed_patient(store)
    home_meds(store, patient)
    enc = encounter(store, patient)
    discharge.process_discharge(store, enc, care_manager=CM, now=NOW)
    tasks_before = store.count("Task")
    plans_before = store.count("CarePlan")
    contact = next(
        t
        for t in store.iter_resources("Task")
        if care_task_codes([t]) == ["interactive-contact"] and t["status"] == "requested"
    )
    worked = dict(contact, status="in-progress")
    put(store, worked)  # a person started working on it
    # A13 (cancel) then A03 again with another time: a new signature
    put(store, dict(enc, status="in-progress"))
    later = encounter(store, patient, end="2025-02-28T18:30:00-05:00")
    discharge.process_discharge(store, later, care_manager=CM, now=NOW)
    assert store.count("Task") == tasks_before
    assert store.count("CarePlan") == plans_before
    assert store.read("Task", contact["id"])["status"] == "in-progress"
    assert store.get_meta("discharge.e1")["signature"] == discharge.signature(later)


def test_existing_careplan_is_revised_with_provenance(store: EmbeddedStore) -> None:
    patient = seed_patient(store)
    plan = apply_plan_definition(
        store, "heart-failure", patient, practitioner_ref=CM, now=datetime(2025, 1, 6, tzinfo=UTC)
    )[0]
    before = plan["activity"]
    enc = encounter(store, patient)
    out = discharge.process_discharge(store, enc, care_manager=CM, now=NOW)
    cp = plan["id"]
    assert [p["id"] for p in by_type(out, "CarePlan")] == [cp]
    revised = store.read("CarePlan", cp)
    assert revised["meta"]["versionId"] == str(int(plan["meta"]["versionId"]) + 1)
    new_tasks = by_type(out, "Task")
    assert new_tasks
    assert revised["activity"] == before + [
        {"reference": {"reference": f"Task/{t['id']}"}} for t in new_tasks
    ]
    (prov,) = [p for p in by_type(out, "Provenance") if "CarePlan" in str(p["target"])]
    assert (
        prov["target"][0]["reference"] == f"CarePlan/{cp}/_history/{revised['meta']['versionId']}"
    )
    assert all(
        t["focus"]["reference"] == f"CarePlan/{cp}"
        for t in new_tasks
        if "transitions" in str(t["identifier"])
    )
    assert store.search("CarePlan", [("patient", patient)]) == [revised]  # no second plan


def test_no_care_manager_leaves_tasks_unassigned(store: EmbeddedStore) -> None:
    put(store, {"resourceType": "Patient", "id": "lonely"})
    enc = encounter(store, "Patient/lonely")
    out = discharge.process_discharge(store, enc, now=NOW)
    tasks = by_type(out, "Task")
    assert tasks and all("owner" not in t for t in tasks)
    assert all(t["requester"] == {"display": "fhircare discharge processing"} for t in tasks)
    assert by_type(out, "CarePlan") == []


# ---- wiring -------------------------------------------------------------------------------------


def test_bus_handler_and_find_unprocessed(store: EmbeddedStore) -> None:
    patient = seed_patient(store)
    enc = encounter(store, patient)
    other = encounter(store, patient, eid="e2", end="2025-02-27T12:00:00-05:00")
    encounter(store, patient, eid="amb", cls="AMB")
    pending = discharge.find_unprocessed(store)
    assert [e["id"] for e in pending] == ["e2", "e1"]
    assert [e["id"] for e in discharge.find_unprocessed(store, since="2025-02-28T00:00:00Z")] == [
        "e1"
    ]
    bus = MessageBus()
    discharge.register(bus, care_manager=CM, clock=lambda: NOW)
    written = bus.publish(store, [enc])
    assert by_type(written, "Task")
    assert not bus.failures
    assert [e["id"] for e in discharge.find_unprocessed(store)] == [other["id"]]
    assert bus.publish(store, [enc]) == []  # replayed event writes nothing


def test_reconcile_encounter_is_idempotent(store: EmbeddedStore) -> None:
    patient = seed_patient(store)
    home_meds(store, patient)
    encounter(store, patient)
    bundle = discharge.reconcile_encounter(store, "e1", now=NOW, base_url="http://x/fhir")
    validate_resource(bundle)
    types = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {"List", "DetectedIssue", "Task", "MedicationStatement"} <= types
    assert bundle["entry"][0]["fullUrl"].startswith("http://x/fhir/")
    seq = store.last_seq
    again = discharge.reconcile_encounter(store, "e1", now=NOW)
    assert store.last_seq == seq
    assert {e["resource"]["id"] for e in again["entry"]} == {
        e["resource"]["id"] for e in bundle["entry"]
    }
    # the full discharge afterwards reuses the same reconciliation outputs
    tasks = store.count("Task")
    lists = store.count("List")
    discharge.process_discharge(store, store.read("Encounter", "e1"), care_manager=CM, now=NOW)
    assert store.count("List") == lists
    issue_tasks = [t for t in store.iter_resources("Task") if "medrec" in str(t.get("identifier"))]
    assert len(issue_tasks) == len(
        [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Task"]
    )
    assert store.count("Task") > tasks

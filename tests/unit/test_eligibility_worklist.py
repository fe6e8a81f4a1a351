"""CCM eligibility, the high-risk flag and the care manager's worklist."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fhircare.care.eligibility import assess_eligibility, matching_condition_keys
from fhircare.care.followup import schedule_followups
from fhircare.care.tasks import transition
from fhircare.care.worklist import worklist
from tests.unit.care_helpers import CM, NOW, condition, make_store, observation, put, seed_patient

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"


@pytest.fixture
def store(tmp_path):
    s = make_store(tmp_path / "db")
    yield s
    s.close()


def test_condition_matching_by_icd10_prefix_and_snomed():
    def cond(system, code):
        return {"code": {"coding": [{"system": system, "code": code}]}}

    assert matching_condition_keys(cond(ICD10, "E11.65")) == {"diabetes"}
    assert matching_condition_keys(cond(ICD10, "I50.9")) == {"heart-failure"}
    assert matching_condition_keys(cond(SCT, "44054006")) == {"diabetes"}
    assert matching_condition_keys(cond(ICD10, "E1165")) == {"diabetes"}  # dots ignored
    assert matching_condition_keys(cond(ICD10, "J06.9")) == set()  # acute URI
    assert matching_condition_keys(cond("http://example.org", "E11.9")) == set()


def test_one_condition_is_not_eligible_two_are(store):
    patient = seed_patient(store)
    condition(store, patient, "c1", ICD10, "E11.9")
    condition(store, patient, "c1b", SCT, "44054006")  # the same condition twice counts once
    result = assess_eligibility(store, patient, now=NOW)
    assert not result.ccm_eligible and not result.high_risk
    assert "2 or more" in result.reasons[0]
    condition(store, patient, "c2", ICD10, "I10")
    result = assess_eligibility(store, patient, now=NOW)
    assert result.ccm_eligible and not result.high_risk
    assert result.chronic_conditions == ["diabetes", "hypertension"]
    assert result.tier == "moderate"


def test_resolved_conditions_do_not_count(store):
    patient = seed_patient(store)
    condition(store, patient, "c1", ICD10, "E11.9")
    condition(
        store,
        patient,
        "c2",
        ICD10,
        "I10",
        clinicalStatus={
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "resolved",
                }
            ]
        },
    )
    assert not assess_eligibility(store, patient, now=NOW).ccm_eligible


@pytest.mark.parametrize("signal", ["three", "discharge", "sdoh", "phq9", "behavioural", "adl"])
def test_each_high_risk_signal(store, signal):
    patient = seed_patient(store)
    condition(store, patient, "c1", ICD10, "E11.9")
    condition(store, patient, "c2", ICD10, "I10")
    expected = {
        "three": "3 chronic conditions",
        "discharge": "discharged 2025-02-20",
        "sdoh": "social need: Food insecurity",
        "phq9": "PHQ-9 total 14",
        "behavioural": "behavioural-health condition: Depression",
        "adl": "ADL dependence (2 activities need help)",
    }[signal]
    if signal == "three":
        condition(store, patient, "c3", ICD10, "N18.3")
    elif signal == "discharge":
        put(
            store,
            {
                "resourceType": "Encounter",
                "id": "e1",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "IMP",
                },
                "subject": {"reference": patient},
                "period": {"start": "2025-02-15", "end": "2025-02-20"},
            },
        )
    elif signal == "sdoh":
        condition(
            store,
            patient,
            "s1",
            SCT,
            "733423003",
            category=[
                {
                    "coding": [
                        {
                            "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-tags",
                            "code": "sdoh",
                        }
                    ]
                }
            ],
            code={"coding": [{"system": SCT, "code": "733423003"}], "text": "Food insecurity"},
        )
    elif signal == "phq9":
        observation(store, patient, "o1", "44261-6", 3, "{score}", "2024-12-01")
        observation(store, patient, "o2", "44261-6", 14, "{score}", "2025-02-01")
    elif signal == "behavioural":
        condition(store, patient, "c3", ICD10, "F33.1")
        expected = "behavioural-health condition: Depression"
    elif signal == "adl":
        put(
            store,
            {
                "resourceType": "Observation",
                "id": "adl",
                "status": "final",
                "code": {
                    "coding": [
                        {
                            "system": "http://fhircare.org/fhir/CodeSystem/care-intake",
                            "code": "adl-dependence",
                        }
                    ]
                },
                "subject": {"reference": patient},
                "effectiveDateTime": "2025-02-01",
                "valueInteger": 2,
            },
        )
    result = assess_eligibility(store, patient, now=NOW)
    assert result.high_risk and result.tier == "high"
    assert any(r.startswith(expected) for r in result.reasons), result.reasons


def test_old_discharge_and_low_phq9_are_not_high_risk(store):
    patient = seed_patient(store)
    put(
        store,
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": patient},
            "period": {"start": "2024-12-01", "end": "2024-12-05"},
        },
    )
    observation(store, patient, "o1", "44261-6", 14, "{score}", "2024-12-01")
    observation(store, patient, "o2", "44261-6", 6, "{score}", "2025-02-01")  # latest counts
    assert not assess_eligibility(store, patient, now=NOW).high_risk


def test_worklist_order_and_reasons(store):
    low = seed_patient(store, "low")
    high = seed_patient(store, "high")
    for cid, code in (("h1", "E11.9"), ("h2", "I10"), ("h3", "I50.9")):
        condition(store, high, cid, ICD10, code)
    start = NOW - timedelta(days=10)
    overdue = schedule_followups(store, low, "high", start=start, count=1, owner=CM)[
        0
    ]  # due NOW-3d
    same_due_low = schedule_followups(store, low, "high", start=NOW, count=1, owner=CM)[0]
    same_due_high = schedule_followups(store, high, "high", start=NOW, count=1, owner=CM)[0]
    later = schedule_followups(store, high, "low", start=NOW, count=1, owner=CM)[0]
    done = schedule_followups(store, high, "high", start=start, count=1, owner=CM)[0]
    transition(store, done["id"], "cancelled")
    other = schedule_followups(
        store, high, "high", start=start, count=1, owner="Practitioner/pcp-1"
    )[0]
    items = worklist(store, CM, now=NOW)
    ids = [i.task_id for i in items]
    assert ids == [overdue["id"], same_due_high["id"], same_due_low["id"], later["id"]]
    assert done["id"] not in ids and other["id"] not in ids
    assert items[0].overdue and items[0].reasons[0] == "overdue since 2025-02-28 (3 days)"
    assert items[1].high_risk and "high-risk patient: 3 chronic conditions" in items[1].reason
    assert "due 2025-03-10 (in 7 days)" in items[2].reason


def test_worklist_includes_care_team_tasks(store):
    from fhircare.care.plans import apply_plan_definition

    patient = seed_patient(store)
    out = apply_plan_definition(store, "hypertension", patient, practitioner_ref=CM, now=NOW)
    team = next(r for r in out if r["resourceType"] == "CareTeam")
    put(
        store,
        {
            "resourceType": "Task",
            "id": "team-task",
            "status": "requested",
            "intent": "order",
            "code": {"text": "Call pharmacy"},
            "for": {"reference": patient},
            "owner": {"reference": f"CareTeam/{team['id']}"},
            "authoredOn": "2025-03-01",
        },
    )
    put(
        store,
        {
            "resourceType": "Task",
            "id": "unassigned",
            "status": "requested",
            "intent": "order",
            "code": {"text": "Unassigned"},
            "for": {"reference": patient},
            "authoredOn": "2025-03-01",
        },
    )
    items = {i.task_id: i for i in worklist(store, CM, now=NOW)}
    assert "assigned to your care team" in items["team-task"].reason
    assert "unassigned task for your patient" in items["unassigned"].reason
    mine = [i for i in items.values() if "assigned to you" in i.reason]
    assert mine  # the plan's care-manager tasks (self-monitoring belongs to the patient)
    assert all(i.patient == patient for i in items.values())
    assert worklist(store, "Practitioner/nobody", now=NOW) == []

"""Care plans from PlanDefinitions, education delivery and plan revisions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fhircare.care.definitions import load_profiles_dir
from fhircare.care.education import record_education_delivered
from fhircare.care.plans import apply_plan_definition
from fhircare.care.revisions import revise_careplan
from fhircare.fhir.errors import NotFound, PreconditionFailed, Unprocessable
from fhircare.fhir.validation import validate_resource
from tests.unit.care_helpers import (
    CM,
    NOW,
    PCP,
    assert_valid,
    condition,
    make_store,
    put,
    seed_patient,
)

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"


@pytest.fixture
def store(tmp_path):
    s = make_store(tmp_path / "db")
    yield s
    s.close()


def by_type(resources, rtype):
    return [r for r in resources if r["resourceType"] == rtype]


def test_every_profile_file_validates_and_plan_definitions_resolve():
    resources = load_profiles_dir()
    for r in resources:
        validate_resource(r)
    ads = {r["url"] for r in resources if r["resourceType"] == "ActivityDefinition"}
    plans = [r for r in resources if r["resourceType"] == "PlanDefinition"]
    assert {p["id"] for p in plans} >= {
        "t2dm",
        "heart-failure",
        "copd",
        "hypertension",
        "depression",
        "social-needs",
        "transitional-care",
        "transitional-care-snf",
    }
    for plan in plans:
        goal_ids = {g["id"] for g in plan.get("goal", [])}
        for action in plan["action"]:
            assert action["definitionCanonical"] in ads
            assert set(action.get("goalId", [])) <= goal_ids


def test_t2dm_plan_is_active_with_measurable_goals(store):
    patient = seed_patient(store)
    condition(store, patient, "dm", ICD10, "E11.9")
    condition(store, patient, "asthma", ICD10, "J45.909")
    out = apply_plan_definition(store, "t2dm", patient, practitioner_ref=CM, now=NOW)
    assert_valid(out)
    plan = out[0]
    assert plan["resourceType"] == "CarePlan" and plan["status"] == "active"
    assert plan["intent"] == "plan"
    assert plan["instantiatesCanonical"] == ["http://fhircare.org/fhir/PlanDefinition/t2dm"]
    codes = {(c["system"], c["code"]) for cat in plan["category"] for c in cat["coding"]}
    assert ("http://hl7.org/fhir/us/core/CodeSystem/careplan-category", "assess-plan") in codes
    assert ("http://fhircare.org/fhir/CodeSystem/program-kind", "long-term") in codes
    assert plan["addresses"] == [{"reference": "Condition/dm"}]  # not the asthma
    assert "end" not in plan["period"]
    goals = {g["identifier"][0]["value"]: g for g in by_type(out, "Goal")}
    hba1c = goals["t2dm/hba1c"]["target"][0]
    assert hba1c["measure"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "4548-4",
        "display": "Hemoglobin A1c/Hemoglobin.total in Blood",
    }
    assert hba1c["detailQuantity"] == {
        "value": 7,
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
        "comparator": "<",
    }
    assert hba1c["dueDate"] == "2025-09-03"  # now + 6 months
    bp = goals["t2dm/bp"]["target"]
    assert [t["measure"]["coding"][0]["code"] for t in bp] == ["8480-6", "8462-4"]
    assert {g["reference"] for g in plan["goal"]} == {f"Goal/{g['id']}" for g in goals.values()}
    # every activity reference resolves to something written in the same commit
    written = {f"{r['resourceType']}/{r['id']}" for r in out}
    for act in plan["activity"]:
        assert ("reference" in act) != ("detail" in act)
        if "reference" in act:
            assert act["reference"]["reference"] in written
    # the referral (dietitian) is a ServiceRequest with a fulfilment Task
    sr = by_type(out, "ServiceRequest")[0]
    assert sr["code"]["coding"][0]["code"] == "103699006"
    fulfil = [
        t
        for t in by_type(out, "Task")
        if t.get("focus", {}).get("reference") == f"ServiceRequest/{sr['id']}"
    ]
    assert len(fulfil) == 1 and fulfil[0]["code"]["coding"][0]["code"] == "fulfill"
    # self-monitoring tasks are the patient's, the others the care manager's, all due-dated
    tasks = by_type(out, "Task")
    owners = {t["description"]: t.get("owner", {}).get("reference") for t in tasks}
    assert owners["Home glucose monitoring"] == patient
    assert owners["HbA1c every 3 months"] == CM
    assert all(t["restriction"]["period"]["end"] > "2025-03-03" for t in tasks)
    # long-term program tasks
    program = {a["id"] for a in plan["activity"] if a["id"].startswith("program-")}
    assert program == {"program-ccm-consent", "program-care-plan-review"}


def test_care_team_roles_and_family_from_patient_contact(store):
    patient = seed_patient(store)
    out = apply_plan_definition(store, "hypertension", patient, practitioner_ref=CM, now=NOW)
    team = by_type(out, "CareTeam")[0]
    roles = {
        p["member"]["reference"]: p["role"][0]["coding"][0]["code"] for p in team["participant"]
    }
    rp = by_type(out, "RelatedPerson")[0]
    assert roles[CM] == "care-manager"
    assert roles[PCP] == "453231000124104"
    assert roles[patient] == "116154003"
    assert roles[f"RelatedPerson/{rp['id']}"] == "133932002"  # "caregiver" in relationship
    assert rp["patient"]["reference"] == patient
    # a second plan reuses the team and does not duplicate the RelatedPerson
    out2 = apply_plan_definition(store, "depression", patient, practitioner_ref=CM, now=NOW)
    assert not by_type(out2, "CareTeam") and not by_type(out2, "RelatedPerson")
    assert out2[0]["careTeam"] == [{"reference": f"CareTeam/{team['id']}"}]


def test_preferences_goals_and_declined_activities(store):
    patient = seed_patient(store)
    out = apply_plan_definition(
        store,
        "t2dm",
        patient,
        practitioner_ref=CM,
        now=NOW,
        preferences={"goals": ["hba1c"], "declined_activities": ["dietitian-referral"]},
    )
    plan = out[0]
    assert [g["identifier"][0]["value"] for g in by_type(out, "Goal")] == ["t2dm/hba1c"]
    ids = [a["id"] for a in plan["activity"]]
    assert "bp-self-monitoring" not in ids  # serves only the unchosen goal
    declined = next(a for a in plan["activity"] if a["id"] == "dietitian-referral")
    assert declined["detail"]["status"] == "cancelled"
    assert declined["detail"]["statusReason"]["text"] == "Declined by patient"
    assert not by_type(out, "ServiceRequest")


def test_episode_program_has_period_end_and_authorisation_tasks(store):
    patient = seed_patient(store)
    end = NOW + timedelta(days=60)
    out = apply_plan_definition(
        store,
        "transitional-care",
        patient,
        practitioner_ref=CM,
        now=NOW,
        program_kind="episode",
        episode_end=end,
    )
    assert_valid(out)
    plan = out[0]
    assert plan["period"]["end"] == "2025-05-02T09:00:00Z"
    codes = {t["code"]["coding"][0]["code"] for t in by_type(out, "Task")}
    assert {"authorization", "utilization-review", "interactive-contact"} <= codes
    contact = next(
        t for t in by_type(out, "Task") if t["code"]["coding"][0]["code"] == "interactive-contact"
    )
    assert contact["restriction"]["period"]["end"] == "2025-03-05T09:00:00Z"  # 2 days
    default = apply_plan_definition(
        store, "transitional-care", patient, practitioner_ref=CM, now=NOW, program_kind="episode"
    )
    assert default[0]["period"]["end"] == "2025-06-01T09:00:00Z"  # 90 days by default


def test_bad_input(store):
    patient = seed_patient(store)
    before = store.last_seq
    with pytest.raises(NotFound):
        apply_plan_definition(store, "no-such-plan", patient, practitioner_ref=CM, now=NOW)
    with pytest.raises(NotFound):
        apply_plan_definition(store, "t2dm", "Patient/nobody", practitioner_ref=CM, now=NOW)
    with pytest.raises(Unprocessable):
        apply_plan_definition(store, "t2dm", "Group/x", practitioner_ref=CM, now=NOW)
    with pytest.raises(Unprocessable) as exc:
        apply_plan_definition(
            store, "t2dm", patient, practitioner_ref=CM, preferences={"goals": ["nope"]}
        )
    assert exc.value.expression == ["preferences.goals"]
    with pytest.raises(Unprocessable):
        apply_plan_definition(store, "t2dm", patient, practitioner_ref=CM, program_kind="forever")
    with pytest.raises(Unprocessable):
        apply_plan_definition(
            store,
            "t2dm",
            patient,
            practitioner_ref=CM,
            now=NOW,
            program_kind="episode",
            episode_end=NOW - timedelta(days=1),
        )
    assert store.last_seq == before  # nothing half-written


def test_education_delivery_completes_activity_with_communication(store):
    patient = seed_patient(store)
    plan = apply_plan_definition(store, "t2dm", patient, practitioner_ref=CM, now=NOW)[0]
    index = next(i for i, a in enumerate(plan["activity"]) if a["id"] == "diabetes-education")
    material = {"title": "NIDDK: Managing Diabetes", "url": "https://www.niddk.nih.gov/"}
    updated, comm = record_education_delivered(store, plan["id"], index, material=material, now=NOW)
    assert_valid([updated, comm])
    act = updated["activity"][index]
    assert act["detail"]["status"] == "completed"
    assert act["outcomeReference"] == [{"reference": f"Communication/{comm['id']}"}]
    assert comm["payload"][0]["contentAttachment"]["url"] == material["url"]
    assert comm["subject"]["reference"] == patient
    with pytest.raises(Unprocessable):  # already completed
        record_education_delivered(store, plan["id"], index, material=material)
    task_index = next(i for i, a in enumerate(plan["activity"]) if "reference" in a)
    with pytest.raises(Unprocessable):  # not an education activity
        record_education_delivered(store, plan["id"], task_index, material="x")
    with pytest.raises(Unprocessable):
        record_education_delivered(store, plan["id"], 99, material="x")


def test_revision_writes_version_and_provenance(store):
    patient = seed_patient(store)
    plan = apply_plan_definition(store, "hypertension", patient, practitioner_ref=CM, now=NOW)[0]
    new, prov = revise_careplan(
        store,
        plan["id"],
        {"title": "Hypertension plan (revised)", "note": [{"text": "agreed with patient"}]},
        author=CM,
        if_match="1",
        now=NOW,
    )
    assert_valid([new, prov])
    assert new["meta"]["versionId"] == "2" and new["title"].endswith("(revised)")
    assert prov["target"] == [{"reference": f"CarePlan/{plan['id']}/_history/2"}]
    assert prov["activity"]["coding"][0]["code"] == "UPDATE"
    assert prov["agent"][0]["who"]["reference"] == CM
    assert store.vread("CarePlan", plan["id"], "1")["title"] == "Hypertension care plan"
    with pytest.raises(PreconditionFailed):  # stale version
        revise_careplan(store, plan["id"], {"title": "x"}, author=CM, if_match="1")
    with pytest.raises(Unprocessable) as exc:
        revise_careplan(
            store, plan["id"], {"subject": {"reference": "Patient/other"}}, author=CM, if_match="2"
        )
    assert exc.value.expression == ["CarePlan.subject"]
    with pytest.raises(Unprocessable):  # invalid result
        revise_careplan(store, plan["id"], {"status": "finished"}, author=CM, if_match="2")


def test_without_a_practitioner_tasks_are_unassigned_and_on_the_care_teams_worklist(store):
    """R4 makes $apply's practitioner optional: the Tasks then have no owner (self-care
    ones stay the patient's), are requested by the patient's care manager, stay valid
    against the fhircare Task profile, and every member of the care team sees them."""
    from fhircare.care.worklist import worklist
    from fhircare.fhir.profiles import check_claimed_profiles

    patient = seed_patient(store)
    out = apply_plan_definition(store, "t2dm", patient, now=NOW)
    assert_valid(out)
    tasks = by_type(out, "Task")
    assert tasks
    for task in tasks:
        check_claimed_profiles(task)  # fta-1: an owner or a requester
        assert task["requester"] == {"reference": PCP}  # the patient's general practitioner
        owner = (task.get("owner") or {}).get("reference")
        assert owner in (None, patient), task["description"]
    unassigned = {t["id"] for t in tasks if "owner" not in t and t["status"] == "requested"}
    assert unassigned
    plan = out[0]
    assert plan["author"] == {"reference": PCP}
    team = store.read("CareTeam", plan["careTeam"][0]["reference"].split("/")[1])
    members = {p["member"]["reference"] for p in team["participant"]}
    assert PCP in members
    listed = {i.task_id: i for i in worklist(store, PCP, now=NOW)}
    assert unassigned <= set(listed)
    assert all("unassigned" in listed[t].reason for t in unassigned)
    assert not worklist(store, CM, now=NOW)  # not on this patient's care team


def test_an_organization_can_be_accountable_and_nobody_is_refused(store):
    patient = seed_patient(store, "p2")
    bare = store.read("Patient", "p2")
    bare.pop("generalPractitioner")
    put(store, bare)
    before = store.last_seq
    with pytest.raises(Unprocessable) as exc:
        apply_plan_definition(store, "t2dm", patient, now=NOW)
    assert exc.value.expression == ["practitioner"]
    assert store.last_seq == before  # nothing written
    put(store, {"resourceType": "Organization", "id": "clinic", "name": "Clinic"})
    out = apply_plan_definition(
        store, "t2dm", patient, organization_ref="Organization/clinic", now=NOW
    )
    assert_valid(out)
    assert out[0]["author"] == {"reference": "Organization/clinic"}
    for task in by_type(out, "Task"):
        assert task["requester"] == {"reference": "Organization/clinic"}
    for goal in by_type(out, "Goal"):
        assert "expressedBy" not in goal  # Goal.expressedBy takes a person, not an Organization
    team = next(r for r in out if r["resourceType"] == "CareTeam")
    assert team["managingOrganization"] == [{"reference": "Organization/clinic"}]

"""The Task state machine, referrals and the advocacy side effect."""

from __future__ import annotations

import pytest

from fhircare.care.common import create_op
from fhircare.care.referrals import build_referral, find_performer
from fhircare.care.tasks import (
    TRANSITIONS,
    check_transition,
    on_task_written,
    register,
    transition,
)
from fhircare.fhir.errors import PreconditionFailed, Unprocessable
from fhircare.services.bus import MessageBus
from fhircare.services.resources import ResourceService
from tests.unit.care_helpers import CM, NOW, assert_valid, make_store, put, seed_patient


@pytest.fixture
def store(tmp_path):
    s = make_store(tmp_path / "db")
    yield s
    s.close()


def make_referral(store, kind="food-bank", *, org=True):
    patient = seed_patient(store)
    if org:
        put(
            store,
            {
                "resourceType": "Organization",
                "id": "pantry",
                "name": "Town Food Pantry",
                "active": True,
                "type": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                "code": "cg",
                            },
                            {
                                "system": "http://fhircare.org/fhir/CodeSystem/referral-kind",
                                "code": "food-bank",
                            },
                        ]
                    }
                ],
            },
        )
    pairs = build_referral(
        patient, kind, reason_refs=[], requester=CM, now=NOW, performer=find_performer(store, kind)
    )
    results = store.commit([create_op(r) for _, r in pairs])
    sr, task = (r.resource for r in results)
    return patient, sr, task


def test_build_referral_pairs(store):
    patient = seed_patient(store)
    pairs = build_referral(
        patient,
        "food-bank",
        reason_refs=["Condition/c1"],
        requester=CM,
        now=NOW,
        performer="Organization/o1",
    )
    (sr_url, sr), (task_url, task) = pairs
    assert sr_url == f"urn:uuid:{sr['id']}" and task_url == f"urn:uuid:{task['id']}"
    assert_valid([sr, task])
    assert sr["code"]["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "467771000124109",
        "display": "Assistance with application for food pantry program",
    }
    assert {c["code"] for c in sr["category"][0]["coding"]} == {"sdoh", "410606002"}
    assert sr["reasonReference"] == [{"reference": "Condition/c1"}]
    assert task["status"] == "requested" and task["intent"] == "order"
    assert task["code"]["coding"][0]["code"] == "fulfill"
    assert task["focus"] == {"reference": f"ServiceRequest/{sr['id']}"}
    assert task["owner"] == {"reference": "Organization/o1"}
    assert task["restriction"]["period"]["end"] == "2025-03-10T09:00:00Z"  # due_days 7
    # a kind without a confirmed standard code carries only our own coding
    (_, housing), _ = build_referral(patient, "housing", requester=CM, now=NOW)
    assert [c["system"] for c in housing["code"]["coding"]] == [
        "http://fhircare.org/fhir/CodeSystem/referral-kind"
    ]
    with pytest.raises(Unprocessable):
        build_referral(patient, "astrology", requester=CM, now=NOW)


def test_find_performer_by_referral_kind(store):
    _, sr, task = make_referral(store)
    assert task["owner"] == {"reference": "Organization/pantry"}
    assert find_performer(store, "housing") is None


def test_happy_path_completes_referral_and_service_request(store):
    _, sr, task = make_referral(store)
    for status in ("received", "accepted", "in-progress"):
        task = transition(store, task["id"], status, now=NOW)
    assert task["executionPeriod"]["start"] == "2025-03-03T09:00:00Z"
    done = transition(
        store,
        task["id"],
        "completed",
        output=[{"type": {"text": "outcome"}, "valueString": "enrolled"}],
        now=NOW,
    )
    assert_valid([done])
    assert done["status"] == "completed" and done["output"][0]["valueString"] == "enrolled"
    assert store.read("ServiceRequest", sr["id"])["status"] == "completed"


def test_illegal_transition_names_from_and_to(store):
    _, _, task = make_referral(store)
    before = store.last_seq
    with pytest.raises(Unprocessable) as exc:
        transition(store, task["id"], "completed", now=NOW)
    assert "'requested'" in exc.value.diagnostics and "'completed'" in exc.value.diagnostics
    assert exc.value.expression == ["Task.status"]
    assert exc.value.outcome()["issue"][0]["code"] == "business-rule"
    with pytest.raises(Unprocessable):
        transition(store, task["id"], "bogus")
    assert store.last_seq == before


def test_terminal_states_are_final_and_if_match_is_checked(store):
    _, _, task = make_referral(store)
    with pytest.raises(PreconditionFailed):
        transition(store, task["id"], "accepted", if_match="7")
    transition(store, task["id"], "cancelled", now=NOW)
    for status in ("requested", "in-progress", "completed"):
        with pytest.raises(Unprocessable):
            transition(store, task["id"], status)
    assert transition(store, task["id"], "entered-in-error")["status"] == "entered-in-error"
    assert all(not TRANSITIONS[s] for s in ("completed", "cancelled", "rejected", "failed"))


def test_rejected_referral_opens_propose_alternative_in_same_commit(store):
    patient, sr, task = make_referral(store)
    seq = store.last_seq
    rejected = transition(store, task["id"], "rejected", reason="No capacity this month", now=NOW)
    assert rejected["statusReason"]["text"] == "No capacity this month"
    alt = store.search("Task", [("focus", f"Task/{task['id']}")])
    assert len(alt) == 1
    assert_valid(alt)
    alt = alt[0]
    assert alt["code"]["coding"][0]["code"] == "propose-alternative"
    assert alt["owner"] == {"reference": CM} and alt["for"] == {"reference": patient}
    assert "No capacity this month" in alt["description"]
    assert store.last_seq == seq + 2  # Task + alternative, one commit
    # the bus handler sees the alternative and writes nothing more (idempotent)
    assert on_task_written(store, store.read("Task", task["id"])) == []


def test_failed_authorisation_opens_alternative_via_bus_handler(store):
    patient = seed_patient(store)
    auth = put(
        store,
        {
            "resourceType": "Task",
            "id": "auth-1",
            "status": "in-progress",
            "intent": "order",
            "code": {
                "coding": [
                    {
                        "system": "http://fhircare.org/fhir/CodeSystem/care-task",
                        "code": "authorization",
                    }
                ]
            },
            "for": {"reference": patient},
            "requester": {"reference": CM},
            "authoredOn": "2025-03-01",
        },
    )
    auth["status"] = "failed"
    auth["statusReason"] = {"text": "Payer denied"}
    written = on_task_written(store, put(store, auth))
    assert [t["code"]["coding"][0]["code"] for t in written] == ["propose-alternative"]
    assert on_task_written(store, store.read("Task", "auth-1")) == []


def test_check_transition_refuses_api_put(store):
    old = {"resourceType": "Task", "status": "completed"}
    with pytest.raises(Unprocessable):
        check_transition(old, {"resourceType": "Task", "status": "in-progress"})
    check_transition(old, {"resourceType": "Task", "status": "completed"})
    check_transition(None, {"resourceType": "Task", "status": "completed"})
    # wired on the bus: a PUT through the resource service is refused
    _, _, task = make_referral(store)
    bus = MessageBus()
    register(bus)
    service = ResourceService(store, bus)
    body = {k: v for k, v in task.items() if k != "meta"}
    body["status"] = "completed"
    with pytest.raises(Unprocessable):
        service.update("Task", task["id"], body)
    body["status"] = "rejected"
    service.update("Task", task["id"], body)
    assert len(store.search("Task", [("focus", f"Task/{task['id']}")])) == 1

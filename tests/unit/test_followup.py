"""Follow-up cadence by risk tier and documenting calls."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fhircare.care.followup import document_call, due_dates, schedule_followups
from fhircare.care.tasks import transition
from fhircare.fhir.errors import NotFound, Unprocessable
from tests.unit.care_helpers import CM, NOW, assert_valid, make_store, seed_patient


@pytest.fixture
def store(tmp_path):
    s = make_store(tmp_path / "db")
    yield s
    s.close()


def test_cadence_by_tier():
    assert [d - NOW for d in due_dates("high", NOW, 3)] == [
        timedelta(weeks=1),
        timedelta(weeks=2),
        timedelta(weeks=3),
    ]
    assert [d.date().isoformat() for d in due_dates("moderate", NOW, 2)] == [
        "2025-03-17",
        "2025-03-31",
    ]
    assert [d.date().isoformat() for d in due_dates("low", NOW)] == [
        "2025-04-03",
        "2025-05-03",
        "2025-06-03",
    ]


def test_schedule_followups_creates_due_dated_tasks(store):
    patient = seed_patient(store)
    tasks = schedule_followups(store, patient, "high", start=NOW, count=3, owner=CM)
    assert_valid(tasks)
    assert [t["restriction"]["period"]["end"] for t in tasks] == [
        "2025-03-10T09:00:00Z",
        "2025-03-17T09:00:00Z",
        "2025-03-24T09:00:00Z",
    ]
    assert all(t["owner"] == {"reference": CM} and t["status"] == "requested" for t in tasks)
    assert len({t["groupIdentifier"]["value"] for t in tasks}) == 1
    assert len(schedule_followups(store, patient, "low", start=NOW, owner=CM)) == 3  # default count


def test_schedule_bad_input(store):
    patient = seed_patient(store)
    with pytest.raises(Unprocessable) as exc:
        schedule_followups(store, patient, "extreme", start=NOW, owner=CM)
    assert exc.value.expression == ["tier"]
    with pytest.raises(NotFound):
        schedule_followups(store, "Patient/ghost", "low", start=NOW, owner=CM)
    with pytest.raises(Unprocessable):
        schedule_followups(store, patient, "low", start=NOW, count=0, owner=CM)


def test_document_call_completes_task_and_writes_communication(store):
    patient = seed_patient(store)
    task = schedule_followups(store, patient, "moderate", start=NOW, count=1, owner=CM)[0]
    seq = store.last_seq
    done, comm = document_call(
        store,
        task["id"],
        summary="Feeling better; BP log reviewed.",
        topics=["blood pressure", "medicines"],
        now=NOW,
    )
    assert store.last_seq == seq + 2
    assert_valid([done, comm])
    assert done["status"] == "completed"
    assert done["output"][0]["valueReference"] == {"reference": f"Communication/{comm['id']}"}
    assert comm["subject"] == {"reference": patient} and comm["sender"] == {"reference": CM}
    assert [p["contentString"] for p in comm["payload"]] == [
        "Feeling better; BP log reviewed.",
        "Topic: blood pressure",
        "Topic: medicines",
    ]
    assert comm["basedOn"] == [{"reference": f"Task/{task['id']}"}]
    with pytest.raises(Unprocessable):  # already completed
        document_call(store, task["id"], summary="again", topics=[])


def test_document_call_refuses_other_tasks_and_closed_ones(store):
    patient = seed_patient(store)
    task = schedule_followups(store, patient, "low", start=NOW, count=1, owner=CM)[0]
    with pytest.raises(Unprocessable):
        document_call(store, task["id"], summary="   ", topics=[])
    transition(store, task["id"], "cancelled")
    with pytest.raises(Unprocessable):
        document_call(store, task["id"], summary="x", topics=[])
    with pytest.raises(NotFound):
        document_call(store, "nope", summary="x", topics=[])

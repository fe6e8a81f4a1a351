"""Da Vinci Unsolicited Notifications through $process-message: good, bad and duplicate."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhircare.fhir.errors import BadRequest, Unprocessable
from fhircare.fhir.validation import validate_resource
from fhircare.services.bus import MessageBus
from fhircare.services.resources import ResourceService
from fhircare.store.embedded import EmbeddedStore
from fhircare.transitions import discharge, notifications
from tests.unit.care_helpers import CM, make_store, put

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
EVENT = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
PAT_URL = "urn:uuid:6f1b1a52-0000-4000-8000-000000000002"
ENC_URL = "urn:uuid:6f1b1a52-0000-4000-8000-000000000003"
MRN = "urn:oid:2.16.840.1.113883.19.5"


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    s = make_store(tmp_path / "data")
    put(s, {"resourceType": "Practitioner", "id": "cm-1"})
    yield s
    s.close()


def message(event: str = "notification-discharge", status: str = "finished") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": "msg-1",
        "type": "message",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0d7e-msg-1"},
        "timestamp": "2025-02-28T16:00:00-05:00",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f1b1a52-0000-4000-8000-000000000001",
                "resource": {
                    "resourceType": "MessageHeader",
                    "id": "mh-1",
                    "eventCoding": {"system": EVENT, "code": event},
                    "source": {"endpoint": "https://hospital.example/fhir"},
                    "focus": [{"reference": ENC_URL}],
                },
            },
            {
                "fullUrl": PAT_URL,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": MRN, "value": "MRN-7"}],
                    "name": [{"family": "Doe", "given": ["Sam"]}],
                },
            },
            {
                "fullUrl": ENC_URL,
                "resource": {
                    "resourceType": "Encounter",
                    "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.6", "value": "V-1"}],
                    "status": status,
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "IMP",
                    },
                    "subject": {"reference": PAT_URL},
                    "period": {
                        "start": "2025-02-24T10:00:00-05:00",
                        "end": "2025-02-28T15:00:00-05:00",
                    },
                },
            },
        ],
    }


def test_discharge_notification_stores_and_processes(store: EmbeddedStore) -> None:
    response = notifications.process_message(store, message(), care_manager=CM, now=NOW)
    validate_resource(response)
    assert response["type"] == "message"
    header = response["entry"][0]["resource"]
    assert header["response"] == {
        "identifier": "mh-1",
        "code": "ok",
        "details": {"reference": response["entry"][1]["fullUrl"]},
    }
    assert header["destination"] == [{"endpoint": "https://hospital.example/fhir"}]
    (patient,) = store.search("Patient", [("identifier", f"{MRN}|MRN-7")])
    (enc,) = store.search("Encounter", [("patient", f"Patient/{patient['id']}")])
    assert enc["subject"]["reference"] == f"Patient/{patient['id']}"  # urn rewritten
    assert store.get_meta(f"discharge.{enc['id']}")["plan"] == "home"
    tasks = store.search("Task", [("patient", f"Patient/{patient['id']}")])
    assert any(t["owner"]["reference"] == CM for t in tasks)


def test_duplicate_message_returns_same_response_without_writing(store: EmbeddedStore) -> None:
    first = notifications.process_message(store, message(), care_manager=CM, now=NOW)
    seq = store.last_seq
    again = notifications.process_message(store, message(), care_manager=CM, now=NOW)
    assert again == first
    assert store.last_seq == seq


def test_resent_content_is_not_rewritten_and_patient_upserted_by_identifier(
    store: EmbeddedStore,
) -> None:
    notifications.process_message(store, message("notification-admit", "in-progress"), now=NOW)
    admit_patients = store.count("Patient")
    second = message()
    second["identifier"]["value"] = "urn:uuid:0d7e-msg-2"
    second["entry"][0]["resource"]["id"] = "mh-2"
    notifications.process_message(store, second, care_manager=CM, now=NOW)
    assert store.count("Patient") == admit_patients  # matched on the MRN, not duplicated
    (enc,) = store.iter_resources("Encounter")
    assert enc["status"] == "finished"
    assert enc["meta"]["versionId"] == "2"  # same Encounter (identifier), updated


def test_admit_notification_does_not_run_discharge(store: EmbeddedStore) -> None:
    response = notifications.process_message(
        store, message("notification-admit", "in-progress"), now=NOW
    )
    assert response["entry"][0]["resource"]["response"]["code"] == "ok"
    assert store.count("Encounter") == 1
    assert store.count("Task") == 0


def test_commit_fn_publishes_on_the_bus(store: EmbeddedStore) -> None:
    bus = MessageBus()
    discharge.register(bus, care_manager=CM, clock=lambda: NOW)
    svc = ResourceService(store, bus)
    notifications.process_message(store, message(), commit_fn=svc.commit_prepared, now=NOW)
    assert not bus.failures
    assert store.count("Task") > 0
    (enc,) = store.iter_resources("Encounter")
    marker = store.get_meta(f"discharge.{enc['id']}")
    assert marker["signature"] == discharge.signature(enc)
    assert discharge.find_unprocessed(store) == []


def _without_focus(m: dict[str, Any]) -> None:
    del m["entry"][0]["resource"]["focus"]


def _focus_elsewhere(m: dict[str, Any]) -> None:
    m["entry"][0]["resource"]["focus"] = [{"reference": "Encounter/not-in-bundle"}]


def _focus_patient(m: dict[str, Any]) -> None:
    m["entry"][0]["resource"]["focus"] = [{"reference": PAT_URL}]


def _unknown_event(m: dict[str, Any]) -> None:
    m["entry"][0]["resource"]["eventCoding"] = {"system": EVENT, "code": "notification-lab"}


def _no_header_id(m: dict[str, Any]) -> None:
    del m["entry"][0]["resource"]["id"]


def _invalid_entry(m: dict[str, Any]) -> None:
    m["entry"][2]["resource"]["status"] = 12


@pytest.mark.parametrize(
    "breaks",
    [
        _without_focus,
        _focus_elsewhere,
        _focus_patient,
        _unknown_event,
        _no_header_id,
        _invalid_entry,
    ],
)
def test_invalid_message_is_422(store: EmbeddedStore, breaks: Any) -> None:
    bad = message()
    breaks(bad)
    seq = store.last_seq
    with pytest.raises(Unprocessable) as exc:
        notifications.process_message(store, bad, now=NOW)
    assert exc.value.status == 422
    assert exc.value.outcome()["resourceType"] == "OperationOutcome"
    assert store.last_seq == seq


def test_malformed_message_is_400(store: EmbeddedStore) -> None:
    not_message = message()
    not_message["type"] = "transaction"
    header_not_first = message()
    header_not_first["entry"].reverse()
    empty = copy.deepcopy(message())
    empty["entry"] = []
    for bad in ([], {"resourceType": "Patient"}, not_message, header_not_first, empty):
        with pytest.raises(BadRequest) as exc:
            notifications.process_message(store, bad, now=NOW)
        assert exc.value.status == 400

"""AuditEvent builder and log redaction."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from fhircare.security.audit import (
    RedactingFilter,
    audit_event,
    export_event,
    redact,
    search_events,
)
from fhircare.security.context import AuthContext
from fhircare.security.scopes import ScopeSet

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def user_ctx() -> AuthContext:
    return AuthContext(
        subject="kc-user-42",
        client_id="care-app",
        scopes=ScopeSet.parse("user/*.rs"),
        fhir_user="Practitioner/dr-1",
    )


def backend_ctx() -> AuthContext:
    return AuthContext(
        subject="sync-svc", client_id="sync-svc", scopes=ScopeSet.parse("system/*.rs")
    )


def test_read_event_is_valid_r4_auditevent():
    event = audit_event(user_ctx(), "R", "CarePlan", "cp-1", "0", patient_ref="Patient/p1", now=NOW)
    AuditEvent.model_validate(event)
    assert event["type"] == {
        "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "code": "rest",
        "display": "RESTful Operation",
    }
    assert event["subtype"][0]["system"] == "http://hl7.org/fhir/restful-interaction"
    assert event["subtype"][0]["code"] == "read"
    assert event["action"] == "R"
    assert event["outcome"] == "0"
    assert event["recorded"] == "2024-05-06T07:08:09.000+00:00"
    what = [e["what"]["reference"] for e in event["entity"]]
    assert what == ["CarePlan/cp-1", "Patient/p1"]
    assert event["entity"][1]["role"]["code"] == "1"  # object-role Patient


def test_user_is_requestor_and_app_is_listed():
    event = audit_event(user_ctx(), "U", "Goal", "g1", "0", now=NOW)
    user, app = event["agent"]
    assert user["who"] == {"reference": "Practitioner/dr-1"}
    assert user["requestor"] is True
    assert user["altId"] == "kc-user-42"
    assert app["who"]["identifier"]["value"] == "care-app"
    assert app["requestor"] is False
    assert event["subtype"][0]["code"] == "update"


def test_backend_client_is_requestor():
    event = audit_event(backend_ctx(), "C", "Task", "t1", "0", now=NOW)
    AuditEvent.model_validate(event)
    (agent,) = event["agent"]
    assert agent["requestor"] is True
    assert agent["who"]["identifier"]["value"] == "sync-svc"
    assert event["subtype"][0]["code"] == "create"


def test_search_event_carries_query_base64():
    q = "patient=Patient/p1&category=laboratory"
    event = audit_event(user_ctx(), "R", "Observation", None, "0", query=q, now=NOW)
    AuditEvent.model_validate(event)
    assert event["subtype"][0]["code"] == "search-type"
    (entity,) = event["entity"]
    assert base64.b64decode(entity["query"]).decode() == q
    assert "name" not in entity  # sev-1: name or query, not both


def test_search_events_equal_one_audit_event_per_patient():
    q = "code=http://loinc.org|8867-4"
    refs = ["Patient/p1", "Patient/p2", "Patient/p3"]
    events = search_events(user_ctx(), "Observation", q, refs, now=NOW)
    expected = [
        audit_event(user_ctx(), "R", "Observation", None, "0", patient_ref=p, query=q, now=NOW)
        for p in refs
    ]
    assert events == expected
    assert [list(e) for e in events] == [list(e) for e in expected]  # same key order
    for event in events:
        AuditEvent.model_validate(event)
    assert search_events(user_ctx(), "Observation", q, [], now=NOW) == []


def test_recorder_queues_one_search_event_per_patient(tmp_path):
    from fhircare.services.audit import AuditRecorder
    from fhircare.store.embedded import EmbeddedStore

    store = EmbeddedStore(tmp_path / "d", fsync=False)
    recorder = AuditRecorder(store, interval=60)
    try:
        found = [
            {"resourceType": "Observation", "subject": {"reference": f"Patient/p{i % 2}"}}
            for i in range(5)
        ] + [{"resourceType": "Medication"}]
        recorder.record_search(user_ctx(), "Observation", "code=x", found)
        recorder.record_search(user_ctx(), "Medication", "code=y", found[-1:])
        assert recorder.flush() == 2
        events = store.search("AuditEvent", [])
        patients = sorted(e["entity"][0]["what"]["reference"] for e in events)
        assert patients == ["Patient/p0", "Patient/p1"]
        assert len({e["id"] for e in events}) == 2
    finally:
        recorder.close()
        store.close()


def test_failure_outcome_and_explicit_interaction():
    event = audit_event(
        user_ctx(),
        "R",
        "CarePlan",
        "cp-1",
        "4",
        now=NOW,
        interaction="vread",
        outcome_desc="forbidden",
    )
    AuditEvent.model_validate(event)
    assert (event["outcome"], event["outcomeDesc"]) == ("4", "forbidden")
    assert event["subtype"][0]["code"] == "vread"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"action": "X"},
        {"outcome_code": "1"},
        {"now": datetime(2024, 1, 1)},  # naive
        {"interaction": "fetch"},
    ],
)
def test_bad_arguments(kwargs):
    args = {"action": "R", "outcome_code": "0", "now": NOW} | kwargs
    with pytest.raises(ValueError):
        audit_event(user_ctx(), args.pop("action"), "Goal", "g", args.pop("outcome_code"), **args)


JOB = "https://ehr.example.org/fhir/bulk/0123abcd"


def test_export_events_are_valid_r4_with_real_codes():
    start = export_event(
        backend_ctx(),
        "kick-off",
        job_url=JOB,
        request_url="https://ehr.example.org/fhir/Group/g1/$export?_type=Patient",
        group_ref="Group/g1",
        now=NOW,
    )
    done = export_event(backend_ctx(), "complete", job_url=JOB, patient_ref="Patient/p1", now=NOW)
    download = export_event(
        backend_ctx(), "download", job_url=JOB, file_url=f"{JOB}/Patient.ndjson", now=NOW
    )
    for event in (start, done, download):
        AuditEvent.model_validate(event)
        assert event["type"] == {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110106",
            "display": "Export",
        }
        [job] = [e for e in event["entity"] if e.get("role", {}).get("code") == "20"]
        assert job["what"]["identifier"]["value"] == JOB  # object-role Job: ties the steps
    assert {"reference": "Group/g1"} in [e.get("what") for e in start["entity"]]
    assert (start["action"], start["subtype"][0]["code"]) == ("E", "operation")
    assert (done["action"], download["action"]) == ("R", "R")
    patient = done["entity"][0]
    assert patient["what"] == {"reference": "Patient/p1"}
    assert patient["lifecycle"] == {
        "system": "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle",
        "code": "10",
        "display": "Export",
    }
    file = download["entity"][-1]
    assert file["what"]["identifier"] == {
        "system": "urn:ietf:rfc:3986",
        "value": f"{JOB}/Patient.ndjson",
    }
    assert file["name"] == "Patient.ndjson" and "query" not in file  # sev-1


def test_export_event_failure_and_bad_arguments():
    failed = export_event(
        backend_ctx(), "complete", job_url=JOB, outcome_code="8", outcome_desc="x", now=NOW
    )
    AuditEvent.model_validate(failed)
    assert (failed["outcome"], failed["outcomeDesc"]) == ("8", "x")
    for kwargs in ({"stage": "begin"}, {"outcome_code": "1"}, {"now": datetime(2024, 1, 1)}):
        args: dict = {"stage": "kick-off", "now": NOW} | kwargs
        with pytest.raises(ValueError):
            export_event(backend_ctx(), args.pop("stage"), job_url=JOB, **args)


def test_redact():
    text = (
        "GET /fhir/Observation?patient=Patient/p1&name=Smith "
        "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln ssn 123-45-6789 "
        "read Patient/p1 token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    )
    out = redact(text)
    for secret in ("Smith", "p1", "eyJ", "123-45-6789"):
        assert secret not in out
    assert "GET /fhir/Observation?[query]" in out
    assert redact("Is it valid? yes") == "Is it valid? yes"


def test_filter_redacts_args_and_keeps_tuple_shape(caplog):
    logger = logging.getLogger("fhircare.test.audit")
    handler = logging.Handler()
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning('%s - "%s %s" %d', "127.0.0.1", "GET", "/fhir/Patient/p1?name=Smith", 200)
        logger.warning("loaded %s", {"resourceType": "Observation", "subject": "Patient/p1"})
        try:
            raise ValueError("bad Patient/p1")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    access, loaded, failed = records
    assert isinstance(access.args, tuple) and access.args[3] == 200
    assert "p1" not in access.getMessage() and "Smith" not in access.getMessage()
    assert "p1" not in loaded.getMessage()
    assert "p1" not in failed.getMessage() and failed.exc_info is None

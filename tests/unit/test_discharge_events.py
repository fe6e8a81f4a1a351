"""Discharge events a clinician can trust: cancels undo what a discharge opened, deaths open
no follow-up, old discharges are skipped, and times are compared at their precision.

Every message and resource here is made for these tests (fictional people and places).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhirpathpy import evaluate
from fhirpathpy.models import models

from fhircare.fhir.validation import validate_resource
from fhircare.services.bus import MessageBus
from fhircare.store.embedded import EmbeddedStore
from fhircare.transitions import discharge, lace
from fhircare.transitions.hl7v2 import Hl7Error, parse_adt
from fhircare.transitions.hl7v2_er7 import parse_ts
from fhircare.transitions.hl7v2_merge import merge_stored
from fhircare.transitions.precision import hl7_span, ordered_end, span
from tests.unit.care_helpers import CM, make_store, put, seed_patient

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DISPO = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
V2_0112 = "http://terminology.hl7.org/CodeSystem/v2-0112"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CARE_TASK = "http://fhircare.org/fhir/CodeSystem/care-task"
NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
START = "2025-02-24T10:00:00-05:00"
END = "2025-02-28T15:00:00-05:00"
# FHIR R4 Period invariant per-1 (the specification's hasValue() is exists() in fhirpathpy).
PER_1 = "start.exists().not() or end.exists().not() or (start <= end)"
OPEN = {"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"}


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    s = make_store(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture
def bus() -> MessageBus:
    b = MessageBus()
    discharge.register(b, care_manager=CM, clock=lambda: NOW)
    return b


def encounter(
    patient: str,
    *,
    eid: str = "e1",
    status: str = "finished",
    end: str | None = END,
    dispo: tuple[str, str] | None = (DISPO, "home"),
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": eid,
        "status": status,
        "class": {"system": ACT, "code": "IMP"},
        "subject": {"reference": patient},
        "period": {"start": START, **({"end": end} if end else {})},
    }
    if dispo:
        body["hospitalization"] = {
            "dischargeDisposition": {"coding": [{"system": dispo[0], "code": dispo[1]}]}
        }
    return body


def home_meds(store: EmbeddedStore, patient: str) -> None:
    """A pre-admission list with one medication the (empty) discharge list leaves out."""
    put(
        store,
        {
            "resourceType": "MedicationRequest",
            "id": "mr-amlo",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {
                "coding": [
                    {"system": RXNORM, "code": "197361", "display": "amlodipine 5 MG Oral Tablet"}
                ]
            },
            "subject": {"reference": patient},
            "authoredOn": "2024-12-01",
        },
    )


def write(store: EmbeddedStore, bus: MessageBus, resource: dict[str, Any]) -> list[dict]:
    """Write a resource and publish it, as the FHIR API and the HL7 intake do."""
    stored = put(store, resource)
    return bus.publish(store, [stored])


def follow_up(store: EmbeddedStore, enc_id: str = "e1") -> list[dict[str, Any]]:
    return [
        t
        for t in store.search("Task", [("encounter", f"Encounter/{enc_id}")])
        if any(i["system"] == discharge.ID_SYSTEM for i in t.get("identifier") or [])
        and "/follow-up/" in t["identifier"][0]["value"]
    ]


def codes(task: dict[str, Any]) -> set[str]:
    return {c["code"] for c in task["code"].get("coding", [])}


def snapshot(store: EmbeddedStore) -> dict[str, str]:
    """Version of every output a discharge writes or changes."""
    return {
        f"{rtype}/{r['id']}": r["meta"]["versionId"]
        for rtype in (
            "Task",
            "List",
            "Observation",
            "DetectedIssue",
            "MedicationStatement",
            "CarePlan",
            "Goal",
            "CareTeam",
            "Provenance",
            "AuditEvent",
        )
        for r in store.iter_resources(rtype)
    }


def reviews(store: EmbeddedStore) -> list[dict[str, Any]]:
    return [t for t in store.iter_resources("Task") if "transition-review" in codes(t)]


# ---- 1. cancels undo what the discharge opened ----------------------------------------------


def test_cancel_discharge_undoes_what_it_opened(store: EmbeddedStore, bus: MessageBus) -> None:
    patient = seed_patient(store)
    home_meds(store, patient)
    write(store, bus, encounter(patient))
    opened = follow_up(store)
    assert len(opened) == 4 and {t["status"] for t in opened} == {"requested"}
    contact = next(t for t in opened if "interactive-contact" in codes(t))
    put(store, dict(contact, status="in-progress"))  # a care manager is on the phone
    (plan,) = store.search("CarePlan", [("patient", patient)])
    (med_list,) = store.search("List", [("encounter", "Encounter/e1")])
    (lace,) = store.search("Observation", [("encounter", "Encounter/e1")])
    issues = store.search("DetectedIssue", [("patient", patient)])
    assert issues

    # A13: the Encounter goes back to in-progress, its admit time kept
    reopened = encounter(patient, status="in-progress", end=None, dispo=None)
    written = write(store, bus, reopened)
    assert written
    for r in written:
        validate_resource(r)

    tasks = {t["id"]: t for t in follow_up(store)}
    assert tasks[contact["id"]]["status"] == "in-progress"  # never silently cancelled
    for tid, task in tasks.items():
        if tid == contact["id"]:
            continue
        assert task["status"] == "cancelled"
        assert "cancelled" in task["statusReason"]["text"].lower()
        assert "discharge" in task["statusReason"]["text"].lower()
    (review,) = reviews(store)
    assert review["status"] == "requested"
    assert review["focus"] == {"reference": f"Task/{contact['id']}"}
    assert review["for"] == {"reference": patient}
    assert review["owner"] == {"reference": CM}
    medrec_tasks = [t for t in store.iter_resources("Task") if "medrec" in str(t.get("identifier"))]
    assert medrec_tasks and {t["status"] for t in medrec_tasks} == {"cancelled"}

    assert store.read("List", med_list["id"])["status"] == "retired"
    assert "cancel" in store.read("List", med_list["id"])["note"][0]["text"].lower()
    assert store.read("Observation", lace["id"])["status"] == "cancelled"
    assert {store.read("DetectedIssue", i["id"])["status"] for i in issues} == {"cancelled"}
    assert store.read("CarePlan", plan["id"])["status"] == "revoked"
    goals = [g for g in store.iter_resources("Goal") if g.get("lifecycleStatus") != "active"]
    assert goals and {g["lifecycleStatus"] for g in goals} == {"cancelled"}
    statements = store.search("MedicationStatement", [("patient", patient)])
    assert statements and {s["status"] for s in statements} == {"entered-in-error"}
    # one Provenance says which versions were withdrawn, and why
    (prov,) = [
        p
        for p in store.iter_resources("Provenance")
        if p["activity"]["coding"][0]["code"] == "MODIFYSTATUS"
    ]
    assert f"List/{med_list['id']}/_history/2" in {t["reference"] for t in prov["target"]}
    assert prov["entity"][0]["what"]["reference"].startswith("Encounter/e1/_history/")

    marker = store.get_meta("discharge.e1")
    assert marker["state"] == "cancelled"
    assert store.read("Encounter", "e1")["period"] == {"start": START}

    # the same cancel again writes nothing
    before = snapshot(store)
    assert write(store, bus, reopened) == []
    assert snapshot(store) == before


def test_a_later_discharge_of_the_same_visit_processes_again(
    store: EmbeddedStore, bus: MessageBus
) -> None:
    patient = seed_patient(store)
    home_meds(store, patient)
    write(store, bus, encounter(patient))
    first = {t["id"] for t in follow_up(store)}
    contact = next(t for t in follow_up(store) if "interactive-contact" in codes(t))
    put(store, dict(contact, status="in-progress"))
    write(store, bus, encounter(patient, status="in-progress", end=None, dispo=None))
    write(store, bus, encounter(patient))  # the A03 again, same time and disposition

    now_open = [t for t in follow_up(store) if t["status"] in OPEN]
    # one open Task per follow-up kind: the one a person was working on is kept, not doubled
    assert sorted(c for t in now_open for c in codes(t)) == [
        "face-to-face-visit",
        "interactive-contact",
        "medication-review",
        "schedule-appointment",
    ]
    assert contact["id"] in {t["id"] for t in now_open}
    assert {t["id"] for t in now_open} - first  # new Tasks, the cancelled ones stay cancelled
    assert {t["status"] for t in follow_up(store) if t["id"] in first} <= {
        "cancelled",
        "in-progress",
    }
    lists = store.search("List", [("encounter", "Encounter/e1")])
    assert sorted(x["status"] for x in lists) == ["current", "retired"]
    active_plans = store.search("CarePlan", [("patient", patient), ("status", "active")])
    assert len(active_plans) == 1
    assert store.get_meta("discharge.e1")["state"] == "open"
    assert discharge.find_unprocessed(store) == []


def test_cancel_admit_after_discharge_undoes_it_too(store: EmbeddedStore, bus: MessageBus) -> None:
    patient = seed_patient(store)
    write(store, bus, encounter(patient))
    write(store, bus, encounter(patient, status="cancelled", dispo=None))  # A11
    assert {t["status"] for t in follow_up(store)} == {"cancelled"}
    assert store.get_meta("discharge.e1")["state"] == "cancelled"


def test_completed_task_is_flagged_not_cancelled(store: EmbeddedStore, bus: MessageBus) -> None:
    patient = seed_patient(store)
    write(store, bus, encounter(patient))
    review = next(t for t in follow_up(store) if "medication-review" in codes(t))
    put(store, dict(review, status="completed"))
    write(store, bus, encounter(patient, status="in-progress", end=None, dispo=None))
    assert store.read("Task", review["id"])["status"] == "completed"
    (flag,) = reviews(store)
    assert flag["focus"]["reference"] == f"Task/{review['id']}"


def test_a_reopened_encounter_found_by_the_sweep(store: EmbeddedStore, bus: MessageBus) -> None:
    """A sync pull writes without the bus: the sweep finds the reopened stay and undoes it."""
    patient = seed_patient(store)
    write(store, bus, encounter(patient))
    put(store, encounter(patient, status="in-progress", end=None, dispo=None))
    assert [e["id"] for e in discharge.find_reopened(store)] == ["e1"]
    discharge.undo_discharge(store, store.read("Encounter", "e1"), now=NOW)
    assert {t["status"] for t in follow_up(store)} == {"cancelled"}
    assert discharge.find_reopened(store) == []


def test_a_discharge_processed_before_markers_listed_outputs_is_undone_too(
    store: EmbeddedStore, bus: MessageBus
) -> None:
    """Markers written by earlier versions have no state and no list of what was opened."""
    patient = seed_patient(store)
    home_meds(store, patient)
    write(store, bus, encounter(patient))
    marker = store.get_meta("discharge.e1")
    legacy = {k: marker[k] for k in ("signature", "processed", "plan", "lace", "complexity")}
    store.set_meta("discharge.e1", legacy)
    write(store, bus, encounter(patient, status="in-progress", end=None, dispo=None))
    assert {t["status"] for t in follow_up(store)} == {"cancelled"}
    (med_list,) = store.search("List", [("encounter", "Encounter/e1")])
    assert med_list["status"] == "retired"
    assert not store.search("CarePlan", [("patient", patient), ("status", "active")])


def test_the_serve_sweep_processes_missed_discharges_and_undoes_reopened_ones(
    tmp_path: Path,
) -> None:
    from fhircare.bootstrap import build_container
    from fhircare.config import Settings
    from fhircare.services.background import process_missed_discharges

    container = build_container(Settings(data=tmp_path / "c", care_manager=CM))
    try:
        store = container.store
        patient = seed_patient(store)
        recent = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        stay = encounter(patient, end=recent.isoformat())
        put(store, stay)  # as a pull writes it: no bus
        assert process_missed_discharges(container) == 1
        assert {t["status"] for t in follow_up(store)} == {"requested"}
        put(store, dict(stay, status="in-progress", period={"start": START}))
        assert process_missed_discharges(container) == 1
        assert {t["status"] for t in follow_up(store)} == {"cancelled"}
        assert process_missed_discharges(container) == 0
    finally:
        container.close()


# ---- 2. deaths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dispo",
    [(DISPO, "exp"), (V2_0112, "20"), (V2_0112, "41")],
)
def test_death_disposition_opens_no_follow_up_and_says_why(
    store: EmbeddedStore, bus: MessageBus, dispo: tuple[str, str]
) -> None:
    patient = seed_patient(store)
    home_meds(store, patient)
    written = write(store, bus, encounter(patient, dispo=dispo))
    assert store.count("Task") == 0
    assert store.count("List") == 0
    marker = store.get_meta("discharge.e1")
    assert marker["state"] == "no-follow-up"
    assert marker["reason"]["code"] == "deceased"
    (event,) = [r for r in written if r["resourceType"] == "AuditEvent"]
    validate_resource(event)
    assert "deceased" in event["outcomeDesc"] or "died" in event["outcomeDesc"]
    assert {"reference": "Encounter/e1"} in [e["what"] for e in event["entity"]]


@pytest.mark.parametrize(
    "deceased", [{"deceasedBoolean": True}, {"deceasedDateTime": "2025-02-28T14:30:00-05:00"}]
)
def test_recorded_death_opens_no_follow_up(
    store: EmbeddedStore, bus: MessageBus, deceased: dict[str, Any]
) -> None:
    patient = seed_patient(store)
    put(store, {**store.read("Patient", "p1"), **deceased})
    write(store, bus, encounter(patient))
    assert store.count("Task") == 0
    assert store.get_meta("discharge.e1")["reason"]["code"] == "deceased"


def test_death_after_processing_cancels_open_follow_up(
    store: EmbeddedStore, bus: MessageBus
) -> None:
    patient = seed_patient(store)
    write(store, bus, encounter(patient))
    contact = next(t for t in follow_up(store) if "interactive-contact" in codes(t))
    put(store, dict(contact, status="in-progress"))
    died = {**store.read("Patient", "p1"), "deceasedDateTime": "2025-03-02T06:00:00Z"}
    died.pop("meta")
    write(store, bus, died)
    for task in follow_up(store):
        if task["id"] == contact["id"]:
            assert task["status"] == "in-progress"
            continue
        assert task["status"] == "cancelled"
        assert "died" in task["statusReason"]["text"].lower()
    (flag,) = reviews(store)
    assert flag["focus"]["reference"] == f"Task/{contact['id']}"
    assert not [p for p in store.iter_resources("CarePlan") if p["status"] == "active"]
    # the reconciliation stays a valid record: the patient's death does not retract it
    assert {x["status"] for x in store.iter_resources("List")} == {"current"}
    before = snapshot(store)
    write(store, bus, dict(died, gender="female"))
    assert snapshot(store) == before


def test_death_discharge_cancels_an_earlier_discharge_follow_up(
    store: EmbeddedStore, bus: MessageBus
) -> None:
    patient = seed_patient(store)
    write(store, bus, encounter(patient, eid="first"))
    assert {t["status"] for t in follow_up(store, "first")} == {"requested"}
    later = encounter(patient, eid="second", dispo=(V2_0112, "20"))
    write(store, bus, later)
    assert {t["status"] for t in follow_up(store, "first")} == {"cancelled"}
    assert follow_up(store, "second") == []


def test_death_disposition_of_a_processed_visit_closes_its_follow_up(
    store: EmbeddedStore, bus: MessageBus
) -> None:
    patient = seed_patient(store)
    write(store, bus, encounter(patient))
    assert {t["status"] for t in follow_up(store)} == {"requested"}
    write(store, bus, encounter(patient, dispo=(DISPO, "exp")))  # the same visit: the patient died
    assert {t["status"] for t in follow_up(store)} == {"cancelled"}
    marker = store.get_meta("discharge.e1")
    assert marker["state"] == "no-follow-up"
    assert {t["id"] for t in follow_up(store)} <= {r.split("/")[1] for r in marker["opened"]}


def test_discharge_corrected_after_a_death_disposition_opens_follow_up(
    store: EmbeddedStore, bus: MessageBus
) -> None:
    patient = seed_patient(store)
    write(store, bus, encounter(patient, dispo=(DISPO, "exp")))
    assert follow_up(store) == []
    write(store, bus, encounter(patient))  # the disposition corrected to home
    assert bus.failure_count == 0
    assert {t["status"] for t in follow_up(store)} == {"requested"}
    assert store.get_meta("discharge.e1")["state"] == "open"


def test_discharge_corrected_after_death_closed_its_follow_up_opens_new_follow_up(
    store: EmbeddedStore, bus: MessageBus
) -> None:
    """home, then dead (the follow-up is cancelled), then home again (the death was an
    error): the living patient gets open follow-up again, in a new episode."""
    patient = seed_patient(store)
    write(store, bus, encounter(patient))
    first = {t["id"] for t in follow_up(store)}
    write(store, bus, encounter(patient, dispo=(DISPO, "exp")))
    assert {t["status"] for t in follow_up(store)} == {"cancelled"}
    write(store, bus, encounter(patient))  # the disposition corrected to home
    assert bus.failure_count == 0
    tasks = follow_up(store)
    live = {t["id"] for t in tasks if t["status"] == "requested"}
    assert live and not live & first
    assert {t["status"] for t in tasks if t["id"] in first} == {"cancelled"}
    marker = store.get_meta("discharge.e1")
    assert marker["state"] == "open" and marker["episode"] == 2


# ---- 3. history loads ----------------------------------------------------------------------


def test_old_discharge_is_skipped_with_the_reason(store: EmbeddedStore) -> None:
    patient = seed_patient(store)
    old = put(store, encounter(patient, end="1983-01-09T10:00:00Z"))
    written = discharge.process_discharge(store, old, care_manager=CM, now=NOW)
    assert store.count("Task") == 0
    assert store.count("List") == 0
    marker = store.get_meta("discharge.e1")
    assert marker["state"] == "no-follow-up"
    assert marker["reason"]["code"] == "outside-window"
    assert "30" in marker["reason"]["text"]
    assert [r["resourceType"] for r in written] == ["AuditEvent"]
    assert discharge.find_unprocessed(store) == []


@pytest.mark.parametrize(
    ("end", "window", "opens"),
    [
        ((NOW - timedelta(days=29)).isoformat(), None, True),
        ((NOW - timedelta(days=31)).isoformat(), None, False),
        ((NOW - timedelta(days=31)).isoformat(), 60, True),
        # a date without a time is the whole day: the last day of the window still counts
        ((NOW - timedelta(days=30)).date().isoformat(), None, True),
        ((NOW - timedelta(days=32)).date().isoformat(), None, False),
    ],
)
def test_follow_up_window(store: EmbeddedStore, end: str, window: int | None, opens: bool) -> None:
    patient = seed_patient(store)
    enc = encounter(patient, end=end)
    enc["period"]["start"] = "2025-01-01" if len(end) == 10 else "2025-01-01T00:00:00Z"
    put(store, enc)
    discharge.process_discharge(store, enc, care_manager=CM, now=NOW, window_days=window)
    assert bool(follow_up(store)) is opens


# ---- 4. times at the precision given -------------------------------------------------------


def pv1(fields: dict[int, str]) -> str:
    top = max(fields)
    return "PV1|" + "|".join(fields.get(n, "") for n in range(1, top + 1))


def adt(event: str, pv1_fields: dict[int, str], pid_extra: str = "", control: str = "C1") -> str:
    return (
        "\r".join(
            [
                f"MSH|^~\\&|PAS|RIVERSIDE|FHIRCARE|CM|20250228150100||ADT^{event}|{control}|P|2.4",
                f"EVN|{event}|20250228150100",
                f"PID|1||R100^^^RIVERSIDE^MR||Okafor^Ada||19440101|F{pid_extra}",
                pv1({1: "1", 2: "I", 19: "V100^^^RIVERSIDE^VN", **pv1_fields}),
            ]
        )
        + "\r"
    )


def test_minute_precision_end_in_the_admit_minute_keeps_a_valid_period() -> None:
    msg = adt("A03", {36: "01", 44: "20250228100052", 45: "202502281000"})
    enc = parse_adt(msg).encounter
    assert enc["period"]["start"] == "2025-02-28T10:00:52+00:00"
    assert evaluate(enc, f"Encounter.period.select({PER_1})", [], models["r4"]) == [True]
    assert enc["period"]["end"] == enc["period"]["start"]  # inside the given minute
    assert enc["status"] == "finished"


def test_end_wholly_before_start_is_still_refused() -> None:
    with pytest.raises(Hl7Error):
        parse_adt(adt("A03", {44: "20250228100052", 45: "202502280959"}))


def test_precision_spans() -> None:
    minute = hl7_span(parse_ts("202502281000"))
    second = span("2025-02-28T10:00:52+00:00")
    assert not minute.wholly_before(second)
    assert ordered_end(
        "2025-02-28T10:00:52+00:00", second, "2025-02-28T10:00:00+00:00", minute
    ) == ("2025-02-28T10:00:52+00:00")
    assert (
        ordered_end(
            "2025-02-28T10:00:52+00:00",
            second,
            "2025-02-28T09:59:00+00:00",
            hl7_span(parse_ts("202502280959")),
        )
        is None
    )
    day = span("2025-02-28")  # no zone: any zone's 28 February
    assert day.lo <= datetime(2025, 2, 28, 0, 0, tzinfo=UTC) - timedelta(hours=12)
    assert day.hi >= datetime(2025, 3, 1, 0, 0, tzinfo=UTC) + timedelta(hours=10)
    assert ordered_end("2025-02-28", day, "2025-02-28T09:00:00Z", span("2025-02-28T09:00:00Z"))


def test_length_of_stay_counts_a_date_as_the_date_it_says() -> None:
    stay = {"period": {"start": "2025-02-24", "end": "2025-02-28T15:00:00-05:00"}}
    assert lace.length_of_stay_days(stay) == 4  # not 5: the date is not moved to UTC first


def test_emergency_visit_ending_the_day_before_at_day_precision_led_to_the_admission() -> None:
    admission = {
        "id": "adm",
        "class": {"system": ACT, "code": "IMP"},
        "period": {"start": "2025-02-24T08:00:00+00:00", "end": END},
    }
    ed = {
        "id": "ed",
        "status": "finished",
        "class": {"system": ACT, "code": "EMER"},
        "period": {"start": "2025-02-23", "end": "2025-02-23"},  # dates only: could be 23:59
    }
    assert lace.preceding_emergency(admission, [admission, ed]) == ed
    earlier = dict(ed, period={"start": "2025-02-20", "end": "2025-02-21"})
    assert lace.preceding_emergency(admission, [admission, earlier]) is None


# ---- the HL7 v2 edge: what the stored Encounter and Patient keep ---------------------------


def stored_encounter(status: str, period: dict[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": "enc-1",
        "meta": {"versionId": "3"},
        "status": status,
        "class": {"system": ACT, "code": "IMP"},
        "period": period,
        "hospitalization": {
            "dischargeDisposition": {"coding": [{"system": DISPO, "code": "home"}]}
        },
    }


def test_cancel_without_admit_time_keeps_the_stored_admit_time() -> None:
    msg = adt("A13", {})  # as some feeds send it: no PV1-44, no PV1-45
    stored = stored_encounter("finished", {"start": "2025-02-24T10:00:52+00:00", "end": END})
    merged = merge_stored(parse_adt(msg), None, stored)
    assert merged.encounter["status"] == "in-progress"
    assert merged.encounter["period"] == {"start": "2025-02-24T10:00:52+00:00"}
    assert "dischargeDisposition" not in merged.encounter.get("hospitalization", {})


def test_discharge_without_admit_time_is_checked_against_the_stored_one() -> None:
    stored = stored_encounter("in-progress", {"start": "2025-02-28T10:00:52+00:00"})
    merged = merge_stored(parse_adt(adt("A03", {36: "01", 45: "202502281000"})), None, stored)
    period = merged.encounter["period"]
    assert period["start"] == "2025-02-28T10:00:52+00:00"
    assert period["end"] == period["start"]
    with pytest.raises(Hl7Error):
        merge_stored(parse_adt(adt("A03", {36: "01", 45: "202502270900"})), None, stored)


def test_an_update_without_discharge_time_does_not_reopen_a_discharge() -> None:
    stored = stored_encounter("finished", {"start": START, "end": END})
    merged = merge_stored(parse_adt(adt("A08", {44: "202502241000"})), None, stored)
    assert merged.encounter["status"] == "finished"
    assert merged.encounter["period"]["end"] == END
    assert merged.encounter["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == (
        "home"
    )
    assert any("A13" in w for w in merged.warnings)


def test_a_recorded_death_is_kept_when_a_message_does_not_mention_it() -> None:
    patient = {"resourceType": "Patient", "id": "p", "deceasedDateTime": "2025-02-28"}
    merged = merge_stored(parse_adt(adt("A08", {}, "|" * 22 + "N")), patient, None)
    assert merged.patient["deceasedDateTime"] == "2025-02-28"
    assert any("PID-30" in w for w in merged.warnings)


def test_local_dead_disposition_maps_to_expired() -> None:
    enc = parse_adt(adt("A03", {36: "Dead", 44: "202502241000", 45: "202502281000"})).encounter
    codings = enc["hospitalization"]["dischargeDisposition"]["coding"]
    assert {"system": DISPO, "code": "exp", "display": "Expired"} in codings
    assert discharge.disposition_plan(enc) == "none"


def test_death_indicator_and_date_reach_the_patient() -> None:
    with_date = parse_adt(adt("A03", {36: "01"}, "|" * 21 + "202502281430|Y")).patient
    assert with_date["deceasedDateTime"] == "2025-02-28T14:30:00+00:00"
    flag_only = parse_adt(adt("A03", {36: "01"}, "|" * 22 + "Y")).patient
    assert flag_only["deceasedBoolean"] is True


def test_a_discharge_that_opens_no_follow_up_is_counted_as_such(store: EmbeddedStore) -> None:
    """The discharge metric tells operators apart: follow-up opened, none (death or outside
    the window, with its AuditEvent), nothing to do (already processed)."""
    from fhircare.observability import metrics

    def count(outcome: str) -> float:
        return metrics.DISCHARGES.labels(outcome)._value.get()

    before = {o: count(o) for o in ("processed", "no-follow-up", "skipped")}
    patient = seed_patient(store)
    old = put(store, encounter(patient, end="1983-01-09T10:00:00Z"))
    discharge.process_discharge(store, old, care_manager=CM, now=NOW)
    discharge.process_discharge(store, old, care_manager=CM, now=NOW)
    assert count("no-follow-up") == before["no-follow-up"] + 1
    assert count("skipped") == before["skipped"] + 1
    assert count("processed") == before["processed"]

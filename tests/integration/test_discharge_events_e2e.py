"""Discharge events end to end, as a hospital feed and FHIR clients meet them: a real
`fhircare serve` on loopback, HL7 v2 through `POST /hl7v2` and over MLLP (`fhircare mllp`),
FHIR through `/fhir`, and what the store holds afterwards.

The messages are written for these tests (fictional people), shaped like a public hospital
feed's: an A13 without admit or discharge time, PV1-36 "Dead", minute-precision PV1-45.
Times are relative to now, so the discharges fall inside the follow-up window.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhirpathpy import evaluate
from fhirpathpy.models import models

from fhircare.store.embedded import EmbeddedStore
from fhircare.transitions.mllp import MllpDecoder, frame
from tests.conftest import ServerProcess, free_port
from tests.integration.test_hl7_mllp_e2e import wait_port

CARE_TASK = "http://fhircare.org/fhir/CodeSystem/care-task"
TCM = ["face-to-face-visit", "interactive-contact", "medication-review", "schedule-appointment"]
OPEN = {"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"}
PER_1 = "start.exists().not() or end.exists().not() or (start <= end)"

NOW = datetime.now(UTC).replace(microsecond=0)
ADMIT = (NOW - timedelta(days=4, hours=3)).replace(second=52)  # to the second, as an A01 sends it
DISCHARGE = NOW - timedelta(hours=2)


def ts(moment: datetime, precision: str = "second") -> str:
    return moment.strftime("%Y%m%d%H%M%S" if precision == "second" else "%Y%m%d%H%M")


def fhir_ts(moment: datetime) -> str:
    return moment.isoformat()


def pv1(fields: dict[int, str]) -> str:
    return "PV1|" + "|".join(fields.get(n, "") for n in range(1, max(fields) + 1))


def adt(event: str, mrn: str, visit: str, pv1_fields: dict[int, str], pid_tail: str = "") -> bytes:
    control = uuid.uuid4().hex[:16]
    return (
        "\r".join(
            [
                f"MSH|^~\\&|PAS|RIVERSIDE|FHIRCARE|CM|{ts(NOW)}||ADT^{event}|{control}|P|2.4",
                f"EVN|{event}|{ts(NOW)}",
                f"PID|1||{mrn}^^^RIVERSIDE^MR||Testperson^Sam||19440101|F{pid_tail}",
                pv1({1: "1", 2: "I", 3: "W2^12^B", 19: f"{visit}^^^RIVERSIDE^VN", **pv1_fields}),
            ]
        )
        + "\r"
    ).encode()


def admitted(when: datetime = ADMIT) -> dict[int, str]:
    return {44: ts(when)}


def discharged(dispo: str = "01", end: str | None = None) -> dict[int, str]:
    return {36: dispo, 44: ts(ADMIT), 45: end or ts(DISCHARGE, "minute")}


CARE_MANAGER = "Practitioner/cm-e2e"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("discharge-events")
    server = ServerProcess(data, env={"FHIRCARE_CARE_MANAGER": CARE_MANAGER}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(srv: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.base, timeout=60) as client:
        put(client, {"resourceType": "Practitioner", "id": "cm-e2e", "name": [{"family": "Cm"}]})
        yield client


def send(srv: ServerProcess, message: bytes) -> str:
    r = httpx.post(
        f"http://127.0.0.1:{srv.port}/hl7v2",
        content=message,
        headers={"Content-Type": "x-application/hl7-v2+er7"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.text


def msa(ack: str) -> list[str]:
    line = next(seg for seg in ack.split("\r") if seg.startswith("MSA"))
    return line.split("|")


def search(api: httpx.Client, rtype: str, **params: str) -> list[dict[str, Any]]:
    r = api.get(f"/{rtype}", params={**params, "_count": "500"})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]


def visit(api: httpx.Client, visit_number: str) -> dict[str, Any]:
    (enc,) = search(
        api, "Encounter", identifier=f"http://fhircare.org/fhir/sid/hl7v2/RIVERSIDE|{visit_number}"
    )
    return enc


def codes(task: dict[str, Any]) -> list[str]:
    return [c["code"] for c in task["code"].get("coding", []) if c["system"] == CARE_TASK]


def follow_up(api: httpx.Client, enc_id: str) -> list[dict[str, Any]]:
    return [
        t
        for t in search(api, "Task", encounter=f"Encounter/{enc_id}")
        if "/follow-up/" in t.get("identifier", [{}])[0].get("value", "")
    ]


def put(api: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    r = api.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text
    return r.json()


def start_work(api: httpx.Client, task: dict[str, Any]) -> dict[str, Any]:
    """A care manager accepts the Task and starts on it (the FHIR Task state machine)."""
    accepted = put(api, {**task, "status": "accepted"})
    return put(api, {**accepted, "status": "in-progress"})


def versions(api: httpx.Client, patient_ref: str) -> dict[str, str]:
    """Version of every Task, List, Observation, CarePlan of the patient, and Provenance."""
    out = {}
    for rtype in ("Task", "List", "Observation", "CarePlan", "Provenance"):
        params = {} if rtype == "Provenance" else {"patient": patient_ref}
        for r in search(api, rtype, **params):
            out[f"{rtype}/{r['id']}"] = r["meta"]["versionId"]
    return out


def decisions(api: httpx.Client, enc_id: str) -> list[dict[str, Any]]:
    """The AuditEvents that record a discharge decision (not the access audit)."""
    found = search(api, "AuditEvent", entity=f"Encounter/{enc_id}")
    return [e for e in found if e["type"]["code"] == "110100"]


# ---- cancels --------------------------------------------------------------------------------


def test_a13_after_a03_over_http_undoes_the_follow_up(
    srv: ServerProcess, api: httpx.Client
) -> None:
    assert msa(send(srv, adt("A01", "C1", "V-C1", admitted())))[1] == "AA"
    ack = send(srv, adt("A03", "C1", "V-C1", discharged()))
    assert msa(ack)[1] == "AA" and "follow-up opened" in msa(ack)[3]
    enc = visit(api, "V-C1")
    tasks = follow_up(api, enc["id"])
    assert sorted(c for t in tasks for c in codes(t)) == TCM
    contact = start_work(api, next(t for t in tasks if codes(t) == ["interactive-contact"]))

    # A13 as some feeds send it: no PV1-44, no PV1-45
    ack = send(srv, adt("A13", "C1", "V-C1", {36: ""}))
    assert msa(ack)[1] == "AA" and "Discharge cancelled" in msa(ack)[3]
    enc = visit(api, "V-C1")
    assert enc["status"] == "in-progress"
    assert enc["period"] == {"start": fhir_ts(ADMIT)}  # the admit time is kept
    by_id = {t["id"]: t for t in follow_up(api, enc["id"])}
    assert by_id[contact["id"]]["status"] == "in-progress"
    for tid, task in by_id.items():
        if tid != contact["id"]:
            assert task["status"] == "cancelled"
            assert "discharge" in task["statusReason"]["text"]
    (review,) = [
        t
        for t in search(api, "Task", focus=f"Task/{contact['id']}")
        if "transition-review" in codes(t)
    ]
    assert review["status"] == "requested"
    (med_list,) = search(api, "List", encounter=f"Encounter/{enc['id']}")
    assert med_list["status"] == "retired"
    patient_ref = enc["subject"]["reference"]
    assert not search(api, "CarePlan", patient=patient_ref, status="active")

    # the cancel again: nothing changes
    before = versions(api, patient_ref)
    assert msa(send(srv, adt("A13", "C1", "V-C1", {36: ""})))[1] == "AA"
    assert versions(api, patient_ref) == before

    # the discharge again: processed again, new Tasks, the one in progress not doubled
    assert msa(send(srv, adt("A03", "C1", "V-C1", discharged())))[1] == "AA"
    now_open = [t for t in follow_up(api, enc["id"]) if t["status"] in OPEN]
    assert sorted(c for t in now_open for c in codes(t)) == TCM
    assert contact["id"] in {t["id"] for t in now_open}
    lists = search(api, "List", encounter=f"Encounter/{enc['id']}")
    assert sorted(x["status"] for x in lists) == ["current", "retired"]
    assert len(search(api, "CarePlan", patient=patient_ref, status="active")) == 1


def test_put_back_to_in_progress_through_fhir_undoes_it(api: httpx.Client) -> None:
    pid, eid = f"p-{uuid.uuid4().hex[:8]}", f"e-{uuid.uuid4().hex[:8]}"
    put(api, {"resourceType": "Patient", "id": pid, "name": [{"family": "Fhirclient"}]})
    enc = {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": fhir_ts(ADMIT), "end": fhir_ts(DISCHARGE)},
    }
    put(api, enc)
    assert {t["status"] for t in follow_up(api, eid)} == {"requested"}
    put(api, {**enc, "status": "in-progress", "period": {"start": fhir_ts(ADMIT)}})
    tasks = follow_up(api, eid)
    assert len(tasks) == 4 and {t["status"] for t in tasks} == {"cancelled"}
    assert all(t["statusReason"]["text"] for t in tasks)
    (med_list,) = search(api, "List", encounter=f"Encounter/{eid}")
    assert med_list["status"] == "retired"


def test_hapi_notification_of_a_reopened_stay_undoes_it(
    srv: ServerProcess, api: httpx.Client
) -> None:
    """A rest-hook delivery (`PUT /events/hapi/...`) of the Encounter back in progress."""
    pid, eid = f"p-{uuid.uuid4().hex[:8]}", f"e-{uuid.uuid4().hex[:8]}"
    put(api, {"resourceType": "Patient", "id": pid, "name": [{"family": "Notified"}]})
    enc = {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": fhir_ts(ADMIT), "end": fhir_ts(DISCHARGE)},
    }
    hook = f"http://127.0.0.1:{srv.port}/events/hapi/Encounter/{eid}"
    assert httpx.put(hook, json=enc, timeout=60).status_code == 200
    assert {t["status"] for t in follow_up(api, eid)} == {"requested"}
    reopened = {**enc, "status": "in-progress", "period": {"start": fhir_ts(ADMIT)}}
    assert httpx.put(hook, json=reopened, timeout=60).status_code == 200
    assert {t["status"] for t in follow_up(api, eid)} == {"cancelled"}


def test_a11_over_mllp_undoes_the_discharge(tmp_path: Path) -> None:
    data = tmp_path / "mllp-data"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhircare", "mllp", "--port", str(port), "--data", str(data)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_port(port, proc)
        assert "MSA|AA" in mllp(port, adt("A03", "M1", "V-M1", discharged()))
        ack = mllp(port, adt("A11", "M1", "V-M1", admitted()))
        assert "MSA|AA" in ack and "Discharge cancelled" in ack
    finally:
        proc.terminate()
        proc.wait(15)
    store = EmbeddedStore(data)
    try:
        (enc,) = store.search("Encounter", [("status", "cancelled")])
        tasks = [t for t in store.search("Task", [("encounter", f"Encounter/{enc['id']}")])]
        assert tasks and {t["status"] for t in tasks} == {"cancelled"}
        assert store.get_meta(f"discharge.{enc['id']}")["state"] == "cancelled"
    finally:
        store.close()


def mllp(port: int, payload: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(frame(payload))
        decoder = MllpDecoder()
        while True:
            chunk = s.recv(65536)
            assert chunk, "connection closed before the ACK"
            got = decoder.feed(chunk)
            if got:
                return got[0].decode()


# ---- deaths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mrn", "fields", "pid_tail"),
    [
        ("D1", discharged("Dead"), ""),  # a local code, mapped in mappings/hl7v2.yaml
        ("D2", discharged("20"), ""),  # HL7 table 0112: Expired
        ("D3", discharged("01"), "|" * 21 + ts(DISCHARGE) + "|Y"),  # PID-29/30
    ],
)
def test_death_at_discharge_opens_no_follow_up(
    srv: ServerProcess, api: httpx.Client, mrn: str, fields: dict[int, str], pid_tail: str
) -> None:
    ack = send(srv, adt("A03", mrn, f"V-{mrn}", fields, pid_tail))
    assert msa(ack)[1] == "AA" and "patient died" in msa(ack)[3]
    enc = visit(api, f"V-{mrn}")
    assert search(api, "Task", encounter=f"Encounter/{enc['id']}") == []
    assert search(api, "List", encounter=f"Encounter/{enc['id']}") == []
    (event,) = decisions(api, enc["id"])
    assert event["outcomeDesc"].startswith("No follow-up: the patient died")


def test_death_reported_after_the_discharge_cancels_open_follow_up(
    srv: ServerProcess, api: httpx.Client
) -> None:
    send(srv, adt("A03", "D4", "V-D4", discharged()))
    enc = visit(api, "V-D4")
    assert {t["status"] for t in follow_up(api, enc["id"])} == {"requested"}
    # an A08 with the death (PID-29/30) and no discharge time: the discharge itself is kept
    ack = send(srv, adt("A08", "D4", "V-D4", admitted(), "|" * 21 + ts(NOW) + "|Y"))
    assert msa(ack)[1] == "AA"
    assert visit(api, "V-D4")["status"] == "finished"
    tasks = follow_up(api, enc["id"])
    assert len(tasks) == 4 and {t["status"] for t in tasks} == {"cancelled"}
    assert all("died" in t["statusReason"]["text"] for t in tasks)


def test_patient_marked_deceased_through_fhir(api: httpx.Client) -> None:
    pid, eid = f"p-{uuid.uuid4().hex[:8]}", f"e-{uuid.uuid4().hex[:8]}"
    patient = put(api, {"resourceType": "Patient", "id": pid, "name": [{"family": "Late"}]})
    put(
        api,
        {
            "resourceType": "Encounter",
            "id": eid,
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": f"Patient/{pid}"},
            "period": {"start": fhir_ts(ADMIT), "end": fhir_ts(DISCHARGE)},
        },
    )
    assert {t["status"] for t in follow_up(api, eid)} == {"requested"}
    put(api, {**patient, "deceasedBoolean": True})
    assert {t["status"] for t in follow_up(api, eid)} == {"cancelled"}


# ---- history loads --------------------------------------------------------------------------


def history_bundle(pid: str) -> dict[str, Any]:
    """A patient's history as another system exports it: stays from the 1980s, a death in
    1983 (the shape of a Synthea record, written here)."""
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{pid}",
            "resource": {
                "resourceType": "Patient",
                "name": [{"family": "Historical"}],
                "deceasedDateTime": "1983-01-10T19:20:06+00:00",
            },
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    stays = [
        ("1980-03-01T10:00:00+00:00", "1980-03-05T12:00:00+00:00"),
        ("1983-01-05T10:00:00+00:00", "1983-01-09T12:00:00+00:00"),
    ]
    for start, end in stays:
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "IMP",
                    },
                    "subject": {"reference": f"urn:uuid:{pid}"},
                    "period": {"start": start, "end": end},
                    "hospitalization": {
                        "dischargeDisposition": {
                            "coding": [
                                {"system": "http://www.nubc.org/patient-discharge", "code": "01"}
                            ]
                        }
                    },
                },
                "request": {"method": "POST", "url": "Encounter"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_history_load_opens_no_years_old_follow_up(api: httpx.Client) -> None:
    pid = str(uuid.uuid4())
    r = api.post(str(api.base_url).rstrip("/"), json=history_bundle(pid))
    assert r.status_code == 200, r.text
    patient_ref = next(
        e["response"]["location"].split("/_history")[0]
        for e in r.json()["entry"]
        if e["response"]["location"].startswith("Patient/")
    )
    assert search(api, "Task", patient=patient_ref) == []
    encounters = search(api, "Encounter", patient=patient_ref)
    assert len(encounters) == 2
    for enc in encounters:
        (event,) = decisions(api, enc["id"])
        assert "No follow-up" in event["outcomeDesc"]


def test_old_discharge_of_a_living_patient_is_skipped_unless_the_window_is_wider(
    api: httpx.Client, tmp_path: Path
) -> None:
    old_end = NOW - timedelta(days=200)
    pid, eid = f"p-{uuid.uuid4().hex[:8]}", f"e-{uuid.uuid4().hex[:8]}"
    patient = {"resourceType": "Patient", "id": pid, "name": [{"family": "Living"}]}
    enc = {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": fhir_ts(old_end - timedelta(days=3)), "end": fhir_ts(old_end)},
    }
    put(api, patient)
    put(api, enc)
    assert follow_up(api, eid) == []
    (event,) = decisions(api, eid)
    assert "30 days" in event["outcomeDesc"]

    wide = ServerProcess(tmp_path / "wide", env={"FHIRCARE_FOLLOWUP_WINDOW_DAYS": "400"}).start()
    try:
        with httpx.Client(base_url=wide.base, timeout=60) as other:
            put(other, patient)
            put(other, enc)
            assert sorted(c for t in follow_up(other, eid) for c in codes(t)) == TCM
    finally:
        wide.stop()


# ---- times at the precision given -------------------------------------------------------------


def test_minute_precision_discharge_in_the_admit_minute(
    srv: ServerProcess, api: httpx.Client
) -> None:
    admit = NOW.replace(second=52) - timedelta(hours=30)
    assert msa(send(srv, adt("A01", "T1", "V-T1", {44: ts(admit)})))[1] == "AA"
    # the A03 carries no PV1-44 and a discharge time to the minute: the admit minute
    ack = send(srv, adt("A03", "T1", "V-T1", {36: "01", 45: ts(admit, "minute")}))
    assert msa(ack)[1] == "AA"
    enc = visit(api, "V-T1")
    assert enc["status"] == "finished"
    assert enc["period"]["start"] == fhir_ts(admit)
    assert evaluate(enc, f"Encounter.period.select({PER_1})", [], models["r4"]) == [True]
    # a discharge time wholly before the stored admit time is refused, nothing written
    before = visit(api, "V-T1")["meta"]["versionId"]
    ack = send(
        srv, adt("A03", "T1", "V-T1", {36: "01", 45: ts(admit - timedelta(hours=2), "minute")})
    )
    assert msa(ack)[1] == "AE"
    assert visit(api, "V-T1")["meta"]["versionId"] == before

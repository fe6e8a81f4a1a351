"""ADT^A03 over MLLP, end to end: the `fhircare mllp` process ACKs only once the discharge's
outputs (reconciled List, Tasks, CarePlan) are stored; failures ask for a resend."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fhircare.bootstrap import build_container
from fhircare.config import Settings
from fhircare.services.intake import Hl7Intake
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore
from fhircare.transitions import discharge
from fhircare.transitions.mllp import MllpDecoder, frame
from tests.conftest import free_port

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
# Times of a stay that ended an hour ago: within the follow-up window whenever this runs.
_ENDED = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
SENT = (_ENDED + timedelta(minutes=30)).strftime("%Y%m%d%H%M%S")
ADMITTED = (_ENDED - timedelta(days=5)).strftime("%Y%m%d%H%M%S")
ENDED = _ENDED.strftime("%Y%m%d%H%M%S")


def a03(mrn: str, visit: str, control: str) -> bytes:
    return (
        f"MSH|^~\\&|ADT|GENHOSP|FHIRCARE|CM|{SENT}||ADT^A03^ADT_A03|{control}|P|2.5.1\r"
        f"EVN|A03|{SENT}\r"
        f"PID|1||{mrn}^^^GENHOSP^MR||Müller^Jürgen||19470312|M\r"
        f"PV1|1|I|W1^101^A||||||||||||||||{visit}^^^GENHOSP^VN|||||||||||||||||01|||||||"
        f"|{ADMITTED}|{ENDED}\r"
        f"DG1|1||I50.9^Heart failure, unspecified^I10|||A\r"
        f"ZXY|ignored|segment\r"
    ).encode()


def send(port: int, payload: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(frame(payload))
        decoder = MllpDecoder()
        while True:
            chunk = s.recv(65536)
            assert chunk, "connection closed before the ACK"
            got = decoder.feed(chunk)
            if got:
                return got[0].decode()


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"MLLP port {port} did not open")


def test_a03_over_mllp_to_tasks_in_the_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = EmbeddedStore(data)  # the patient's home medications, known before admission
    store.commit(
        [
            WriteOp(
                "update",
                "Patient",
                id="p-mllp",
                resource={
                    "resourceType": "Patient",
                    "identifier": [
                        {"system": "http://fhircare.org/fhir/sid/hl7v2/GENHOSP", "value": "MRN-E2E"}
                    ],
                },
            ),
            WriteOp(
                "update",
                "MedicationStatement",
                id="p-mllp-warfarin",
                resource={
                    "resourceType": "MedicationStatement",
                    "status": "active",
                    "subject": {"reference": "Patient/p-mllp"},
                    "effectiveDateTime": "2026-01-01",
                    "medicationCodeableConcept": {
                        "coding": [
                            {
                                "system": RXNORM,
                                "code": "855332",
                                "display": "warfarin sodium 5 MG Oral Tablet",
                            }
                        ]
                    },
                },
            ),
        ]
    )
    store.close()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhircare", "mllp", "--port", str(port), "--data", str(data)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_port(port, proc)
        ack = send(port, a03("MRN-E2E", "V-E2E", "CTRL-1"))
        assert "MSA|AA|CTRL-1" in ack
        again = send(port, a03("MRN-E2E", "V-E2E", "CTRL-1"))  # a resend
        assert "MSA|AA|CTRL-1" in again
        refused = send(port, b"MSH|^~\\&|ADT|GENHOSP|X|Y|2026||ORU^R01|CTRL-2|P|2.5.1\rPID|1\r")
        assert "MSA|AR|CTRL-2" in refused
    finally:
        proc.terminate()
        proc.wait(15)
    store = EmbeddedStore(data)
    try:
        patients = store.search(
            "Patient", [("identifier", "http://fhircare.org/fhir/sid/hl7v2/GENHOSP|MRN-E2E")]
        )
        assert [p["id"] for p in patients] == ["p-mllp"]
        assert patients[0]["name"][0]["family"] == "Müller"
        [enc] = store.search("Encounter", [("patient", "Patient/p-mllp")])
        assert enc["status"] == "finished"
        tasks = store.search("Task", [("encounter", f"Encounter/{enc['id']}")])
        codes = {c["code"] for t in tasks for c in t["code"]["coding"]}
        assert {"interactive-contact", "medication-review"} <= codes
        lists = store.search("List", [("encounter", f"Encounter/{enc['id']}")])
        assert len(lists) == 1  # the resend made no second reconciliation
        warfarin = [
            e
            for e in lists[0]["entry"]
            if e["item"]["reference"] == "MedicationStatement/p-mllp-warfarin"
        ]
        assert warfarin, "the home warfarin is in the reconciled list"
        assert store.search("Condition", [("patient", "Patient/p-mllp")])
    finally:
        store.close()


def test_failed_follow_up_work_is_not_acknowledged_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = build_container(Settings(data=tmp_path / "d"))
    intake = Hl7Intake(container.bundles)
    real = discharge.process_discharge

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("simulated failure")

    try:
        monkeypatch.setattr(discharge, "process_discharge", broken)
        ack = intake.handle(a03("MRN-F", "V-F", "CTRL-F")).decode()
        assert "MSA|AE|CTRL-F" in ack  # stored, but the sender is asked to resend
        assert discharge.find_unprocessed(container.store)
        monkeypatch.setattr(discharge, "process_discharge", real)
        ack = intake.handle(a03("MRN-F", "V-F", "CTRL-F")).decode()
        assert "MSA|AA|CTRL-F" in ack
        assert not discharge.find_unprocessed(container.store)
        assert container.store.search("Task", [("code", "interactive-contact")])
    finally:
        container.close()

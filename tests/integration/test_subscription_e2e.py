"""A discharge recorded directly in HAPI reaches fhircare through a rest-hook Subscription,
is reconciled there on data at least as new as the notification, and its outputs are written
back to HAPI.

HAPI runs with the official image's stock defaults plus rest-hook Subscriptions, so its 60 s
search cache is on: the test first warms it with the very searches fhircare's next pull sends,
then writes the home medications, then discharges. A pull that read the cache would miss the
medications (warfarin "new", amlodipine missing, fewer Tasks) and the Encounter itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhircare.bootstrap import build_container
from fhircare.config import Settings
from fhircare.store.base import WriteOp
from fhircare.transitions import discharge
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.hapi, pytest.mark.slow]

SECRET = "e2e-webhook-secret"
# A discharge yesterday: within the follow-up window whenever the suite runs.
ENDED = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
ADMITTED = ENDED - timedelta(days=4)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
MR_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
MEDREC_STATUS = "http://fhircare.org/fhir/CodeSystem/medrec-status"
FRESH = {"Cache-Control": "no-cache"}  # the test's own checks must not read HAPI's cache


def _instant(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _put(hapi: httpx.Client, resource: dict[str, Any]) -> None:
    r = hapi.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text


def _med(rid: str, rtype: str, pid: str, code: str, display: str, **extra: Any) -> dict:
    return {
        "resourceType": rtype,
        "id": rid,
        "status": "active",
        "subject": {"reference": f"Patient/{pid}"},
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code, "display": display}]
        },
        **extra,
    }


def _scenario(tag: str) -> tuple[dict, list[dict], dict, dict]:
    """(patient, home medications, discharge prescription, encounter in progress)."""
    pid, eid = f"sub-p-{tag}", f"sub-e-{tag}"
    patient = {"resourceType": "Patient", "id": pid, "name": [{"family": "Hooked"}]}
    home = [
        _med(
            f"{pid}-warf", "MedicationStatement", pid, "855332", "warfarin sodium 5 MG Oral Tablet"
        )
        | {"effectiveDateTime": "2026-01-01"},
        _med(f"{pid}-amlo", "MedicationStatement", pid, "197361", "amlodipine 5 MG Oral Tablet")
        | {"effectiveDateTime": "2026-01-01"},
    ]
    prescription = _med(
        f"{pid}-warf-dc",
        "MedicationRequest",
        pid,
        "855332",
        "warfarin sodium 5 MG Oral Tablet",
        intent="order",
        category=[{"coding": [{"system": MR_CATEGORY, "code": "discharge"}]}],
        encounter={"reference": f"Encounter/{eid}"},
        authoredOn=_instant(ENDED - timedelta(hours=1)),
    )
    encounter = {
        "resourceType": "Encounter",
        "id": eid,
        "status": "in-progress",
        "class": {"system": ACT, "code": "IMP"},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": _instant(ADMITTED)},
    }
    return patient, home, prescription, encounter


def _finished(encounter: dict) -> dict:
    return encounter | {
        "status": "finished",
        "period": {"start": _instant(ADMITTED), "end": _instant(ENDED)},
    }


def _statuses(med_list: dict) -> dict[str, str]:
    """ingredient -> reconciliation status, from a reconciled List."""
    return {
        e["item"]["display"]: next(
            c["code"] for c in e["flag"]["coding"] if c["system"] == MEDREC_STATUS
        )
        for e in med_list.get("entry", [])
    }


def _oracle(tmp_path: Path, resources: list[dict], encounter: dict) -> tuple[int, dict]:
    """What the same discharge gives on complete local data: (Task count, List statuses)."""
    container = build_container(Settings(data=tmp_path / "oracle", audit=False))
    try:
        store = container.store
        store.commit(
            [WriteOp("update", r["resourceType"], id=r["id"], resource=r) for r in resources]
        )
        written = discharge.process_discharge(store, store.read("Encounter", encounter["id"]))
        container.bus.publish(store, written)
        enc_ref = f"Encounter/{encounter['id']}"
        tasks = store.search("Task", [("encounter", enc_ref)])
        [med_list] = store.search("List", [("encounter", enc_ref)])
        return len(tasks), _statuses(med_list)
    finally:
        container.close()


def test_discharge_in_hapi_is_reconciled_at_once_on_fresh_data(
    hapi_recommended_url: str, tmp_path: Path
) -> None:
    hapi_url = hapi_recommended_url
    env = {
        "FHIRCARE_HAPI_URL": hapi_url,
        "FHIRCARE_WEBHOOK_SECRET": SECRET,
        "FHIRCARE_SYNC_TYPES": "Patient,Encounter,MedicationStatement,MedicationRequest,Condition",
        # Nothing but the notification may process the discharge: no background sync, no sweep.
        "FHIRCARE_SYNC_INTERVAL": "0",
        "FHIRCARE_SWEEP_INTERVAL": "0",
    }
    srv = ServerProcess(tmp_path / "data", env=env).start()
    tag = uuid.uuid4().hex[:10]
    patient, home, prescription, encounter = _scenario(tag)
    enc_ref = f"Encounter/{encounter['id']}"
    try:
        endpoint = f"http://127.0.0.1:{srv.port}/events/hapi"
        sub = subprocess.run(
            [sys.executable, "-m", "fhircare", "sync", "subscribe", "--endpoint", endpoint],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sub.returncode == 0, sub.stderr
        assert "active" in sub.stdout

        with httpx.Client(
            base_url=hapi_url, timeout=30, headers={"Content-Type": "application/fhir+json"}
        ) as hapi:
            _put(hapi, patient)
            # Two pulls: the second sends exactly the searches the next pull will send (the
            # watermarks no longer move), so HAPI now holds them in its search cache.
            for _ in range(2):
                ping = httpx.post(endpoint, headers={"Authorization": f"Bearer {SECRET}"})
                assert ping.status_code == 200, ping.text
            for resource in [*home, encounter, prescription]:
                _put(hapi, resource)
            _put(hapi, _finished(encounter))  # the discharge, recorded in HAPI only

            deadline = time.monotonic() + 90
            tasks: list = []
            while time.monotonic() < deadline and not tasks:
                found = hapi.get("/Task", params={"encounter": enc_ref}, headers=FRESH).json()
                tasks = [e["resource"] for e in found.get("entry", [])]
                if not tasks:
                    time.sleep(0.5)
            assert tasks, "the notified discharge was not processed (no Task in HAPI in 90 s)"
            # (the outputs are pushed in one transaction: every Task arrived at once)
            remote_lists = hapi.get("/List", params={"encounter": enc_ref}, headers=FRESH).json()
        local = httpx.get(f"{srv.base}/List", params={"encounter": enc_ref}).json()
        [med_list] = [e["resource"] for e in local["entry"]]
        local_tasks = httpx.get(f"{srv.base}/Task", params={"encounter": enc_ref}).json()
    finally:
        srv.stop()

    statuses = _statuses(med_list)
    assert statuses.get("warfarin") == "continued", statuses
    assert "amlodipine" in statuses, statuses
    expected_tasks, expected_statuses = _oracle(
        tmp_path, [patient, *home, prescription, _finished(encounter)], encounter
    )
    assert statuses == expected_statuses
    assert len(tasks) == expected_tasks == local_tasks["total"]
    assert remote_lists["total"] == 1
    assert all(t["for"]["reference"] == f"Patient/{patient['id']}" for t in tasks)

"""A discharge recorded directly in HAPI reaches fhircare through a rest-hook Subscription,
is reconciled there, and its outputs are written back to HAPI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess

pytestmark = [pytest.mark.hapi, pytest.mark.slow]

SECRET = "e2e-webhook-secret"
# A discharge yesterday: within the follow-up window whenever the suite runs.
ENDED = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
ADMITTED = ENDED - timedelta(days=4)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _put(hapi: httpx.Client, resource: dict) -> None:
    r = hapi.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text


def test_discharge_in_hapi_flows_through_the_subscription(
    hapi_base_url: str, tmp_path: Path
) -> None:
    env = {
        "FHIRCARE_HAPI_URL": hapi_base_url,
        "FHIRCARE_WEBHOOK_SECRET": SECRET,
        "FHIRCARE_SYNC_TYPES": "Patient,Encounter,MedicationStatement,MedicationRequest,Condition",
    }
    srv = ServerProcess(tmp_path / "data", env=env).start()
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

        tag = uuid.uuid4().hex[:10]
        pid, eid = f"sub-p-{tag}", f"sub-e-{tag}"
        with httpx.Client(
            base_url=hapi_base_url, timeout=30, headers={"Content-Type": "application/fhir+json"}
        ) as hapi:
            _put(hapi, {"resourceType": "Patient", "id": pid, "name": [{"family": "Hooked"}]})
            _put(
                hapi,
                {
                    "resourceType": "MedicationStatement",
                    "id": f"{pid}-m1",
                    "status": "active",
                    "subject": {"reference": f"Patient/{pid}"},
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
            )
            encounter = {
                "resourceType": "Encounter",
                "id": eid,
                "status": "in-progress",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "IMP",
                },
                "subject": {"reference": f"Patient/{pid}"},
                "period": {"start": ADMITTED.isoformat()},
            }
            _put(hapi, encounter)
            encounter.update(
                status="finished",
                period={"start": ADMITTED.isoformat(), "end": ENDED.isoformat()},
            )
            _put(hapi, encounter)  # the discharge, recorded in HAPI only

            deadline = time.monotonic() + 90
            tasks: list = []
            while time.monotonic() < deadline:
                found = hapi.get("/Task", params={"encounter": f"Encounter/{eid}"}).json()
                tasks = [e["resource"] for e in found.get("entry", [])]
                if tasks:
                    break
                time.sleep(1)
            assert tasks, "no transitional-care Task came back to HAPI within 90 s"
            lists = hapi.get("/List", params={"encounter": f"Encounter/{eid}"}).json()
            assert lists.get("total", len(lists.get("entry", []))) >= 1
        local = httpx.get(f"{srv.base}/Task", params={"encounter": f"Encounter/{eid}"}).json()
        assert local["total"] == len(tasks)
        assert all(t["for"]["reference"] == f"Patient/{pid}" for t in tasks)
    finally:
        srv.stop()

"""A small synthetic panel for the Bulk Data tests: patients with a Condition, an
Observation and an Encounter each (real SNOMED CT, LOINC and v3 codes), plus the sample
discharge of examples/, as one transaction Bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CONDITIONS = (("44054006", "Diabetes mellitus type 2"), ("38341003", "Hypertensive disorder"))


def _put(resource: dict[str, Any]) -> dict[str, Any]:
    rtype, rid = resource["resourceType"], resource["id"]
    return {"resource": resource, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}


def panel_resources(n: int, prefix: str = "pp") -> list[dict[str, Any]]:
    """`n` patients `{prefix}{i}` and their records (3 more resources each)."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        pid = f"{prefix}{i}"
        subject = {"reference": f"Patient/{pid}"}
        code, display = CONDITIONS[i % len(CONDITIONS)]
        out += [
            {
                "resourceType": "Patient",
                "id": pid,
                "name": [{"family": f"Panel{i}", "given": ["Test"]}],
                "gender": "female" if i % 2 else "male",
                "birthDate": f"19{50 + i % 40}-01-15",
            },
            {
                "resourceType": "Condition",
                "id": f"{pid}-c",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
                "subject": subject,
            },
            {
                "resourceType": "Observation",
                "id": f"{pid}-o",
                "status": "final",
                "code": {
                    "coding": [
                        {
                            "system": LOINC,
                            "code": "4548-4",
                            "display": "Hemoglobin A1c/Hemoglobin.total in Blood",
                        }
                    ]
                },
                "subject": subject,
                "valueQuantity": {
                    "value": 6 + i % 4,
                    "unit": "%",
                    "system": "http://unitsofmeasure.org",
                    "code": "%",
                },
            },
            {
                "resourceType": "Encounter",
                "id": f"{pid}-e",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "subject": subject,
                "period": {"start": "2026-11-01T09:00:00Z", "end": "2026-11-01T09:30:00Z"},
            },
        ]
    return out


def example_resources() -> list[dict[str, Any]]:
    """The resources of examples/discharge-bundle.json with ids from their fullUrls."""
    bundle = json.loads((ROOT / "examples" / "discharge-bundle.json").read_text())
    out = []
    for entry in bundle["entry"]:
        resource = dict(entry["resource"])
        resource.setdefault("id", entry["fullUrl"].rsplit("/", 1)[-1])
        out.append(resource)
    return out


def transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [_put(r) for r in resources]}


def group(gid: str, members: list[str]) -> dict[str, Any]:
    return {
        "resourceType": "Group",
        "id": gid,
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{m}"}} for m in members],
    }

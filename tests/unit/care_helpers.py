"""Fixtures shared by the care-plan / coordination tests: a store with our profiles loaded
and a small sample patient the tests make themselves."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fhircare.care.definitions import load_profiles_dir
from fhircare.fhir.validation import validate_resource
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore

NOW = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
CM = "Practitioner/cm-1"
PCP = "Practitioner/pcp-1"


def make_store(folder: Path) -> EmbeddedStore:
    """An embedded store holding every resource of profiles/ (as the service does at start)."""
    store = EmbeddedStore(folder, fsync=False)
    ops = [
        WriteOp("update", r["resourceType"], id=r["id"], resource=r)
        for r in load_profiles_dir()
        if r["resourceType"] in ("PlanDefinition", "ActivityDefinition", "Questionnaire")
    ]
    store.commit(ops)
    return store


def put(store: EmbeddedStore, resource: dict[str, Any]) -> dict[str, Any]:
    (result,) = store.commit(
        [WriteOp("update", resource["resourceType"], id=resource["id"], resource=resource)]
    )
    assert result.resource is not None
    return result.resource


def seed_patient(store: EmbeddedStore, pid: str = "p1", *, contacts: bool = True) -> str:
    put(
        store,
        {
            "resourceType": "Practitioner",
            "id": "cm-1",
            "name": [{"family": "Manager", "given": ["Casey"]}],
        },
    )
    put(
        store,
        {
            "resourceType": "Practitioner",
            "id": "pcp-1",
            "name": [{"family": "Doctor", "given": ["Pat"]}],
        },
    )
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": "Testperson", "given": ["Alex"]}],
        "gender": "female",
        "birthDate": "1950-02-01",
        "generalPractitioner": [{"reference": PCP}],
    }
    if contacts:
        patient["contact"] = [
            {
                "relationship": [
                    {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}
                        ],
                        "text": "Daughter, caregiver",
                    }
                ],
                "name": {"family": "Testperson", "given": ["Robin"]},
                "telecom": [{"system": "phone", "value": "555-0100"}],
            }
        ]
    put(store, patient)
    return f"Patient/{pid}"


def condition(
    store: EmbeddedStore, patient_ref: str, cid: str, system: str, value: str, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "problem-list-item",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": system, "code": value}]},
        "subject": {"reference": patient_ref},
    }
    body.update(extra)
    return put(store, body)


def observation(
    store: EmbeddedStore,
    patient_ref: str,
    oid: str,
    loinc: str,
    value: float,
    unit: str,
    when: str,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }
    body.update(extra)
    return put(store, body)


def assert_valid(resources: list[dict[str, Any]]) -> None:
    """Every resource validates with fhir.resources R4B and carries a fhircare meta.profile."""
    assert resources
    for r in resources:
        validate_resource(r)
        profiles = (r.get("meta") or {}).get("profile") or []
        assert any(
            p.startswith("http://fhircare.org/fhir/StructureDefinition/") for p in profiles
        ), r["resourceType"]

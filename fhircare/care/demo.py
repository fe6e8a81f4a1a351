"""The sample record of `fhircare demo` (pure data, nothing written here).

A patient with type 2 diabetes and hypertension, her care manager and PCP, a community food
pantry, a recent inpatient stay, a first HbA1c, and completed intake, PHQ-9 and AHC HRSN
responses (food and transportation needs positive). `fhircare.commands.demo` sends them to
a fhircare server and runs the cycle through its REST API.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fhircare.care.common import Resource, coding

PATIENT = "Patient/demo-patient"
CM = "Practitioner/demo-care-manager"
LOINC = "http://loinc.org"
INTAKE = "http://fhircare.org/fhir/CodeSystem/care-intake"


def sample_record(now: datetime) -> list[Resource]:
    """Practitioners, the pantry, the patient, her stay, Conditions and a first HbA1c."""
    day = timedelta(days=1)
    resources: list[Resource] = [
        {
            "resourceType": "Practitioner",
            "id": "demo-care-manager",
            "name": [{"family": "Rivera", "given": ["Morgan"], "suffix": ["RN"]}],
        },
        {
            "resourceType": "Practitioner",
            "id": "demo-pcp",
            "name": [{"family": "Okafor", "given": ["Jordan"], "suffix": ["MD"]}],
        },
        {
            "resourceType": "Organization",
            "id": "demo-food-pantry",
            "active": True,
            "name": "Riverside Community Food Pantry",
            "type": [
                {
                    "coding": [
                        coding(
                            "http://terminology.hl7.org/CodeSystem/organization-type",
                            "cg",
                            "Community Group",
                        ),
                        coding("http://fhircare.org/fhir/CodeSystem/referral-kind", "food-bank"),
                    ]
                }
            ],
        },
        {
            "resourceType": "Patient",
            "id": "demo-patient",
            "gender": "female",
            "birthDate": "1954-07-12",
            "name": [{"family": "Sample", "given": ["Dana"]}],
            "generalPractitioner": [{"reference": "Practitioner/demo-pcp"}],
            "contact": [
                {
                    "relationship": [{"text": "Son, caregiver"}],
                    "name": {"family": "Sample", "given": ["Lee"]},
                    "telecom": [{"system": "phone", "value": "555-0142"}],
                }
            ],
        },
        {
            "resourceType": "Encounter",
            "id": "demo-admission",
            "status": "finished",
            "class": coding(
                "http://terminology.hl7.org/CodeSystem/v3-ActCode", "IMP", "inpatient encounter"
            ),
            "subject": {"reference": "Patient/demo-patient"},
            "period": {
                "start": (now - 12 * day).date().isoformat(),
                "end": (now - 9 * day).date().isoformat(),
            },
        },
    ]
    for cid, code, display in (
        ("demo-dm", "E11.9", "Type 2 diabetes mellitus without complications"),
        ("demo-htn", "I10", "Essential (primary) hypertension"),
    ):
        resources.append(
            {
                "resourceType": "Condition",
                "id": cid,
                "clinicalStatus": {
                    "coding": [
                        coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active")
                    ]
                },
                "category": [
                    {
                        "coding": [
                            coding(
                                "http://terminology.hl7.org/CodeSystem/condition-category",
                                "problem-list-item",
                            )
                        ]
                    }
                ],
                "code": {
                    "coding": [coding("http://hl7.org/fhir/sid/icd-10-cm", code, display)],
                    "text": display,
                },
                "subject": {"reference": "Patient/demo-patient"},
            }
        )
    resources.append(hba1c("demo-a1c-1", 9.2, now - 30 * day))
    return resources


def hba1c(oid: str, value: float, when: datetime) -> Resource:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [
            {
                "coding": [
                    coding(
                        "http://terminology.hl7.org/CodeSystem/observation-category", "laboratory"
                    )
                ]
            }
        ],
        "code": {"coding": [coding(LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood")]},
        "subject": {"reference": PATIENT},
        "effectiveDateTime": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "valueQuantity": {
            "value": value,
            "unit": "%",
            "system": "http://unitsofmeasure.org",
            "code": "%",
        },
    }


def _choice(system: str, code: str) -> dict[str, Any]:
    return {"valueCoding": {"system": system, "code": code}}


def responses(patient: str, now: datetime) -> list[Resource]:
    """Completed intake, PHQ-9 and AHC HRSN responses (food and transportation positive)."""
    stamp = now.isoformat(timespec="seconds").replace("+00:00", "Z")
    base = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "subject": {"reference": patient},
        "authored": stamp,
        "author": {"reference": CM},
    }
    phq = [
        "LA6569-3",
        "LA6570-1",
        "LA6569-3",
        "LA6570-1",
        "LA6569-3",
        "LA6568-5",
        "LA6569-3",
        "LA6568-5",
        "LA6568-5",
    ]  # 1+2+1+2+1+0+1+0+0 = 8, item 9 = 0
    links = [
        "44250-9",
        "44255-8",
        "44259-0",
        "44254-1",
        "44251-7",
        "44258-2",
        "44252-5",
        "44253-3",
        "44260-8",
    ]
    phq9 = {
        **base,
        "id": "demo-phq9",
        "questionnaire": "http://fhircare.org/fhir/Questionnaire/phq-9",
        "item": [
            {"linkId": lk, "answer": [_choice(LOINC, a)]} for lk, a in zip(links, phq, strict=True)
        ]
        + [{"linkId": "69722-7", "answer": [_choice(LOINC, "LA6573-5")]}],
    }
    never = [_choice(LOINC, "LA6270-8")]
    ahc = {
        **base,
        "id": "demo-ahc",
        "questionnaire": "http://fhircare.org/fhir/Questionnaire/ahc-hrsn-core",
        "item": [
            {
                "linkId": "living-situation",
                "item": [
                    {"linkId": "71802-3", "answer": [_choice(LOINC, "LA31993-1")]},
                    {"linkId": "96778-6", "answer": [_choice(LOINC, "LA9-3")]},
                ],
            },
            {
                "linkId": "food",
                "item": [
                    {"linkId": "88122-7", "answer": [_choice(LOINC, "LA6729-3")]},
                    {"linkId": "88123-5", "answer": [_choice(LOINC, "LA28397-0")]},
                ],
            },
            {
                "linkId": "transportation",
                "item": [{"linkId": "93030-5", "answer": [_choice(LOINC, "LA33-6")]}],
            },
            {
                "linkId": "utilities",
                "item": [{"linkId": "96779-4", "answer": [_choice(LOINC, "LA32-8")]}],
            },
            {
                "linkId": "safety",
                "item": [
                    {"linkId": lk, "answer": never}
                    for lk in ("95618-5", "95617-7", "95616-9", "95615-1")
                ],
            },
        ],
    }
    intake = {
        **base,
        "id": "demo-intake",
        "questionnaire": "http://fhircare.org/fhir/Questionnaire/care-intake",
        "item": [
            {
                "linkId": "functional",
                "item": [{"linkId": "adl-help", "answer": [_choice(INTAKE, "bathing")]}],
            },
            {
                "linkId": "support",
                "item": [
                    {"linkId": "has-support", "answer": [{"valueBoolean": True}]},
                    {"linkId": "support-person", "answer": [{"valueString": "Son (Lee)"}]},
                    {"linkId": "lives-alone", "answer": [{"valueBoolean": False}]},
                ],
            },
            {
                "linkId": "barriers-group",
                "item": [{"linkId": "barriers", "answer": [_choice(INTAKE, "none")]}],
            },
        ],
    }
    return [intake, phq9, ahc]

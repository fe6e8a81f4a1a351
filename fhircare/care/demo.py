"""`fhircare demo`: the whole care-management cycle on a sample patient it creates.

Intake, PHQ-9 and AHC HRSN responses are extracted by the assessment module (when
installed); then a diabetes care plan from its PlanDefinition, a social-needs referral
worked through its Task state machine (rejected -> alternative proposed), a follow-up call,
education delivered, and a new HbA1c moving goal progress. Prints a rich summary and returns
counts.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from fhircare.care import definitions, goals, tasks
from fhircare.care.common import Resource, coding, commit, update_op
from fhircare.care.education import record_education_delivered
from fhircare.care.eligibility import assess_eligibility
from fhircare.care.followup import document_call, schedule_followups
from fhircare.care.plans import apply_plan_definition
from fhircare.care.worklist import worklist
from fhircare.store.base import Store, WriteOp

CM = "Practitioner/demo-care-manager"
LOINC = "http://loinc.org"
INTAKE = "http://fhircare.org/fhir/CodeSystem/care-intake"


def _seed(store: Store, now: datetime) -> str:
    """Definitions from profiles/ (when absent) and the sample patient's record."""
    ops = [
        WriteOp("update", r["resourceType"], id=r["id"], resource=r)
        for r in definitions.load_profiles_dir()
        if not store.exists(r["resourceType"], r["id"])
    ]
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
    resources.append(_hba1c("demo-a1c-1", 9.2, now - 30 * day))
    ops += [WriteOp("update", r["resourceType"], id=r["id"], resource=r) for r in resources]
    store.commit(ops)
    return "Patient/demo-patient"


def _hba1c(oid: str, value: float, when: datetime) -> Resource:
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
        "subject": {"reference": "Patient/demo-patient"},
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


def _responses(patient: str, now: datetime) -> list[Resource]:
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


def _assess(store: Store, patient: str, now: datetime, log: list[str]) -> list[Resource]:
    try:
        from fhircare.care import assessment
    except ImportError:
        log.append("assessment module not installed: skipped intake, PHQ-9 and AHC HRSN")
        return []
    out: list[Resource] = []
    for qr in _responses(patient, now):
        store.commit([WriteOp("update", "QuestionnaireResponse", id=qr["id"], resource=qr)])
        try:
            made = assessment.extract(store, qr["id"], now=now)
        except Exception as exc:  # the demo goes on; the summary says what failed
            log.append(f"{qr['id']}: extraction failed ({type(exc).__name__}: {exc})")
            continue
        out += made
        log.append(f"{qr['id']}: {len(made)} resources extracted")
    return out


def run_demo(store: Store, console: Any, *, now: datetime | None = None) -> dict[str, int]:
    """Run the cycle on a new sample patient; print a summary; return counts by type."""
    from rich.table import Table

    at = (now or datetime.now(UTC)).replace(microsecond=0)
    log: list[str] = []
    written: list[Resource] = []
    patient = _seed(store, at)
    written += _assess(store, patient, at, log)

    elig = assess_eligibility(store, patient, now=at)
    log.append(
        f"eligibility: CCM {'yes' if elig.ccm_eligible else 'no'}, tier {elig.tier}; "
        + "; ".join(elig.reasons)
    )

    plan_out = apply_plan_definition(
        store,
        "t2dm",
        patient,
        practitioner_ref=CM,
        now=at,
        preferences={"declined_activities": ["dietitian-referral"]},
    )
    written += plan_out
    plan = plan_out[0]
    log.append(
        f"care plan '{plan['title']}': {len(plan.get('goal', []))} goals, "
        f"{len(plan['activity'])} activities (dietitian referral declined)"
    )

    # the social-needs referral made by the assessment (or none): the pantry rejects it
    referral = next(
        (
            t
            for t in store.search(
                "Task",
                [
                    ("patient", patient),
                    ("code", "http://hl7.org/fhir/CodeSystem/task-code|fulfill"),
                ],
            )
            if t["status"] == "requested" and t.get("owner")
        ),
        None,
    )
    if referral is not None:
        tasks.transition(store, referral["id"], "received", now=at)
        rejected = tasks.transition(
            store, referral["id"], "rejected", reason="Pantry is outside the patient's area", now=at
        )
        written.append(rejected)
        alt = store.search("Task", [("focus", f"Task/{referral['id']}")])
        written += alt
        log.append(
            f"referral '{rejected['description']}' rejected -> "
            f"'{alt[0]['code']['text']}' for the care manager"
        )

    calls = schedule_followups(store, patient, elig.tier, start=at, count=2, owner=CM, now=at)
    written += calls
    written += document_call(
        store,
        calls[0]["id"],
        summary="Reviewed glucose log and pantry options; no hypoglycaemia.",
        topics=["glucose", "food access"],
        now=at + timedelta(days=6),
    )
    log.append(f"{len(calls)} follow-up calls scheduled ({elig.tier} risk); first call documented")

    index = next(i for i, a in enumerate(plan["activity"]) if a["id"] == "diabetes-education")
    written += record_education_delivered(
        store,
        plan["id"],
        index,
        material={
            "title": "NIDDK: Managing Diabetes",
            "url": "https://www.niddk.nih.gov/health-information/diabetes/overview/managing-diabetes",
        },
        now=at,
    )

    (a1c,) = commit(store, [update_op(_hba1c("demo-a1c-2", 7.8, at + timedelta(days=7)))])
    written += goals.on_observation(store, a1c, now=at)
    hba1c_goal = next(
        g
        for g in store.search("Goal", [("patient", patient)])
        if g.get("identifier", [{}])[0].get("value") == "t2dm/hba1c"
    )
    status = hba1c_goal["achievementStatus"]["coding"][0]["code"]
    log.append(f"HbA1c 9.2% -> 7.8%: goal 'HbA1c below 7%' is {status}")

    items = worklist(store, CM, now=at)
    table = Table(title=f"Worklist of {CM} ({len(items)} open tasks)")
    for col in ("due", "task", "why"):
        table.add_column(col)
    for item in items[:8]:
        table.add_row(item.due[:10] if item.due else "-", item.title, item.reason)
    console.rule("[bold]fhircare demo: care-management cycle")
    for line in log:
        console.print(f"• {line}")
    console.print(table)
    counts = Counter(r["resourceType"] for r in written)
    counts["worklist"] = len(items)
    return dict(counts)

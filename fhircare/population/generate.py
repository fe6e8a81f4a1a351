"""Synthetic panels, Synthea-like, as Bulk Data ndjson (one file per type).

Each Patient gets Conditions (chronic ones from mappings/chronic-conditions.yaml, some
resolved or entered in error, acute ones, social needs from mappings/sdoh.yaml), Encounters
(check-ups, emergency visits and hospital stays, some ending in the last weeks),
Observations (body weight, PHQ-9 totals, ADL dependence), MedicationRequests (RxNorm
clinical drugs of mappings/drug-codes.yaml) and AHC HRSN QuestionnaireResponses. The panel
is a function of the seed and the as-of date only.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

from fhircare.care.common import mapping
from fhircare.paths import profiles_dir

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CARE_INTAKE = "http://fhircare.org/fhir/CodeSystem/care-intake"
HRSN = "http://fhircare.org/fhir/Questionnaire/ahc-hrsn-core"
TYPES = (
    "Patient",
    "Condition",
    "Encounter",
    "Observation",
    "MedicationRequest",
    "QuestionnaireResponse",
)

# Billable ICD-10-CM codes (FY2024 tabular list) for the chronic-condition keys.
ICD10_CODES: dict[str, tuple[str, str]] = {
    "diabetes": ("E11.9", "Type 2 diabetes mellitus without complications"),
    "heart-failure": ("I50.9", "Heart failure, unspecified"),
    "copd": ("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
    "hypertension": ("I10", "Essential (primary) hypertension"),
    "ckd": ("N18.4", "Chronic kidney disease, stage 4 (severe)"),
    "asthma": ("J45.909", "Unspecified asthma, uncomplicated"),
    "depression": ("F32.9", "Major depressive disorder, single episode, unspecified"),
    "anxiety": ("F41.1", "Generalized anxiety disorder"),
    "bipolar": ("F31.9", "Bipolar disorder, unspecified"),
    "schizophrenia": ("F20.9", "Schizophrenia, unspecified"),
    "substance-use": ("F10.20", "Alcohol dependence, uncomplicated"),
    "dementia": ("G30.9", "Alzheimer's disease, unspecified"),
    "atrial-fibrillation": ("I48.91", "Unspecified atrial fibrillation"),
    "coronary-artery-disease": (
        "I25.10",
        "Atherosclerotic heart disease of native coronary artery without angina pectoris",
    ),
    "hyperlipidemia": ("E78.5", "Hyperlipidemia, unspecified"),
    "osteoarthritis": ("M17.11", "Unilateral primary osteoarthritis, right knee"),
}
# How common each chronic condition is in the synthetic panel (relative weights).
WEIGHTS = {"hypertension": 30, "hyperlipidemia": 25, "diabetes": 15, "osteoarthritis": 10}
ACUTE = [
    ("444814009", "Viral sinusitis (disorder)"),
    ("195662009", "Acute viral pharyngitis (disorder)"),
    ("10509002", "Acute bronchitis (disorder)"),
]
ENCOUNTERS = {
    "AMB": ("ambulatory", "185349003", "Encounter for check up (procedure)"),
    "EMER": ("emergency", "50849002", "Emergency room admission (procedure)"),
    "IMP": ("inpatient encounter", "32485007", "Hospital admission (procedure)"),
}
DRUG_WORDS = ("metformin", "lisinopril", "atorvastatin", "amlodipine", "furosemide", "sertraline")
GIVEN = ["Ana", "Ben", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lea"]
FAMILY = ["Ng", "Okafor", "Patel", "Quinn", "Rossi", "Silva", "Tanaka", "Umar", "Vega", "Weiss"]


@dataclass(frozen=True)
class Panel:
    folder: Path
    patients: int
    counts: dict[str, int]
    as_of: date


def _codebook() -> dict[str, Any]:
    conditions = mapping("chronic-conditions")["conditions"]
    sdoh = mapping("sdoh")
    drugs = mapping("drug-codes")["rxnorm_products"]
    products = sorted(
        (code, name)
        for code, name in drugs.items()
        if "Oral Tablet" in name and "[" not in name and name.split()[0].lower() in DRUG_WORDS
    )
    needs = [
        (key, spec)
        for key, spec in sdoh["domains"].items()
        if any(c["system"] == SNOMED for c in spec["codings"])
    ]
    keys = sorted(conditions)
    return {
        "conditions": conditions,
        "keys": keys,
        "weights": [WEIGHTS.get(k, 4) for k in keys],
        "products": products,
        "needs": needs,
        "sdoh_category": sdoh["condition"]["sdoh_category"],
        "health_concern": sdoh["condition"]["category"],
        "hrsn": _questionnaire_items(),
    }


def _questionnaire_items() -> list[dict[str, Any]]:
    path = profiles_dir() / "Questionnaire-ahc-hrsn-core.json"
    return json.loads(path.read_text(encoding="utf-8"))["item"]


def _dt(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Writer:
    def __init__(self, folder: Path, compress: bool) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, IO[bytes]] = {}
        self.counts = dict.fromkeys(TYPES, 0)
        suffix = ".ndjson.gz" if compress else ".ndjson"
        opener: Callable[..., Any] = gzip.open if compress else open
        for t in TYPES:
            self.files[t] = opener(folder / f"{t}{suffix}", "wb")

    def put(self, resource: dict[str, Any]) -> None:
        rt = resource["resourceType"]
        self.files[rt].write(orjson.dumps(resource) + b"\n")
        self.counts[rt] += 1

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def generate(
    folder: Path,
    patients: int,
    *,
    seed: int = 1,
    as_of: date | None = None,
    compress: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> Panel:
    """Write a panel of `patients` into folder/<Type>.ndjson (or .ndjson.gz)."""
    book = _codebook()
    day = as_of or date.today()
    end = datetime.combine(day, time(12, 0))
    rng = random.Random(seed)
    out = _Writer(folder, compress)
    try:
        for i in range(patients):
            _patient(out, rng, book, f"p{seed}-{i}", end)
            if on_progress and (i + 1) % 1000 == 0:
                on_progress(i + 1)
    finally:
        out.close()
    return Panel(folder, patients, out.counts, day)


def _patient(
    out: _Writer, rng: random.Random, book: dict[str, Any], pid: str, end: datetime
) -> None:
    ref = {"reference": f"Patient/{pid}"}
    birth = end.date() - timedelta(days=rng.randint(18 * 365, 95 * 365))
    out.put(
        {
            "resourceType": "Patient",
            "id": pid,
            "name": [{"family": rng.choice(FAMILY), "given": [rng.choice(GIVEN)]}],
            "gender": rng.choice(("female", "male")),
            "birthDate": birth.isoformat(),
        }
    )
    n_chronic = rng.choices((0, 1, 2, 3, 4), weights=(30, 25, 22, 15, 8))[0]
    keys = set(rng.choices(book["keys"], weights=book["weights"], k=n_chronic))
    for j, key in enumerate(sorted(keys)):
        spec = book["conditions"][key]
        if spec.get("snomed") and rng.random() < 0.5:
            code = str(rng.choice(spec["snomed"]))
            coding = {"system": SNOMED, "code": code, "display": spec["display"]}
        else:
            code, display = ICD10_CODES[key]
            coding = {"system": ICD10, "code": code, "display": display}
        status, verification = "active", "confirmed"
        roll = rng.random()
        if roll < 0.08:
            status = "resolved"
        elif roll < 0.11:
            verification = "entered-in-error"
        cond = _condition(pid, f"{pid}-c{j}", ref, coding, status, verification, end, rng)
        if status == "resolved":
            cond["abatementDateTime"] = _dt(end - timedelta(days=rng.randint(10, 300)))
        out.put(cond)
    if rng.random() < 0.3:
        code, display = rng.choice(ACUTE)
        coding = {"system": SNOMED, "code": code, "display": display}
        out.put(_condition(pid, f"{pid}-a", ref, coding, "resolved", "confirmed", end, rng))
    _social_needs(out, rng, book, pid, ref, end)
    _encounters(out, rng, pid, ref, end)
    _observations(out, rng, pid, ref, end)
    for k in range(min(len(keys), 3) if book["products"] else 0):
        code, name = rng.choice(book["products"])
        out.put(
            {
                "resourceType": "MedicationRequest",
                "id": f"{pid}-m{k}",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {
                    "coding": [{"system": RXNORM, "code": code, "display": name}],
                    "text": name,
                },
                "subject": ref,
                "authoredOn": _dt(end - timedelta(days=rng.randint(1, 400))),
            }
        )


def _condition(
    pid: str,
    cid: str,
    ref: dict[str, str],
    coding: dict[str, str],
    status: str,
    verification: str,
    end: datetime,
    rng: random.Random,
) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]},
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": verification}]},
        "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "problem-list-item"}]}],
        "code": {"coding": [coding], "text": coding["display"]},
        "subject": ref,
        "onsetDateTime": _dt(end - timedelta(days=rng.randint(200, 4000))),
        "recordedDate": _dt(end - timedelta(days=rng.randint(1, 200))),
    }


def _social_needs(
    out: _Writer,
    rng: random.Random,
    book: dict[str, Any],
    pid: str,
    ref: dict[str, str],
    end: datetime,
) -> None:
    if rng.random() >= 0.25:
        return
    when = end - timedelta(days=rng.randint(1, 120))
    items, answers = _hrsn_items(book["hrsn"], rng)
    out.put(
        {
            "resourceType": "QuestionnaireResponse",
            "id": f"{pid}-q",
            "questionnaire": HRSN,
            "status": "completed",
            "subject": ref,
            "authored": _dt(when),
            "item": items,
        }
    )
    food = (answers.get("88122-7") or {}).get("code")
    if food in (None, "LA28398-8") or rng.random() < 0.4:
        return
    key, spec = rng.choice(book["needs"])
    coding = next(c for c in spec["codings"] if c["system"] == SNOMED)
    status = "resolved" if rng.random() < 0.15 else "active"
    cond: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"{pid}-s",
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]},
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "unconfirmed"}]},
        "category": [
            {"coding": [dict(c) for c in book["health_concern"]]},
            {"coding": [dict(c) for c in book["sdoh_category"]]},
        ],
        "code": {"coding": [dict(coding)], "text": spec["display"]},
        "subject": ref,
        "recordedDate": _dt(when),
    }
    out.put(cond)


def _hrsn_items(
    items: list[dict[str, Any]], rng: random.Random
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Answers to every required item of the AHC HRSN screening (its answerOptions)."""
    out: list[dict[str, Any]] = []
    chosen: dict[str, dict[str, Any]] = {}
    for item in items:
        if item["type"] == "group":
            sub, found = _hrsn_items(item.get("item") or [], rng)
            chosen |= found
            out.append({"linkId": item["linkId"], "item": sub})
        elif item["type"] == "choice" and item.get("answerOption"):
            options = [o["valueCoding"] for o in item["answerOption"] if "valueCoding" in o]
            pick = options[-1] if rng.random() < 0.6 else rng.choice(options)
            chosen[item["linkId"]] = pick
            out.append({"linkId": item["linkId"], "answer": [{"valueCoding": dict(pick)}]})
    return out, chosen


def _encounters(
    out: _Writer, rng: random.Random, pid: str, ref: dict[str, str], end: datetime
) -> None:
    n = rng.randint(1, 3)
    for k in range(n):
        cls = rng.choices(("AMB", "EMER", "IMP"), weights=(70, 12, 18))[0]
        display, code, text = ENCOUNTERS[cls]
        back = rng.randint(0, 365)
        stop = end - timedelta(days=back, hours=rng.randint(0, 20))
        start = stop - timedelta(days=rng.randint(1, 6) if cls == "IMP" else 0, hours=3)
        status = "finished" if rng.random() < 0.95 else "in-progress"
        enc: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": f"{pid}-e{k}",
            "status": status,
            "class": {"system": ACT_CODE, "code": cls, "display": display},
            "type": [{"coding": [{"system": SNOMED, "code": code, "display": text}]}],
            "subject": ref,
            "period": {"start": _dt(start)},
        }
        if status == "finished":
            enc["period"]["end"] = _dt(stop)
        out.put(enc)


def _observations(
    out: _Writer, rng: random.Random, pid: str, ref: dict[str, str], end: datetime
) -> None:
    out.put(
        {
            "resourceType": "Observation",
            "id": f"{pid}-w",
            "status": "final",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
            "subject": ref,
            "effectiveDateTime": _dt(end - timedelta(days=rng.randint(1, 200))),
            "valueQuantity": {
                "value": round(rng.uniform(45, 130), 1),
                "unit": "kg",
                "system": UCUM,
                "code": "kg",
            },
        }
    )
    for k in range(rng.choices((0, 1, 2), weights=(55, 30, 15))[0]):
        total = min(27, int(rng.expovariate(1 / 6)))
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"{pid}-phq{k}",
            "status": rng.choices(("final", "amended", "preliminary"), weights=(85, 5, 10))[0],
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": "survey"}]}],
            "code": {
                "coding": [
                    {
                        "system": LOINC,
                        "code": "44261-6",
                        "display": "Patient Health Questionnaire 9 item (PHQ-9) total score "
                        "[Reported]",
                    }
                ]
            },
            "subject": ref,
            "effectiveDateTime": _dt(end - timedelta(days=rng.randint(1, 400))),
        }
        if rng.random() < 0.5:
            obs["valueQuantity"] = {
                "value": total,
                "unit": "{score}",
                "system": UCUM,
                "code": "{score}",
            }
        else:
            obs["valueInteger"] = total
        out.put(obs)
    if rng.random() < 0.06:
        out.put(
            {
                "resourceType": "Observation",
                "id": f"{pid}-adl",
                "status": "final",
                "category": [{"coding": [{"system": OBS_CATEGORY, "code": "survey"}]}],
                "code": {
                    "coding": [
                        {
                            "system": CARE_INTAKE,
                            "code": "adl-dependence",
                            "display": "Number of basic activities of daily living needing help",
                        }
                    ]
                },
                "subject": ref,
                "effectiveDateTime": _dt(end - timedelta(days=rng.randint(1, 100))),
                "valueInteger": rng.randint(0, 4),
            }
        )

"""LACE index of the risk of death or unplanned readmission within 30 days of discharge.

L length of stay, A acuity of the admission, C Charlson comorbidity index, E emergency
department visits in the 6 months before the admission (van Walraven et al., CMAJ 2010).
Points and thresholds come from `mappings/transitions.yaml`, Charlson categories from
`mappings/charlson.yaml`. `compute` is pure; `assess` gathers the inputs from a store.

The result is written as an Observation (with a Provenance naming its sources) coded in our
CodeSystem risk-score (no LOINC code
for the LACE index is used: none is known to us with certainty). Category `survey`
(observation-category: "assessment tool/survey instrument observations") is the HL7 category
for a scored instrument; LACE is an instrument scored from the record rather than from
answers, and none of the other categories (laboratory, exam, social-history...) fits better.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from fhircare.care.common import (
    add_duration,
    codings_of,
    fhir_datetime,
    mapping,
    parse_datetime,
    utcnow,
    with_profile,
)
from fhircare.store.base import Store
from fhircare.transitions.precision import span

Resource = dict[str, Any]

RISK_SCORE = "http://fhircare.org/fhir/CodeSystem/risk-score"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
ID_SYSTEM = "http://fhircare.org/fhir/sid/transitions"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
INACTIVE_CLINICAL = {"inactive", "remission", "resolved"}
EXCLUDED_VERIFICATION = {"refuted", "entered-in-error"}
DEAD_ENCOUNTER = {"cancelled", "entered-in-error"}

RISK_DISPLAY = {"high": "High risk", "moderate": "Moderate risk", "low": "Low risk"}


@dataclass(frozen=True)
class Lace:
    """The four LACE components (points) and what they were computed from."""

    los_days: int
    length: int
    acuity: int
    charlson: int
    comorbidity: int
    ed_visits: int
    emergency: int
    categories: tuple[str, ...] = ()
    condition_refs: tuple[str, ...] = ()
    ed_refs: tuple[str, ...] = ()
    thresholds: tuple[int, int] = field(default=(10, 5))

    @property
    def total(self) -> int:
        return self.length + self.acuity + self.comorbidity + self.emergency

    @property
    def risk(self) -> str:
        high, moderate = self.thresholds
        if self.total >= high:
            return "high"
        return "moderate" if self.total >= moderate else "low"


def _config() -> dict[str, Any]:
    return mapping("transitions")


def _stepped(table: list[list[int]], value: int) -> int:
    points = 0
    for minimum, pts in table:
        if value >= minimum:
            points = pts
    return points


def length_points(days: int) -> int:
    """L: <1 day 0, 1 1, 2 2, 3 3, 4-6 4, 7-13 5, >=14 7."""
    return _stepped(_config()["lace"]["length_of_stay"], max(days, 0))


def comorbidity_points(charlson: int) -> int:
    """C: Charlson 0-3 as is, >=4 5."""
    return _stepped(_config()["lace"]["comorbidity"], max(charlson, 0))


def ed_points(visits: int) -> int:
    """E: visits 0-3 as is, >=4 4."""
    return min(max(visits, 0), int(_config()["lace"]["ed_visits_max"]))


def _calendar_date(value: str, zone: tzinfo | None) -> date:
    """The calendar date a FHIR date or dateTime names: a date as written (it has no zone to
    convert from), a time in `zone` when given, else in its own offset."""
    moment = parse_datetime(value)
    if "T" not in value or zone is None:
        return moment.date()
    return moment.astimezone(zone).date()


def length_of_stay_days(encounter: Resource) -> int:
    """Calendar days between admission and discharge dates (local dates); 0 when unknown."""
    period = encounter.get("period") or {}
    if not period.get("start") or not period.get("end"):
        return 0
    end = period["end"]
    zone = parse_datetime(end).tzinfo if "T" in end else None
    days = _calendar_date(end, zone) - _calendar_date(period["start"], zone)
    return max(days.days, 0)


# ---- Charlson ---------------------------------------------------------------------------


def _is_active(condition: Resource) -> bool:
    clinical = {c for _, c in codings_of(condition.get("clinicalStatus") or {})}
    verification = {c for _, c in codings_of(condition.get("verificationStatus") or {})}
    return not (clinical & INACTIVE_CLINICAL or verification & EXCLUDED_VERIFICATION)


def condition_categories(condition: Resource) -> set[str]:
    """Charlson categories a Condition's codings fall in (ICD-10-CM prefix or SNOMED CT)."""
    found: set[str] = set()
    cats = mapping("charlson")["categories"]
    for system, code in codings_of(condition.get("code") or {}):
        if not code:
            continue
        if system in (ICD10CM, ICD10):
            flat = code.replace(".", "").upper()
            found |= {
                k for k, c in cats.items() if any(flat.startswith(p) for p in c["icd10_prefixes"])
            }
        elif system == SNOMED:
            found |= {k for k, c in cats.items() if code in (c.get("snomed") or [])}
    return found


def charlson_index(conditions: list[Resource]) -> tuple[int, dict[str, list[str]]]:
    """The Charlson index of the active Conditions and, per category, the Conditions in it.

    Each category counts once; a category's `supersedes` removes the milder one.
    """
    cats = mapping("charlson")["categories"]
    by_cat: dict[str, list[str]] = {}
    for cond in conditions:
        if cond.get("resourceType") != "Condition" or not _is_active(cond):
            continue
        for cat in condition_categories(cond):
            by_cat.setdefault(cat, []).append(f"Condition/{cond.get('id')}")
    for cat in list(by_cat):
        for weaker in cats[cat].get("supersedes") or []:
            by_cat.pop(weaker, None)
    return sum(int(cats[c]["weight"]) for c in by_cat), dict(sorted(by_cat.items()))


# ---- acuity and emergency visits --------------------------------------------------------


def _class_code(encounter: Resource) -> str | None:
    cls = encounter.get("class") or {}
    return cls.get("code") if cls.get("system", ACT_CODE) == ACT_CODE else None


def _has_any(value: Any, table: dict[str, list[str]]) -> bool:
    return any(code in (table.get(system) or []) for system, code in codings_of(value or {}))


def _start(encounter: Resource) -> datetime | None:
    value = (encounter.get("period") or {}).get("start")
    return parse_datetime(value) if value else None


def _end(encounter: Resource) -> datetime | None:
    value = (encounter.get("period") or {}).get("end")
    return parse_datetime(value) if value else None


def _part_of(a: Resource, b: Resource) -> bool:
    ref = (a.get("partOf") or {}).get("reference", "")
    return bool(b.get("id")) and ref.split("/_history/")[0].endswith(f"Encounter/{b['id']}")


def preceding_emergency(encounter: Resource, encounters: list[Resource]) -> Resource | None:
    """The emergency encounter that led to this admission: linked by partOf, or ending at most
    `preceding_emergency_hours` before the admission start."""
    hours = _config()["lace"]["preceding_emergency_hours"]
    admitted = (encounter.get("period") or {}).get("start")
    for other in encounters:
        if other.get("id") == encounter.get("id") or _class_code(other) != "EMER":
            continue
        if other.get("status") in DEAD_ENCOUNTER:
            continue
        if _part_of(other, encounter) or _part_of(encounter, other):
            return other
        ended = (other.get("period") or {}).get("end")
        if admitted and ended:
            # at the precision given: an ED visit dated the day before may have ended at 23:59
            adm, end = span(admitted), span(ended)
            if end.hi > adm.lo - timedelta(hours=hours) and end.lo <= adm.hi + timedelta(hours=1):
                return other
    return None


def is_emergent(encounter: Resource, encounters: list[Resource]) -> bool:
    """A: emergency class, priority, admit source or admission type; or a preceding ED visit."""
    rules = _config()["emergent"]
    if _class_code(encounter) in rules["classes"]:
        return True
    if _has_any(encounter.get("priority"), rules["priority"]):
        return True
    hosp = encounter.get("hospitalization") or {}
    if _has_any(hosp.get("admitSource"), rules["admit_source"]):
        return True
    if any(_has_any(t, rules["type"]) for t in encounter.get("type") or []):
        return True
    return preceding_emergency(encounter, encounters) is not None


def prior_ed_visits(encounter: Resource, encounters: list[Resource]) -> list[Resource]:
    """Emergency encounters in the months before the admission (not the one leading to it)."""
    start = _start(encounter) or _end(encounter)
    if start is None:
        return []
    since = add_duration(start, -int(_config()["lace"]["ed_visits_months"]), "mo")
    leading = preceding_emergency(encounter, encounters)
    out = []
    for other in encounters:
        if other.get("id") in (encounter.get("id"), (leading or {}).get("id")):
            continue
        if _class_code(other) != "EMER" or other.get("status") in DEAD_ENCOUNTER:
            continue
        when = _start(other) or _end(other)
        if when is not None and since <= when < start:
            out.append(other)
    return sorted(out, key=lambda e: e.get("id", ""))


# ---- the score ------------------------------------------------------------------------


def compute(encounter: Resource, conditions: list[Resource], encounters: list[Resource]) -> Lace:
    """LACE from the discharge Encounter, the patient's Conditions and other Encounters."""
    cfg = _config()["lace"]
    days = length_of_stay_days(encounter)
    index, by_cat = charlson_index(conditions)
    visits = prior_ed_visits(encounter, encounters)
    refs = sorted({r for rs in by_cat.values() for r in rs})
    return Lace(
        los_days=days,
        length=length_points(days),
        acuity=int(cfg["acuity_points"]) if is_emergent(encounter, encounters) else 0,
        charlson=index,
        comorbidity=comorbidity_points(index),
        ed_visits=len(visits),
        emergency=ed_points(len(visits)),
        categories=tuple(by_cat),
        condition_refs=tuple(refs),
        ed_refs=tuple(f"Encounter/{e['id']}" for e in visits if e.get("id")),
        thresholds=(int(cfg["high_threshold"]), int(cfg["moderate_threshold"])),
    )


def assess(store: Store, encounter: Resource, patient_ref: str) -> Lace:
    """LACE with the patient's Conditions and Encounters read from the store."""
    conditions = store.search("Condition", [("patient", patient_ref)])
    encounters = store.search("Encounter", [("patient", patient_ref)])
    return compute(encounter, conditions, encounters)


def _coding(code: str, display: str) -> Resource:
    return {"system": RISK_SCORE, "code": code, "display": display}


def _component(code: str, display: str, value: int, *, days: bool = False) -> Resource:
    comp: Resource = {"code": {"coding": [_coding(code, display)], "text": display}}
    if days:
        comp["valueQuantity"] = {"value": value, "unit": "d", "system": UCUM, "code": "d"}
    else:
        comp["valueInteger"] = value
    return comp


def observation_id(encounter_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ID_SYSTEM}|{encounter_id}/lace"))


def observation(
    lace: Lace, encounter: Resource, patient_ref: str, *, now: datetime | None = None
) -> Resource:
    """The LACE Observation (deterministic id from the encounter id)."""
    enc_id = encounter["id"]
    effective = (encounter.get("period") or {}).get("end") or fhir_datetime(utcnow(now))
    risk = lace.risk
    obs: Resource = {
        "resourceType": "Observation",
        "id": observation_id(enc_id),
        "identifier": [{"system": ID_SYSTEM, "value": f"{enc_id}/lace"}],
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "survey", "display": "Survey"}]}],
        "code": {"coding": [_coding("lace-index", "LACE index")], "text": "LACE index"},
        "subject": {"reference": patient_ref},
        "encounter": {"reference": f"Encounter/{enc_id}"},
        "effectiveDateTime": effective,
        "issued": utcnow(now).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "valueInteger": lace.total,
        "interpretation": [
            {"coding": [_coding(f"{risk}-risk", RISK_DISPLAY[risk])], "text": RISK_DISPLAY[risk]}
        ],
        "component": [
            _component("lace-length-of-stay", "LACE L: length of stay points", lace.length),
            _component("lace-acuity", "LACE A: acuity of admission points", lace.acuity),
            _component("lace-comorbidity", "LACE C: comorbidity points", lace.comorbidity),
            _component("lace-ed-visits", "LACE E: emergency visits points", lace.emergency),
            _component("length-of-stay", "Length of stay", lace.los_days, days=True),
            _component("charlson-index", "Charlson comorbidity index", lace.charlson),
            _component("ed-visits-6-months", "Emergency visits in 6 months", lace.ed_visits),
        ],
    }
    if lace.categories:
        names = mapping("charlson")["categories"]
        labels = ", ".join(names[c]["display"] for c in lace.categories)
        obs["note"] = [{"text": f"Charlson categories: {labels}"}]
    return obs


def provenance(lace: Lace, obs: Resource, *, now: datetime | None = None) -> Resource:
    """Where the score came from: the Encounter, Conditions and emergency visits it used.

    Observation.derivedFrom may only point to Observations, QuestionnaireResponses and
    documents, so the sources are Provenance entities (role `source`) instead.
    """
    enc_ref = obs["encounter"]["reference"]
    sources = (enc_ref, *lace.condition_refs, *lace.ed_refs)
    prov: Resource = {
        "resourceType": "Provenance",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ID_SYSTEM}|{obs['id']}/provenance")),
        "target": [{"reference": f"Observation/{obs['id']}"}],
        "recorded": fhir_datetime(utcnow(now)),
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                    "code": "CREATE",
                    "display": "create",
                }
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": PARTICIPANT_TYPE,
                            "code": "assembler",
                            "display": "Assembler",
                        }
                    ]
                },
                "who": {"display": "fhircare discharge processing"},
            }
        ],
        "entity": [{"role": "source", "what": {"reference": r}} for r in sources],
    }
    return with_profile(prov, "fhircare-provenance")

"""Chronic Care Management eligibility and the high-risk flag.

CCM eligibility: two or more distinct chronic conditions (expected to last 12+ months) from
`mappings/chronic-conditions.yaml`, active on the patient's problem list. High risk: any of
3+ chronic conditions, a hospital discharge within 30 days, an active social-needs (SDOH)
Condition, a latest PHQ-9 total of 10 or more, a behavioural-health condition, or ADL
dependence. Every decision carries its reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fhircare.care.common import Resource, codings_of, mapping, parse_datetime, utcnow
from fhircare.store.base import Store

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
INACTIVE = {"inactive", "remission", "resolved"}
NOT_VERIFIED = {"refuted", "entered-in-error"}


@dataclass
class Eligibility:
    patient: str
    ccm_eligible: bool
    high_risk: bool
    chronic_conditions: list[str] = field(default_factory=list)  # condition keys
    behavioural: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why high risk (or not eligible)

    @property
    def tier(self) -> str:
        """Follow-up risk tier (mappings/followup.yaml): high, moderate or low."""
        if self.high_risk:
            return "high"
        return "moderate" if self.ccm_eligible else "low"


def matching_condition_keys(condition: Resource) -> set[str]:
    """The chronic-condition keys a Condition's code matches (ICD-10-CM prefix / SNOMED)."""
    out: set[str] = set()
    codes = codings_of(condition.get("code"))
    for key, spec in mapping("chronic-conditions")["conditions"].items():
        prefixes = [p.replace(".", "").upper() for p in spec.get("icd10_prefixes") or []]
        snomed = {str(s) for s in spec.get("snomed") or []}
        for system, code in codes:
            if not code:
                continue
            if (
                system == ICD10
                and any(code.replace(".", "").upper().startswith(p) for p in prefixes)
                or system == SNOMED
                and code in snomed
            ):
                out.add(key)
    return out


def _is_active(cond: Resource) -> bool:
    clinical = (
        {c for _, c in codings_of(cond.get("clinicalStatus"))}
        if cond.get("clinicalStatus")
        else set()
    )
    verification = (
        {c for _, c in codings_of(cond.get("verificationStatus"))}
        if cond.get("verificationStatus")
        else set()
    )
    if clinical & INACTIVE or verification & NOT_VERIFIED:
        return False
    return not cond.get("abatementDateTime") and not cond.get("abatementPeriod")


def _number(obs: Resource) -> float | None:
    if "valueQuantity" in obs:
        return obs["valueQuantity"].get("value")
    if "valueInteger" in obs:
        return float(obs["valueInteger"])
    return None


def _effective(obs: Resource) -> str:
    return (
        obs.get("effectiveDateTime")
        or (obs.get("effectivePeriod") or {}).get("start")
        or obs.get("issued")
        or (obs.get("meta") or {}).get("lastUpdated", "")
    )


def _latest(observations: list[Resource]) -> Resource | None:
    final = [o for o in observations if o.get("status") in ("final", "amended", "corrected")]
    return max(
        final,
        key=lambda o: (
            parse_datetime(_effective(o))
            if _effective(o)
            else datetime.min.replace(tzinfo=utcnow().tzinfo)
        ),
        default=None,
    )


def assess_eligibility(
    store: Store, patient_ref: str, *, now: datetime | None = None
) -> Eligibility:
    """CCM eligibility and high-risk flag of a patient, with reasons."""
    at = utcnow(now)
    cfg = mapping("chronic-conditions")
    conditions_cfg: dict[str, Any] = cfg["conditions"]
    risk = cfg["high_risk"]
    conditions = [c for c in store.search("Condition", [("patient", patient_ref)]) if _is_active(c)]
    keys: set[str] = set()
    for cond in conditions:
        keys |= matching_condition_keys(cond)
    chronic = sorted(keys)
    behavioural = sorted(k for k in chronic if conditions_cfg[k].get("behavioural"))
    eligible = len(chronic) >= 2
    reasons: list[str] = []
    names = ", ".join(conditions_cfg[k]["display"] for k in chronic)
    if len(chronic) >= risk["min_chronic_conditions"]:
        reasons.append(f"{len(chronic)} chronic conditions ({names})")
    # recent discharge
    since = at - timedelta(days=risk["recent_discharge_days"])
    classes = set(risk["discharge_classes"])
    for enc in store.search("Encounter", [("patient", patient_ref), ("status", "finished")]):
        end = (enc.get("period") or {}).get("end")
        cls = (enc.get("class") or {}).get("code")
        if end and cls in classes and since <= parse_datetime(end) <= at:
            reasons.append(f"discharged {end[:10]} (within {risk['recent_discharge_days']} days)")
            break
    # social needs
    sdoh = {(c["system"], c["code"]) for c in risk["sdoh_categories"]}
    for cond in conditions:
        if set(codings_of(cond.get("category") or [])) & sdoh:
            text = (cond.get("code") or {}).get("text") or next(
                (
                    c.get("display")
                    for c in (cond.get("code") or {}).get("coding", [])
                    if c.get("display")
                ),
                "social need",
            )
            reasons.append(f"social need: {text}")
    # PHQ-9
    phq = risk["phq9_total"]
    latest = _latest(
        store.search(
            "Observation", [("patient", patient_ref), ("code", f"{phq['system']}|{phq['code']}")]
        )
    )
    if latest is not None and (_number(latest) or 0) >= phq["min"]:
        reasons.append(f"PHQ-9 total {_number(latest):g} (>= {phq['min']})")
    if behavioural:
        reasons.append(
            "behavioural-health condition: "
            + ", ".join(conditions_cfg[k]["display"] for k in behavioural)
        )
    # ADL dependence
    adl = risk["adl_dependence"]
    adl_obs: list[Resource] = []
    for c in adl["codes"]:
        adl_obs += store.search(
            "Observation", [("patient", patient_ref), ("code", f"{c['system']}|{c['code']}")]
        )
    latest_adl = _latest(adl_obs)
    if latest_adl is not None:
        count = _number(latest_adl)
        if latest_adl.get("valueBoolean") is True or (
            count is not None and count >= adl["min_count"]
        ):
            reasons.append(
                "ADL dependence"
                + (f" ({count:g} activities need help)" if count is not None else "")
            )
    if not eligible:
        why = f"{len(chronic)} chronic condition(s)" + (f" ({names})" if names else "")
        reasons_not = [f"not CCM eligible: {why}; 2 or more are needed"]
    else:
        reasons_not = []
    return Eligibility(
        patient=patient_ref,
        ccm_eligible=eligible,
        high_risk=bool(reasons),
        chronic_conditions=chronic,
        behavioural=behavioural,
        reasons=reasons + reasons_not,
    )

"""FHIR R4 resources describing a reconciliation result.

Outputs (as (fullUrl, resource) pairs, referencing each other by urn:uuid):
- one List, mode `changes` ("what was added and removed during an encounter"; only that mode
  allows `entry.deleted`), code LOINC 75311-1 Discharge medications Narrative, one entry per
  item flagged with HL7 list-item-flag (01 Unchanged, 02 Changed, 04 Prescribed, 05 Ceased,
  06 Suspended) and our medrec-status code;
- one DetectedIssue per issue: v3-ActCode DUPTHPGEN / DUPTHPCLS (children of DUPTHPY) for
  duplicate therapy and DRG (Drug Interaction Alert) for a harmful combination; v3-ActCode has
  no concept for omission, high-alert change, unverifiable or unidentified drug, so those use
  our CodeSystem medrec-issue only;
- one Task per issue, code SNOMED CT 430193006 Medication reconciliation (procedure) (the FHIR
  task-code system only has workflow verbs such as fulfill, which do not describe a review);
- one MedicationStatement per item (active / on-hold / stopped).

Idempotency: every resource carries identifier http://fhircare.org/fhir/sid/medrec
`<encounter-id>/<kind>/<n>`, a meta.tag naming the encounter, and a fullUrl derived from that
identifier (uuid5), so re-processing the same discharge yields the same keys and can replace
rather than duplicate (conditional update on identifier, or delete by tag then create).
"""

from __future__ import annotations

import uuid
from typing import Any

from fhircare.transitions.medrec import (
    CHANGED,
    CONTINUED,
    DISCONTINUED,
    NEW,
    RecIssue,
    RecItem,
    ReconciliationResult,
)

Resource = dict[str, Any]

ID_SYSTEM = "http://fhircare.org/fhir/sid/medrec"
TAG_SYSTEM = "http://fhircare.org/fhir/CodeSystem/medrec-encounter"
STATUS_SYSTEM = "http://fhircare.org/fhir/CodeSystem/medrec-status"
ISSUE_SYSTEM = "http://fhircare.org/fhir/CodeSystem/medrec-issue"
LIST_ITEM_FLAG = "http://terminology.hl7.org/CodeSystem/list-item-flag"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
MS_CATEGORY = "http://terminology.hl7.org/CodeSystem/medication-statement-category"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"

_FLAGS = {
    CONTINUED: ("01", "Unchanged"),
    CHANGED: ("02", "Changed"),
    NEW: ("04", "Prescribed"),
    DISCONTINUED: ("05", "Ceased"),
}
_ISSUE_DISPLAY = {
    "duplicate-therapy": "Duplicate therapy",
    "omission": "Omitted at discharge without a recorded stop",
    "high-risk": "High-alert medication started or changed",
    "unverifiable": "Dose, frequency or route cannot be compared",
    "unmatched": "Medication not identified",
    "interaction": "Drug interaction",
}
_PRIORITY = {"high": "urgent", "moderate": "routine", "low": "routine"}


def _local_id(ref: str) -> str:
    return ref.rsplit("/", 1)[-1].removeprefix("urn:uuid:").removeprefix("urn:oid:")


def _full_url(value: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{ID_SYSTEM}|{value}')}"


def _stamp(resource: Resource, value: str, enc_id: str) -> tuple[str, Resource]:
    resource["meta"] = {"tag": [{"system": TAG_SYSTEM, "code": enc_id}]}
    resource["identifier"] = [{"system": ID_SYSTEM, "value": value}]
    return _full_url(value), resource


def _flag(item: RecItem) -> dict[str, Any]:
    code, display = ("06", "Suspended") if "held" in item.changes else _FLAGS[item.status]
    return {
        "coding": [
            {"system": LIST_ITEM_FLAG, "code": code, "display": display},
            {"system": STATUS_SYSTEM, "code": item.status},
        ],
        "text": item.status + (f" ({', '.join(item.changes)})" if item.changes else ""),
    }


def _issue_code(issue: RecIssue) -> dict[str, Any]:
    codings = []
    if issue.type == "duplicate-therapy":
        code, display = (
            ("DUPTHPGEN", "duplicate generic alert")
            if issue.basis == "same-ingredient"
            else ("DUPTHPCLS", "duplicate therapeutic class alert")
        )
        codings.append({"system": ACT_CODE, "code": code, "display": display})
    elif issue.type == "interaction":
        codings.append({"system": ACT_CODE, "code": "DRG", "display": "Drug Interaction Alert"})
    codings.append(
        {"system": ISSUE_SYSTEM, "code": issue.type, "display": _ISSUE_DISPLAY[issue.type]}
    )
    return {"coding": codings, "text": _ISSUE_DISPLAY[issue.type]}


def _item_ref(item: RecItem) -> str:
    return item.after or item.before or ""


def _statement(
    item: RecItem, patient_ref: str, encounter_ref: str, now: str, note: str | None
) -> Resource:
    info = item.after_info or item.before_info
    concept = (info.concept if info else None) or {"text": item.ingredient}
    if item.status == DISCONTINUED:
        status = "stopped"
    elif "held" in item.changes:
        status = "on-hold"
    else:
        status = "active"
    ms: Resource = {
        "resourceType": "MedicationStatement",
        "status": status,
        "category": {
            "coding": [{"system": MS_CATEGORY, "code": "community", "display": "Community"}]
        },
        "medicationCodeableConcept": concept,
        "subject": {"reference": patient_ref},
        "context": {"reference": encounter_ref},
        "dateAsserted": now,
        "derivedFrom": [{"reference": r} for r in (item.before, item.after) if r],
    }
    if status == "stopped" and item.stop_reason:
        ms["statusReason"] = [{"text": item.stop_reason}]
    if info is not None and info.dosage:
        ms["dosage"] = info.dosage
    if note:
        ms["note"] = [{"text": note}]
    return ms


def build_outputs(
    result: ReconciliationResult,
    patient_ref: str,
    encounter_ref: str,
    *,
    now: str,
) -> list[tuple[str, Resource]]:
    """FHIR resources for a reconciliation, as (fullUrl, resource) pairs (no ids)."""
    enc_id = _local_id(encounter_ref)
    out: list[tuple[str, Resource]] = []
    entries = []
    for item in result.items:
        entry: Resource = {
            "flag": _flag(item)
        }  # no entry.date: lst-3 allows it in "working" lists only
        entry["item"] = {"reference": _item_ref(item), "display": item.ingredient}
        if item.status == DISCONTINUED:
            entry["deleted"] = True
        entries.append(entry)
    med_list: Resource = {
        "resourceType": "List",
        "status": "current",
        "mode": "changes",
        "title": "Reconciled discharge medications",
        "code": {
            "coding": [
                {"system": LOINC, "code": "75311-1", "display": "Discharge medications Narrative"}
            ]
        },
        "subject": {"reference": patient_ref},
        "encounter": {"reference": encounter_ref},
        "date": now,
    }
    if entries:
        med_list["entry"] = entries
    else:
        med_list["emptyReason"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/list-empty-reason",
                    "code": "nilknown",
                    "display": "Nil Known",
                }
            ]
        }
    out.append(_stamp(med_list, f"{enc_id}/list", enc_id))

    for n, issue in enumerate(result.issues):
        implicated = [
            {"reference": _item_ref(result.items[i]), "display": result.items[i].ingredient}
            for i in issue.items
            if _item_ref(result.items[i])
        ]
        di: Resource = {
            "resourceType": "DetectedIssue",
            "status": "final",
            "code": _issue_code(issue),
            "severity": issue.severity,
            "patient": {"reference": patient_ref},
            "identifiedDateTime": now,
            "detail": issue.detail,
        }
        if implicated:
            di["implicated"] = implicated
        di_url, di = _stamp(di, f"{enc_id}/issue/{n}", enc_id)
        out.append((di_url, di))
        task: Resource = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "priority": _PRIORITY[issue.severity],
            "code": {
                "coding": [
                    {
                        "system": SNOMED,
                        "code": "430193006",
                        "display": "Medication reconciliation (procedure)",
                    }
                ],
                "text": "Review medication reconciliation issue",
            },
            "description": f"Review {issue.type} ({issue.severity}): {issue.detail}",
            "focus": {"reference": di_url},
            "for": {"reference": patient_ref},
            "encounter": {"reference": encounter_ref},
            "authoredOn": now,
        }
        out.append(_stamp(task, f"{enc_id}/task/{n}", enc_id))

    for n, item in enumerate(result.items):
        note = "; ".join(item.notes) if item.notes else None
        ms = _statement(item, patient_ref, encounter_ref, now, note)
        out.append(_stamp(ms, f"{enc_id}/med/{n}", enc_id))
    return out

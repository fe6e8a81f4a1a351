"""Referrals: a ServiceRequest plus a fulfilment Task owned by the performing Organization.

`build_referral` is pure: it returns `(fullUrl, resource)` pairs whose resources already carry
their ids (`urn:uuid:<id>` full URLs) and reference each other as `Type/id`, so a caller
commits them with `common.create_op` (create keeping the id) inside its own single commit.
Referral kinds, their codes and performer types come from `mappings/referrals.yaml`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fhircare.care.common import (
    REFERRAL_KIND,
    TASK_CODE,
    Resource,
    coding,
    fhir_datetime,
    mapping,
    new_id,
    ref,
    split_ref,
    utcnow,
    with_profile,
)
from fhircare.fhir.errors import Unprocessable
from fhircare.store.base import Store

ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"


def referral_kinds() -> dict[str, dict[str, Any]]:
    """Every referral kind of `mappings/referrals.yaml`, by id."""
    return mapping("referrals")["kinds"]


def referral_code(kind: str, override: Resource | None = None) -> Resource:
    """The ServiceRequest.code of a kind: the standard coding (when confirmed) + our own."""
    spec = _kind(kind)
    if override:
        out = {"coding": list(override.get("coding") or []), "text": override.get("text")}
    else:
        std = spec.get("code")
        out = {"coding": [coding(std["system"], std["code"], std.get("display"))] if std else []}
        out["text"] = spec["display"]
    if not any(c.get("system") == REFERRAL_KIND for c in out["coding"]):
        out["coding"].append(coding(REFERRAL_KIND, kind, spec["display"]))
    if not out.get("text"):
        out["text"] = spec["display"]
    return out


def _kind(kind: str) -> dict[str, Any]:
    kinds = referral_kinds()
    if kind not in kinds:
        raise Unprocessable(
            f"Unknown referral kind '{kind}' (known: {', '.join(sorted(kinds))})",
            expression=["ServiceRequest.code"],
        )
    return kinds[kind]


def find_performer(store: Store, kind: str) -> str | None:
    """An active Organization offering this referral kind (Organization.type coded with our
    referral-kind CodeSystem), else None: the referral then waits for the care manager."""
    _kind(kind)
    found = store.search("Organization", [("type", f"{REFERRAL_KIND}|{kind}")])
    found = [o for o in found if o.get("active", True)]
    found.sort(key=lambda o: o.get("name") or o["id"])
    return f"Organization/{found[0]['id']}" if found else None


def build_referral(
    patient_ref: str,
    kind: str,
    *,
    reason_refs: list[str] | None = None,
    requester: str | None = None,
    now: datetime | None = None,
    performer: str | None = None,
    code: Resource | None = None,
    encounter_ref: str | None = None,
    based_on: list[str] | None = None,
    note: str | None = None,
) -> list[tuple[str, Resource]]:
    """A referral of `kind` for the patient: [(fullUrl, ServiceRequest), (fullUrl, Task)].

    ServiceRequest: status active, intent order, category clinical/SDOH, code per the mapping
    (or `code`), reasonReference, performer. Task: status requested, intent order, code
    task-code `fulfill`, focus the ServiceRequest, owner the performer (unassigned when None),
    due date (restriction.period.end) `due_days` of the kind after `now`.
    """
    split_ref(patient_ref, "Patient")
    spec = _kind(kind)
    at = utcnow(now)
    cats = mapping("referrals")["categories"][spec["category"]]
    sr_id, task_id = new_id(), new_id()
    sr: Resource = {
        "resourceType": "ServiceRequest",
        "id": sr_id,
        "status": "active",
        "intent": "order",
        "category": [{"coding": [coding(c["system"], c["code"], c.get("display")) for c in cats]}],
        "code": referral_code(kind, code),
        "subject": {"reference": patient_ref},
        "authoredOn": fhir_datetime(at),
    }
    if encounter_ref:
        sr["encounter"] = {"reference": encounter_ref}
    if based_on:
        sr["basedOn"] = [{"reference": r} for r in based_on]
    if requester:
        sr["requester"] = {"reference": requester}
    if performer:
        sr["performer"] = [{"reference": performer}]
    if reason_refs:
        sr["reasonReference"] = [{"reference": r} for r in reason_refs]
    if note:
        sr["note"] = [{"text": note}]
    task: Resource = {
        "resourceType": "Task",
        "id": task_id,
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {
            "coding": [coding(TASK_CODE, "fulfill", "Fulfill the focal request")],
            "text": f"Fulfil: {sr['code']['text']}",
        },
        "description": sr["code"]["text"],
        "focus": ref("ServiceRequest", sr_id),
        "for": {"reference": patient_ref},
        "authoredOn": fhir_datetime(at),
        "lastModified": fhir_datetime(at),
        "restriction": {
            "period": {"end": fhir_datetime(at + timedelta(days=spec.get("due_days", 14)))}
        },
    }
    if encounter_ref:
        task["encounter"] = {"reference": encounter_ref}
    if requester:
        task["requester"] = {"reference": requester}
    if performer:
        task["owner"] = {"reference": performer}
    if reason_refs:
        task["reasonReference"] = {"reference": reason_refs[0]}
    with_profile(sr, "fhircare-servicerequest")
    with_profile(task, "fhircare-task")
    return [(f"urn:uuid:{sr_id}", sr), (f"urn:uuid:{task_id}", task)]


def is_referral_task(task: Resource) -> bool:
    """A fulfilment Task whose focus is a ServiceRequest."""
    codes = {(c.get("system"), c.get("code")) for c in (task.get("code") or {}).get("coding", [])}
    focus = (task.get("focus") or {}).get("reference", "")
    return (TASK_CODE, "fulfill") in codes and focus.startswith("ServiceRequest/")

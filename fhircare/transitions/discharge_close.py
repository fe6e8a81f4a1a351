"""Closing what a discharge opened, when the discharge is cancelled or the patient dies.

What each output becomes: the status in its own R4 value set that says "no longer applies", a
note saying why where the resource has one, and one Provenance naming every version changed
and the Encounter or Patient version that caused it (activity v3-DataOperation MODIFYSTATUS).

* Task not started (draft, requested, received, accepted, ready): cancelled, statusReason;
* Task worked on (in-progress, on-hold): kept, and a review Task asks a person to decide;
  a completed Task likewise when the discharge is cancelled (done for a discharge that did
  not happen), kept as it is when the patient died;
* CarePlan and ServiceRequest revoked, Goal cancelled, CareTeam inactive (each with a note);
  a CarePlan that another discharge's open Tasks were added to is left active;
* only when the discharge is cancelled (the records were about a discharge that did not
  happen; a death leaves them true): the reconciliation List retired, the LACE Observation
  and DetectedIssues cancelled (R4: cancelled rather than entered-in-error once real-world
  work may have followed), MedicationStatements entered-in-error.

R4 List has no "superseded" status: `retired` is its own definition of a list that is old and
no longer accurate, which a reconciliation of a cancelled discharge is; `entered-in-error`
("never accurate") would be false, since it was accurate for the lists it compared. Nothing is
deleted and every change is a new version, so the history shows what was open before.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhircare.care.common import CARE_TASK, fhir_datetime, mapping, with_profile
from fhircare.care.tasks import apply_status
from fhircare.fhir.errors import FhirError
from fhircare.fhir.references import parse_local
from fhircare.store.base import Store, WriteOp
from fhircare.transitions import discharge_marker as marker_mod
from fhircare.transitions.business_days import business_deadline, parse_holidays
from fhircare.transitions.medrec_fhir import ID_SYSTEM as MEDREC_ID_SYSTEM

Resource = dict[str, Any]

ID_SYSTEM = "http://fhircare.org/fhir/sid/transitions"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

NOT_STARTED = frozenset({"draft", "requested", "received", "accepted", "ready"})
WORKED_ON = frozenset({"in-progress", "on-hold"})


@dataclass(frozen=True)
class Closing:
    """Why outputs are being closed: `event` is "cancelled" or "deceased"."""

    event: str
    reason: str  # sentence written on each closed output
    cause_ref: str  # the versioned Encounter or Patient reference that caused it
    retract: bool  # also withdraw the records (List, LACE, DetectedIssue, MedicationStatement)


@dataclass
class Closed:
    """What a closing wrote (for the marker, the log and the ACK)."""

    ops: list[WriteOp] = field(default_factory=list)
    cancelled: int = 0
    reviews: int = 0
    withdrawn: int = 0

    def summary(self) -> dict[str, int]:
        return {"cancelled": self.cancelled, "reviews": self.reviews, "withdrawn": self.withdrawn}


def _review_spec() -> dict[str, Any]:
    return mapping("transitions")["review_task"]


def _read(store: Store, ref: str) -> Resource | None:
    local = parse_local(ref)
    if local is None or not store.exists(local[0], local[1]):
        return None
    try:
        return store.read(local[0], local[1])
    except FhirError:
        return None


def _with_note(resource: Resource, text: str) -> Resource:
    notes = list(resource.get("note") or [])
    if not any(n.get("text") == text for n in notes):
        notes.append({"text": text})
    resource["note"] = notes
    return resource


def _copy(resource: Resource) -> Resource:
    """A resource without its server-kept meta (keeps profiles and tags)."""
    out = {k: v for k, v in resource.items() if k != "meta"}
    meta = {k: v for k, v in (resource.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}  # fmt: skip
    if meta:
        out["meta"] = meta
    return out


# status changes per type: (current statuses that change, new status, has a note element)
_RECORDS: dict[str, tuple[str, frozenset[str], str, bool]] = {
    "CarePlan": ("status", frozenset({"draft", "active", "on-hold"}), "revoked", True),
    "ServiceRequest": ("status", frozenset({"draft", "active", "on-hold"}), "revoked", True),
    "Goal": (
        "lifecycleStatus",
        frozenset({"proposed", "planned", "accepted", "active", "on-hold"}),
        "cancelled",
        True,
    ),
    "CareTeam": ("status", frozenset({"proposed", "active", "suspended"}), "inactive", True),
}
_RETRACTED: dict[str, tuple[str, frozenset[str], str, bool]] = {
    "List": ("status", frozenset({"current"}), "retired", True),
    "Observation": (
        "status",
        frozenset({"registered", "preliminary", "final", "amended", "corrected"}),
        "cancelled",
        True,
    ),
    "DetectedIssue": (
        "status",
        frozenset({"registered", "preliminary", "final", "amended", "corrected"}),
        "cancelled",
        False,
    ),
    "MedicationStatement": (
        "status",
        frozenset(
            {"active", "completed", "intended", "stopped", "on-hold", "unknown", "not-taken"}
        ),
        "entered-in-error",
        True,
    ),
}


def close_ops(
    store: Store,
    refs: list[str],
    closing: Closing,
    *,
    key: str,
    owner: str | None,
    now: datetime,
) -> Closed:
    """The writes that close `refs` (what one discharge opened) for `closing`.

    `key` names the discharge episode in the ids of the review Tasks and the Provenance, so
    running it again finds them and writes nothing. `owner` is who reviews Tasks whose own
    owner is unknown.
    """
    out = Closed()
    changed: list[tuple[Resource, Resource]] = []  # (stored, new)
    tables = dict(_RECORDS)
    if closing.retract:
        tables.update(_RETRACTED)
    for ref in refs:
        stored = _read(store, ref)
        if stored is None:
            continue  # deleted by a person: left deleted
        rtype = stored["resourceType"]
        if rtype == "Task":
            status = stored.get("status")
            if status in NOT_STARTED:
                new = apply_status(stored, "cancelled", reason=closing.reason, now=now)
                changed.append((stored, new))
                out.cancelled += 1
            elif status in WORKED_ON or (status == "completed" and closing.retract):
                review = review_task(stored, closing, key=key, owner=owner, now=now)
                if not store.exists("Task", review["id"]):
                    out.ops.append(
                        WriteOp("create", "Task", id=review["id"], resource=review, keep_id=True)
                    )
                    out.reviews += 1
            continue
        rule = tables.get(rtype)
        if rule is None:
            continue
        element, before, after, has_note = rule
        if stored.get(element) not in before:
            continue
        if rtype == "CarePlan" and closing.retract and _serves_others(store, stored, set(refs)):
            continue  # another discharge's open Tasks were added to it since
        new = _copy(stored)
        new[element] = after
        if has_note:
            _with_note(new, closing.reason)
        changed.append((stored, new))
        out.withdrawn += 1
    for stored, new in changed:
        out.ops.append(
            WriteOp(
                "update",
                new["resourceType"],
                id=new["id"],
                resource=new,
                if_match=stored["meta"]["versionId"],
            )
        )
    if changed:
        prov = provenance(changed, closing, key=key, now=now)
        out.ops.append(WriteOp("create", "Provenance", id=prov["id"], resource=prov, keep_id=True))
    return out


def _serves_others(store: Store, plan: Resource, refs: set[str]) -> bool:
    """True when the plan lists an open Task that is not among `refs`."""
    for activity in plan.get("activity") or []:
        ref = (activity.get("reference") or {}).get("reference") or ""
        if not ref.startswith("Task/") or ref in refs:
            continue
        task = _read(store, ref)
        if task is not None and task.get("status") in NOT_STARTED | WORKED_ON:
            return True
    return False


def review_task(
    task: Resource, closing: Closing, *, key: str, owner: str | None, now: datetime
) -> Resource:
    """A Task asking a person to decide about work already started (never guessed for them)."""
    spec = _review_spec()
    value = f"{key}/review/{task['id']}/{closing.event}"
    what = task.get("description") or (task.get("code") or {}).get("text") or "a follow-up task"
    reviewer = (task.get("owner") or {}).get("reference") or owner
    review: Resource = {
        "resourceType": "Task",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ID_SYSTEM}|{value}")),
        "identifier": [{"system": ID_SYSTEM, "value": value}],
        "status": "requested",
        "intent": "order",
        "priority": "urgent",
        "code": {
            "coding": [{"system": CARE_TASK, "code": spec["code"], "display": spec["display"]}],
            "text": spec["display"],
        },
        "description": (
            f'{closing.reason} while this task was {task.get("status")}: "{what}". '
            "Decide whether to stop it, keep it or redo it."
        ),
        "focus": {"reference": f"Task/{task['id']}"},
        "authoredOn": fhir_datetime(now),
        "lastModified": fhir_datetime(now),
        "restriction": {
            "period": {
                "end": business_deadline(
                    now, int(spec["due"]["business_days"]), _holidays()
                ).isoformat()
            }
        },
    }
    for element in ("for", "encounter", "basedOn"):
        if task.get(element):
            review[element] = task[element]
    if reviewer:
        review["owner"] = {"reference": reviewer}
    requester = reviewer or (task.get("requester") or {}).get("reference")
    review["requester"] = (
        {"reference": requester} if requester else {"display": "fhircare discharge processing"}
    )
    return with_profile(review, "fhircare-task")


def _holidays() -> frozenset:
    return parse_holidays(mapping("transitions").get("holidays") or [])


def provenance(
    changed: list[tuple[Resource, Resource]], closing: Closing, *, key: str, now: datetime
) -> Resource:
    """One Provenance for the new versions, caused by `closing.cause_ref` (role source)."""
    targets = [
        {"reference": f"{new['resourceType']}/{new['id']}/_history/{_next(stored)}"}
        for stored, new in changed
    ]
    prov: Resource = {
        "resourceType": "Provenance",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ID_SYSTEM}|{key}/closed/{closing.event}")),
        "target": targets,
        "recorded": fhir_datetime(now),
        "activity": {
            "coding": [
                {"system": DATA_OPERATION, "code": "MODIFYSTATUS", "display": "modify status"}
            ]
        },
        "reason": [{"text": closing.reason}],
        "agent": [
            {
                "type": {
                    "coding": [
                        {"system": PARTICIPANT_TYPE, "code": "assembler", "display": "Assembler"}
                    ]
                },
                "who": {"display": "fhircare discharge processing"},
            }
        ],
        "entity": [{"role": "source", "what": {"reference": closing.cause_ref}}],
    }
    return with_profile(prov, "fhircare-provenance")


def _next(stored: Resource) -> str:
    version = str((stored.get("meta") or {}).get("versionId") or "0")
    return str(int(version) + 1) if version.isdigit() else version


# ---- which discharges to close --------------------------------------------------------------

# Encounter statuses that mean "no longer discharged": moved back, or the stay cancelled.
REOPENED = frozenset(
    {"planned", "arrived", "triaged", "in-progress", "onleave", "cancelled", "entered-in-error"}
)
OWN_SYSTEMS = frozenset({ID_SYSTEM, MEDREC_ID_SYSTEM})


def cancel_reason(encounter: Resource) -> str:
    enc_ref = f"Encounter/{encounter['id']}"
    status = encounter.get("status")
    if status in ("cancelled", "entered-in-error"):
        return f"The stay ({enc_ref}) was cancelled, and with it its discharge"
    return f"The discharge of {enc_ref} was cancelled (the stay is {status} again)"


def versioned(resource: Resource) -> str:
    """`Type/id/_history/n` of a stored resource (`Type/id` when it has no version)."""
    ref = f"{resource['resourceType']}/{resource['id']}"
    version = (resource.get("meta") or {}).get("versionId")
    return f"{ref}/_history/{version}" if version else ref


def _own(resource: Resource, prefix: str | None = None) -> bool:
    return any(
        i.get("system") in OWN_SYSTEMS
        and (prefix is None or str(i.get("value")).startswith(prefix))
        for i in resource.get("identifier") or []
    )


def _search(store: Store, rtype: str, params: list[tuple[str, str]]) -> list[Resource]:
    try:
        return store.search(rtype, params)
    except FhirError:
        return []


def legacy_opened(store: Store, encounter: Resource) -> list[str]:
    """What a discharge processed before markers listed their outputs opened: outputs with
    fhircare identifiers of this Encounter, and the transitional-care CarePlan applied for it
    with the resources it lists."""
    enc_id = encounter["id"]
    enc_ref = f"Encounter/{enc_id}"
    found: list[Resource] = []
    for rtype, param in (
        ("Task", "encounter"),
        ("List", "encounter"),
        ("Observation", "encounter"),
        ("MedicationStatement", "context"),
    ):
        found += [r for r in _search(store, rtype, [(param, enc_ref)]) if _own(r)]
    patient_ref = (encounter.get("subject") or {}).get("reference")
    if patient_ref:
        found += [
            r
            for r in _search(store, "DetectedIssue", [("patient", patient_ref)])
            if _own(r, f"{enc_id}/")
        ]
    refs = [f"{r['resourceType']}/{r['id']}" for r in found]
    for plan in _search(store, "CarePlan", [("encounter", enc_ref)]):
        if not any("transitional-care" in c for c in plan.get("instantiatesCanonical") or []):
            continue
        refs.append(f"CarePlan/{plan['id']}")
        refs += [
            (a.get("reference") or {}).get("reference", "") for a in plan.get("activity") or []
        ]
        refs += [g.get("reference", "") for g in plan.get("goal") or []]
        refs += [t.get("reference", "") for t in plan.get("careTeam") or []]
    return list(dict.fromkeys(r for r in refs if r))


def undo_ops(
    store: Store,
    encounter: Resource,
    marker: marker_mod.Marker,
    *,
    owner: str | None,
    now: datetime,
) -> tuple[Closed, marker_mod.Marker]:
    """Close what the discharge of `encounter` opened; the marker it leaves (cancelled)."""
    enc_id = encounter["id"]
    refs: list[str] = []
    if marker["state"] == marker_mod.OPEN:
        refs = marker["opened"] if "opened" in marker else legacy_opened(store, encounter)
    closing = Closing(
        "cancelled", cancel_reason(encounter), cause_ref=versioned(encounter), retract=True
    )
    key = marker_mod.episode_key(enc_id, int(marker["episode"]))
    closed = close_ops(store, refs, closing, key=key, owner=owner, now=now)
    record = {
        **marker,
        "state": marker_mod.CANCELLED,
        "cancelled": fhir_datetime(now),
        "closed": closed.summary(),
    }
    return closed, record


def death_ops(
    store: Store,
    patient: Resource,
    evidence: str,
    *,
    cause_ref: str,
    owner: str | None,
    now: datetime,
    skip: frozenset[str] = frozenset(),
) -> tuple[Closed, dict[str, marker_mod.Marker]]:
    """Close the open follow-up of every discharge of a patient who died (`evidence`, as
    `cause_ref` records it); the markers to write. A discharge already closed for the death
    is left alone (idempotent)."""
    total = Closed()
    markers: dict[str, marker_mod.Marker] = {}
    patient_ref = f"Patient/{patient['id']}"
    closing = Closing("deceased", f"The patient died ({evidence})", cause_ref, False)
    for enc in _search(store, "Encounter", [("patient", patient_ref)]):
        if enc["id"] in skip:
            continue
        marker = marker_mod.read(store, enc["id"])
        if marker is None or marker["state"] != marker_mod.OPEN or marker.get("deceased"):
            continue
        refs = marker["opened"] if "opened" in marker else legacy_opened(store, enc)
        key = marker_mod.episode_key(enc["id"], int(marker["episode"]))
        closed = close_ops(store, refs, closing, key=key, owner=owner, now=now)
        total.ops += closed.ops
        total.cancelled += closed.cancelled
        total.reviews += closed.reviews
        total.withdrawn += closed.withdrawn
        markers[marker_mod.key(enc["id"])] = {
            **marker,
            "deceased": fhir_datetime(now),
            "closed": closed.summary(),
        }
    return total, markers


def find_reopened(store: Store) -> list[Resource]:
    """Encounters whose discharge was handled but that are no longer finished (e.g. written by
    a sync pull, which does not run the bus): the sweep undoes them."""
    out = []
    for enc in _search(store, "Encounter", [("status", ",".join(sorted(REOPENED)))]):
        marker = marker_mod.read(store, enc["id"])
        if marker is not None and marker["state"] != marker_mod.CANCELLED:
            out.append(enc)
    return sorted(out, key=lambda e: e["id"])

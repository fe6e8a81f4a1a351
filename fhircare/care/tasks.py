"""The FHIR Task state machine (R4 task.html) and the side effects of Task transitions.

Allowed transitions (any state may also go to `entered-in-error`):

    draft       -> requested, ready, cancelled
    requested   -> received, accepted, rejected, ready, cancelled
    received    -> accepted, rejected, cancelled
    accepted    -> ready, in-progress, cancelled
    ready       -> in-progress, cancelled, failed
    in-progress -> on-hold, completed, failed, cancelled
    on-hold     -> in-progress, failed, cancelled
    rejected, cancelled, failed, completed, entered-in-error: terminal

Advocacy: when a referral Task (code task-code `fulfill`, focus a ServiceRequest) or an
authorisation Task (care-task `authorization`) becomes rejected or failed, a Task
"propose an alternative" for the care manager is written in the same commit (by
`transition`) or by the bus handler (for a Task written through the FHIR API).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fhircare.care.common import (
    CARE_TASK,
    Resource,
    coding,
    commit,
    create_op,
    fhir_datetime,
    has_code,
    new_id,
    update_op,
    utcnow,
    with_profile,
)
from fhircare.care.referrals import is_referral_task
from fhircare.fhir.errors import NotFound, PreconditionFailed, Unprocessable
from fhircare.store.base import Store, WriteOp

TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"requested", "ready", "cancelled"}),
    "requested": frozenset({"received", "accepted", "rejected", "ready", "cancelled"}),
    "received": frozenset({"accepted", "rejected", "cancelled"}),
    "accepted": frozenset({"ready", "in-progress", "cancelled"}),
    "ready": frozenset({"in-progress", "cancelled", "failed"}),
    "in-progress": frozenset({"on-hold", "completed", "failed", "cancelled"}),
    "on-hold": frozenset({"in-progress", "failed", "cancelled"}),
    "rejected": frozenset(),
    "cancelled": frozenset(),
    "failed": frozenset(),
    "completed": frozenset(),
    "entered-in-error": frozenset(),
}
STATUSES = frozenset(TRANSITIONS)
TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
OPEN = frozenset(STATUSES - TERMINAL - {"draft"})
ADVOCACY_TRIGGERS = frozenset({"rejected", "failed"})
ALTERNATIVE_DUE_DAYS = 2


def allowed(old_status: str, new_status: str) -> bool:
    """True when the state machine allows old -> new (unchanged counts as allowed)."""
    if old_status == new_status or new_status == "entered-in-error":
        return True
    return new_status in TRANSITIONS.get(old_status, frozenset())


def reachable(old_status: str, new_status: str) -> bool:
    """True when new_status can be reached from old_status through allowed transitions."""
    seen, todo = {old_status}, [old_status]
    while todo:
        for nxt in TRANSITIONS.get(todo.pop(), frozenset()):
            if nxt == new_status:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return old_status == new_status


def _illegal(old_status: str, new_status: str) -> Unprocessable:
    nxt = sorted(TRANSITIONS.get(old_status, frozenset()) | {"entered-in-error"})
    return Unprocessable(
        f"Illegal Task status transition from '{old_status}' to '{new_status}'"
        f" (allowed from '{old_status}': {', '.join(nxt)})",
        expression=["Task.status"],
        code="business-rule",
    )


def check_transition(old: Resource | None, new: Resource) -> None:
    """Refuse a Task write whose status change the state machine forbids (422)."""
    if old is None or new.get("resourceType") != "Task":
        return
    old_status, new_status = old.get("status"), new.get("status")
    ok = not (isinstance(old_status, str) and isinstance(new_status, str))
    if not ok and not allowed(old_status, new_status):
        raise _illegal(old_status, new_status)


def transition(
    store: Store,
    task_id: str,
    new_status: str,
    *,
    reason: str | None = None,
    output: list[Resource] | None = None,
    if_match: str | None = None,
    now: datetime | None = None,
) -> Resource:
    """Move a Task to `new_status` (one commit, with its side effects); returns the Task.

    `output` are Task.output elements to append. Raises NotFound, PreconditionFailed (If-Match),
    Unprocessable (unknown status or illegal transition, naming from and to).
    """
    if new_status not in STATUSES:
        raise Unprocessable(
            f"Unknown Task status '{new_status}'", expression=["Task.status"], code="code-invalid"
        )
    task = store.read("Task", task_id)
    current = task["meta"]["versionId"]
    if if_match is not None and if_match != current:
        raise PreconditionFailed(
            f"If-Match version {if_match} does not match the current version {current} "
            f"of Task/{task_id}"
        )
    old_status = task["status"]
    if old_status == new_status and not output and reason is None:
        return task
    if not allowed(old_status, new_status):
        raise _illegal(old_status, new_status)
    at = utcnow(now)
    updated = apply_status(task, new_status, reason=reason, output=output, now=at)
    ops = [update_op(updated, if_match=current)]
    ops.extend(side_effects(store, task, updated, now=at))
    written = commit(store, ops)
    return written[0]


def apply_status(
    task: Resource,
    new_status: str,
    *,
    reason: str | None = None,
    output: list[Resource] | None = None,
    now: datetime,
) -> Resource:
    """A copy of the Task in its new status (statusReason, lastModified, executionPeriod)."""
    out = {k: v for k, v in task.items() if k != "meta"}
    # Keep what the Task claims (profiles, tags); never stamp our profile on a Task that a
    # client wrote without it: it may not conform.
    meta = {k: v for k, v in (task.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    out["status"] = new_status
    stamp = fhir_datetime(now)
    out["lastModified"] = stamp
    if reason is not None:
        out["statusReason"] = {"text": reason}
    period = dict(out.get("executionPeriod") or {})
    if new_status == "in-progress" and "start" not in period:
        period["start"] = stamp
    if new_status in TERMINAL:
        period.setdefault("start", stamp)
        period["end"] = stamp
    if period:
        out["executionPeriod"] = period
    if output:
        out["output"] = [*(out.get("output") or []), *output]
    return out


def needs_advocacy(task: Resource) -> bool:
    """A rejected/failed referral or authorisation Task."""
    if task.get("status") not in ADVOCACY_TRIGGERS:
        return False
    return is_referral_task(task) or has_code(task.get("code"), CARE_TASK, "authorization")


def side_effects(
    store: Store, old: Resource | None, new: Resource, *, now: datetime
) -> list[WriteOp]:
    """Writes that follow a Task status change: the focal ServiceRequest's status, and the
    'propose an alternative' Task. Empty when already done (idempotent)."""
    ops: list[WriteOp] = []
    if old is not None and old.get("status") == new.get("status"):
        return ops
    sr_op = _service_request_update(store, new)
    if sr_op is not None:
        ops.append(sr_op)
    if needs_advocacy(new) and not _alternative_exists(store, new["id"]):
        ops.append(create_op(propose_alternative(store, new, now=now)))
    return ops


def _service_request_update(store: Store, task: Resource) -> WriteOp | None:
    if not is_referral_task(task):
        return None
    target = {"completed": "completed", "cancelled": "revoked", "entered-in-error": None}.get(
        task["status"]
    )
    if target is None:
        return None
    sr_id = task["focus"]["reference"].split("/")[1]
    try:
        sr = store.read("ServiceRequest", sr_id)
    except NotFound:
        return None
    if sr.get("status") in (target, "completed", "revoked", "entered-in-error"):
        return None
    sr["status"] = target
    return update_op(sr, if_match=sr["meta"]["versionId"])


def _alternative_exists(store: Store, task_id: str) -> bool:
    found = store.search(
        "Task", [("focus", f"Task/{task_id}"), ("code", f"{CARE_TASK}|propose-alternative")]
    )
    return bool(found)


def care_manager_of(store: Store, patient_ref: str) -> str | None:
    """The care manager on the patient's active CareTeam, else the first generalPractitioner."""
    from fhircare.care.common import CARETEAM_ROLE

    for team in store.search("CareTeam", [("patient", patient_ref), ("status", "active")]):
        for part in team.get("participant") or []:
            if any(has_code(r, CARETEAM_ROLE, "care-manager") for r in part.get("role") or []):
                member = (part.get("member") or {}).get("reference")
                if member:
                    return member
    try:
        patient = store.read("Patient", patient_ref.split("/")[-1])
    except NotFound:
        return None
    for gp in patient.get("generalPractitioner") or []:
        if (gp.get("reference") or "").startswith(("Practitioner/", "PractitionerRole/")):
            return gp["reference"]
    return None


def propose_alternative(store: Store, failed: Resource, *, now: datetime) -> Resource:
    """The Task asking the care manager to propose an alternative to a failed request."""
    patient_ref = (failed.get("for") or {}).get("reference")
    requester = (failed.get("requester") or {}).get("reference")
    owner = requester if requester and requester.startswith("Practitioner") else None
    owner = owner or (care_manager_of(store, patient_ref) if patient_ref else None)
    what = failed.get("description") or (failed.get("code") or {}).get("text") or "request"
    why = (failed.get("statusReason") or {}).get("text")
    text = f"{what} was {failed['status']}" + (f": {why}" if why else "")
    task: Resource = {
        "resourceType": "Task",
        "id": new_id(),
        "status": "requested",
        "intent": "order",
        "priority": "urgent",
        "code": {
            "coding": [coding(CARE_TASK, "propose-alternative", "Propose an alternative")],
            "text": "Propose an alternative",
        },
        "description": f"{text}. Find and propose an alternative for the patient.",
        "focus": {"reference": f"Task/{failed['id']}"},
        "authoredOn": fhir_datetime(now),
        "lastModified": fhir_datetime(now),
        "restriction": {
            "period": {"end": fhir_datetime(now + timedelta(days=ALTERNATIVE_DUE_DAYS))}
        },
    }
    if patient_ref:
        task["for"] = {"reference": patient_ref}
    if failed.get("basedOn"):
        task["basedOn"] = failed["basedOn"]
    if owner:
        task["owner"] = {"reference": owner}
        task["requester"] = {"reference": owner}
    elif requester:
        task["requester"] = {"reference": requester}
    if failed.get("reasonReference"):
        task["reasonReference"] = failed["reasonReference"]
    return with_profile(task, "fhircare-task")


# ---- bus wiring ---------------------------------------------------------------------------


def check_task_write(store: Store, old: Resource | None, new: Resource) -> None:
    """Bus check: refuse an illegal status change in a Task PUT."""
    check_transition(old, new)


def on_task_written(store: Store, task: Resource) -> list[Resource]:
    """Bus handler: the side effects of a Task status written through the API (idempotent)."""
    ops = side_effects(store, None, task, now=utcnow())
    return commit(store, ops) if ops else []


def register(bus: Any) -> None:
    """Wire the Task check and handler on the message bus."""
    bus.check("Task", check_task_write)
    bus.on("Task", on_task_written)

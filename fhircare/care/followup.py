"""Follow-up calls: a cadence by risk tier, and documenting a call.

`schedule_followups` writes one Task per call (care-task `follow-up-call`) with its due date in
restriction.period.end and the window it may be done in as restriction.period.start; the
series shares a groupIdentifier. `document_call` completes the call's Task and writes a
Communication about the patient (summary and topics as payload) in one commit.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fhircare.care.common import (
    CARE_TASK,
    ID_SYSTEM,
    Resource,
    add_duration,
    coding,
    commit,
    create_op,
    fhir_datetime,
    has_code,
    mapping,
    new_id,
    read_ref,
    split_ref,
    update_op,
    utcnow,
    with_profile,
)
from fhircare.care.tasks import OPEN, apply_status
from fhircare.fhir.errors import NotFound, Unprocessable
from fhircare.store.base import Store

PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"


def cadence(tier: str) -> dict[str, Any]:
    """The follow-up cadence of a risk tier (mappings/followup.yaml)."""
    tiers = mapping("followup")["tiers"]
    if tier not in tiers:
        raise Unprocessable(
            f"Unknown risk tier '{tier}' (known: {', '.join(tiers)})", expression=["tier"]
        )
    return tiers[tier]


def due_dates(tier: str, start: datetime, count: int | None = None) -> list[datetime]:
    """The due dates of `count` calls from `start` (the first one interval after start)."""
    spec = cadence(tier)
    n = spec["count"] if count is None else count
    interval = spec["interval"]
    out, at = [], utcnow(start)
    for _ in range(n):
        at = add_duration(at, interval["value"], interval["unit"])
        out.append(at)
    return out


def schedule_followups(
    store: Store,
    patient_ref: str,
    tier: str,
    *,
    start: datetime,
    count: int | None = None,
    owner: str,
    now: datetime | None = None,
) -> list[Resource]:
    """Create the follow-up call Tasks of a tier's cadence (one commit); returns them."""
    spec = cadence(tier)
    if count is not None and not 1 <= count <= 52:
        raise Unprocessable("count must be between 1 and 52", expression=["count"])
    _, pid = split_ref(patient_ref, "Patient")
    store.read("Patient", pid)
    read_ref(store, owner)
    at = utcnow(now or start)
    dates = due_dates(tier, start, count)
    series = new_id()
    window = timedelta(days=spec.get("window_days", 0))
    tasks = []
    for i, due in enumerate(dates, 1):
        task: Resource = {
            "resourceType": "Task",
            "id": new_id(),
            "groupIdentifier": {"system": f"{ID_SYSTEM}/followup-series", "value": series},
            "status": "requested",
            "intent": "order",
            "priority": "urgent" if tier == "high" else "routine",
            "code": {
                "coding": [coding(CARE_TASK, "follow-up-call", "Follow-up call")],
                "text": "Follow-up call",
            },
            "description": f"Follow-up call {i} of {len(dates)} ({spec['display']})",
            "for": {"reference": patient_ref},
            "authoredOn": fhir_datetime(at),
            "lastModified": fhir_datetime(at),
            "requester": {"reference": owner},
            "owner": {"reference": owner},
            "restriction": {
                "period": {"start": fhir_datetime(due - window), "end": fhir_datetime(due)}
            },
        }
        tasks.append(with_profile(task, "fhircare-task"))
    return commit(store, [create_op(t) for t in tasks])


def document_call(
    store: Store,
    task_id: str,
    *,
    summary: str,
    topics: list[str],
    now: datetime | None = None,
) -> list[Resource]:
    """Complete a follow-up call Task and write its Communication (one commit).

    The documented call is the evidence the Task was performed, so any open status
    (requested, received, accepted, ready, in-progress, on-hold) goes to completed.
    Returns [Task, Communication].
    """
    at = utcnow(now)
    try:
        task = store.read("Task", task_id)
    except NotFound:
        raise NotFound(f"Task/{task_id} is not known", expression=["Task"]) from None
    if not has_code(task.get("code"), CARE_TASK, "follow-up-call"):
        raise Unprocessable(f"Task/{task_id} is not a follow-up call", expression=["Task.code"])
    if task["status"] not in OPEN:
        raise Unprocessable(
            f"Task/{task_id} is {task['status']}: a call can only be documented on an open Task",
            expression=["Task.status"],
            code="business-rule",
        )
    if not summary.strip():
        raise Unprocessable("The call summary is empty", expression=["summary"])
    comm_id = new_id()
    patient = task["for"]
    caller = (task.get("owner") or {}).get("reference")
    comm: Resource = {
        "resourceType": "Communication",
        "id": comm_id,
        "basedOn": [{"reference": f"Task/{task_id}"}],
        "status": "completed",
        "medium": [{"coding": [coding(PARTICIPATION_MODE, "PHONE", "telephone")]}],
        "subject": patient,
        "about": [patient],
        "topic": {"text": "Care-management follow-up call"},
        "sent": fhir_datetime(at),
        "recipient": [patient],
        "payload": [{"contentString": summary}]
        + [{"contentString": f"Topic: {t}"} for t in topics if t.strip()],
    }
    if caller:
        comm["sender"] = {"reference": caller}
    with_profile(comm, "fhircare-communication")
    done = apply_status(
        task,
        "completed",
        output=[
            {
                "type": {"text": "Call record"},
                "valueReference": {"reference": f"Communication/{comm_id}"},
            }
        ],
        now=at,
    )
    return commit(store, [update_op(done, if_match=task["meta"]["versionId"]), create_op(comm)])

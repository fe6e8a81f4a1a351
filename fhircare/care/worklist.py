"""The care manager's worklist: open Tasks to act on, most pressing first.

Includes Tasks owned by the practitioner, Tasks owned by an active CareTeam the practitioner
is a member of (any role), and unassigned open Tasks (no owner, e.g. from a `$apply` without
a practitioner) of those CareTeams' patients. Order: overdue first, then by due date (none
last), then patient risk (high first), then Task priority. Each item says why it is on the
list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from fhircare.care.common import CARETEAM_ROLE, Resource, has_code, parse_datetime, task_due, utcnow
from fhircare.care.eligibility import Eligibility, assess_eligibility
from fhircare.care.tasks import OPEN
from fhircare.store.base import Store

PRIORITY_RANK = {"stat": 0, "asap": 1, "urgent": 2, "routine": 3}


@dataclass
class WorklistItem:
    task_id: str
    patient: str | None
    title: str
    status: str
    priority: str
    due: str | None
    overdue: bool
    high_risk: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def as_dict(self) -> dict[str, object]:
        return {
            "task": f"Task/{self.task_id}",
            "patient": self.patient,
            "title": self.title,
            "status": self.status,
            "priority": self.priority,
            "due": self.due,
            "overdue": self.overdue,
            "highRisk": self.high_risk,
            "reason": self.reason,
        }


def _teams(store: Store, practitioner_ref: str) -> list[Resource]:
    """The active CareTeams the practitioner is a member of (care manager first)."""
    out = []
    for team in store.search("CareTeam", [("participant", practitioner_ref), ("status", "active")]):
        roles = [
            part.get("role") or []
            for part in team.get("participant") or []
            if (part.get("member") or {}).get("reference") == practitioner_ref
        ]
        if roles:
            manager = any(has_code(r, CARETEAM_ROLE, "care-manager") for rs in roles for r in rs)
            out.append((not manager, team["id"], team))
    return [team for *_, team in sorted(out, key=lambda t: t[:2])]


def worklist(
    store: Store, practitioner_ref: str, *, now: datetime | None = None
) -> list[WorklistItem]:
    """The practitioner's open Tasks, most pressing first, each with its reasons."""
    at = utcnow(now)
    found: dict[str, tuple[Resource, str]] = {}
    for task in store.search("Task", [("owner", practitioner_ref)]):
        found[task["id"]] = (task, "assigned to you")
    for team in _teams(store, practitioner_ref):
        label = team.get("name") or f"CareTeam/{team['id']}"
        for task in store.search("Task", [("owner", f"CareTeam/{team['id']}")]):
            found.setdefault(task["id"], (task, f"assigned to your care team ({label})"))
        patient = (team.get("subject") or {}).get("reference")
        if patient:
            for task in store.search("Task", [("patient", patient), ("owner:missing", "true")]):
                found.setdefault(task["id"], (task, f"unassigned task for your patient ({label})"))
    risk: dict[str, Eligibility] = {}
    items = []
    for task, why in found.values():
        if task.get("status") not in OPEN:
            continue
        patient = (task.get("for") or {}).get("reference")
        if patient and patient.startswith("Patient/") and patient not in risk:
            risk[patient] = assess_eligibility(store, patient, now=at)
        elig = risk.get(patient or "")
        due = task_due(task)
        overdue = bool(due) and parse_datetime(due) < at
        reasons = [why]
        if overdue:
            days = (at - parse_datetime(due)).days
            reasons.insert(0, f"overdue since {due[:10]}" + (f" ({days} days)" if days else ""))
        elif due:
            days = (parse_datetime(due) - at).days
            reasons.append(f"due {due[:10]}" + (" (today)" if days == 0 else f" (in {days} days)"))
        if elig and elig.high_risk:
            reasons.append(
                "high-risk patient: "
                + ", ".join(r for r in elig.reasons if not r.startswith("not CCM"))
            )
        priority = task.get("priority", "routine")
        if priority in ("stat", "asap", "urgent"):
            reasons.append(f"priority {priority}")
        items.append(
            WorklistItem(
                task_id=task["id"],
                patient=patient,
                title=task.get("description") or (task.get("code") or {}).get("text") or "Task",
                status=task["status"],
                priority=priority,
                due=due,
                overdue=overdue,
                high_risk=bool(elig and elig.high_risk),
                reasons=reasons,
            )
        )
    items.sort(
        key=lambda i: (
            not i.overdue,
            i.due is None,
            parse_datetime(i.due) if i.due else at,
            not i.high_risk,
            PRIORITY_RANK.get(i.priority, 3),
            i.task_id,
        )
    )
    return items

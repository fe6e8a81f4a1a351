"""What case finding writes back: a Group per program and tier (members with their reasons),
a Flag per high-risk patient and, when asked, an enrolment Task per CCM-eligible patient.

Every output has a deterministic id (uuid5 of its identifier), so a rerun updates the same
resources instead of adding new ones; an existing Task is never overwritten (the care team
may have moved it on). Resources are built here and committed through a `Store` (the
embedded store or HAPI through the remote store).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fhircare.care.common import ID_SYSTEM, mapping, utcnow, with_profile
from fhircare.care.common import fhir_datetime as fhir_dt
from fhircare.store.base import Store, WriteOp
from fhircare.transitions.discharge import deterministic_id

REASON_URL = "http://fhircare.org/fhir/StructureDefinition/case-finding-reason"
RISK_SCORE = "http://fhircare.org/fhir/CodeSystem/risk-score"
TIER_CODES = {
    "high": ("high-risk", "High risk"),
    "moderate": ("moderate-risk", "Moderate risk"),
    "low": ("low-risk", "Low risk"),
}
Result = dict[str, Any]  # one patient's answer: patient, ccmEligible, highRisk, tier, reasons


def _cfg() -> dict[str, Any]:
    return mapping("case-finding")


def _holds(when: str, result: Result) -> bool:
    negate = when.startswith("not ")
    flag = when.removeprefix("not ").strip()
    value = {"ccm_eligible": result["ccmEligible"], "high_risk": result["highRisk"]}[flag]
    return not value if negate else bool(value)


def group_key(result: Result) -> str | None:
    """The program/tier Group a patient belongs to ("ccm/high"), or None."""
    for name, program in _cfg()["programs"].items():
        if _holds(program["when"], result) and result["tier"] in program["tiers"]:
            return f"{name}/{result['tier']}"
    return None


def group_keys() -> list[str]:
    return [f"{n}/{t}" for n, p in _cfg()["programs"].items() for t in p["tiers"]]


def _identifier(value: str) -> dict[str, str]:
    return {"system": f"{ID_SYSTEM}/case-finding", "value": value}


def build_group(key: str, members: list[Result], at: datetime) -> dict[str, Any]:
    """The Group of one program and tier (every current member, with its reasons)."""
    name, tier = key.split("/", 1)
    program = _cfg()["programs"][name]
    code, display = TIER_CODES[tier]
    group: dict[str, Any] = {
        "resourceType": "Group",
        "id": deterministic_id(f"{ID_SYSTEM}/case-finding", f"group|{key}"),
        "identifier": [_identifier(f"group|{key}")],
        "active": True,
        "type": "person",
        "actual": True,
        "name": f"{program['display']}: {display.lower()}",
        "quantity": len(members),
        "characteristic": [
            {
                "code": {"coding": [{"system": RISK_SCORE, "code": code, "display": display}]},
                "valueBoolean": True,
                "exclude": False,
            }
        ],
    }
    if program.get("code"):
        group["code"] = {"coding": [dict(program["code"])], "text": program["display"]}
    if members:
        group["member"] = [
            {
                "entity": {"reference": m["patient"]},
                "period": {"start": fhir_dt(at)},
                "extension": [{"url": REASON_URL, "valueString": r} for r in m["reasons"]]
                or [{"url": REASON_URL, "valueString": f"{display} tier"}],
            }
            for m in members
        ]
    return group


def build_flag(result: Result, at: datetime) -> dict[str, Any]:
    cfg = _cfg()["flag"]
    value = f"flag|{result['patient']}"
    return {
        "resourceType": "Flag",
        "id": deterministic_id(f"{ID_SYSTEM}/case-finding", value),
        "identifier": [_identifier(value)],
        "status": "active",
        "category": [{"coding": [dict(cfg["category"])]}],
        "code": {
            "coding": [dict(cfg["code"])],
            "text": f"{cfg['code']['display']}: " + "; ".join(result["reasons"]),
        },
        "subject": {"reference": result["patient"]},
        "period": {"start": fhir_dt(at)},
    }


REQUESTER = {"display": "fhircare case finding (population stratify)"}


def build_task(result: Result, at: datetime, owner: str | None = None) -> dict[str, Any]:
    """The enrolment Task of a CCM-eligible patient, for `owner` (the care team) if given."""
    cfg = _cfg()["enrolment_task"]
    value = f"enrolment|{cfg['program']}|{result['patient']}"
    display = cfg["code"]["display"]
    task = {
        "resourceType": "Task",
        "id": deterministic_id(f"{ID_SYSTEM}/case-finding", value),
        "identifier": [_identifier(value)],
        "status": "requested",
        "intent": "order",
        "priority": "urgent" if result["highRisk"] else "routine",
        "code": {"coding": [dict(cfg["code"])], "text": display},
        "description": f"{display} (case finding: " + "; ".join(result["reasons"]) + ")",
        "for": {"reference": result["patient"]},
        "authoredOn": fhir_dt(at),
        "lastModified": fhir_dt(at),
        "requester": dict(REQUESTER),
        "restriction": {"period": {"end": fhir_dt(at + timedelta(days=cfg["due_days"]))}},
    }
    if owner:
        task["owner"] = {"reference": owner}
    return with_profile(task, "fhircare-task")


@dataclass
class Written:
    flags: int = 0
    tasks: int = 0
    tasks_kept: int = 0  # already there: left as the care team has them
    groups: int = 0


def patient_ops(
    store: Store,
    results: Iterable[Result],
    *,
    tasks: bool,
    owner: str | None = None,
    now: datetime | None = None,
) -> tuple[list[WriteOp], Written]:
    """Flags (and Tasks) for one batch of results."""
    at = utcnow(now)
    ops: list[WriteOp] = []
    done = Written()
    program = _cfg()["enrolment_task"]["program"]
    for result in results:
        if result["highRisk"]:
            flag = build_flag(result, at)
            ops.append(WriteOp("update", "Flag", id=flag["id"], resource=flag))
            done.flags += 1
        if tasks and (group_key(result) or "").startswith(f"{program}/"):
            task = build_task(result, at, owner)
            if store.exists("Task", task["id"]):
                done.tasks_kept += 1
            else:
                ops.append(WriteOp("update", "Task", id=task["id"], resource=task))
                done.tasks += 1
    return ops, done


def group_ops(results: Iterable[Result], *, now: datetime | None = None) -> list[WriteOp]:
    """Every program/tier Group (empty ones too, so a Group never keeps a former member)."""
    at = utcnow(now)
    members: dict[str, list[Result]] = {k: [] for k in group_keys()}
    for result in results:
        key = group_key(result)
        if key:
            members[key].append(result)
    ops = []
    for key, found in members.items():
        group = build_group(key, found, at)
        ops.append(WriteOp("update", "Group", id=group["id"], resource=group))
    return ops


def batches(items: Iterable[Result], size: int) -> Iterator[list[Result]]:
    batch: list[Result] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

"""Small helpers shared by the care-plan, coordination and follow-up modules.

Canonical URLs, time formatting, ids, codings and the mapping loader. Pure functions only.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhircare.care import definitions
from fhircare.fhir.datetimes import parse_datetime  # noqa: F401 - re-exported
from fhircare.fhir.errors import Unprocessable
from fhircare.store.base import Store, WriteOp, new_id  # noqa: F401 - re-exported

BASE = "http://fhircare.org/fhir"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
CARE_TASK = f"{BASE}/CodeSystem/care-task"
CARETEAM_ROLE = f"{BASE}/CodeSystem/careteam-role"
PROGRAM_KIND = f"{BASE}/CodeSystem/program-kind"
REFERRAL_KIND = f"{BASE}/CodeSystem/referral-kind"
CAREPLAN_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category"
GOAL_ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"
ID_SYSTEM = f"{BASE}/identifier"

Resource = dict[str, Any]


def profile_url(profile_id: str) -> str:
    return f"{BASE}/StructureDefinition/{profile_id}"


def with_profile(resource: Resource, profile_id: str) -> Resource:
    """Set meta.profile (in place) and return the resource."""
    meta = resource.setdefault("meta", {})
    meta["profile"] = [profile_url(profile_id)]
    return resource


def utcnow(now: datetime | None = None) -> datetime:
    """`now` made timezone-aware (UTC when naive), or the current instant."""
    if now is None:
        return datetime.now(UTC).replace(microsecond=0)
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def fhir_datetime(dt: datetime) -> str:
    """A FHIR dateTime with seconds and a zone ('2024-05-01T10:00:00Z')."""
    return utcnow(dt).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def fhir_date(d: date | datetime) -> str:
    return (d.date() if isinstance(d, datetime) else d).isoformat()


_UNIT_DAYS = {"d": 1, "wk": 7, "mo": 30, "a": 365, "h": 1 / 24, "min": 1 / 1440}


def add_duration(start: datetime, value: float, unit: str) -> datetime:
    """`start` plus a UCUM duration (d, wk, mo, a; months are calendar months)."""
    if unit == "mo":
        month = start.month - 1 + int(value)
        year = start.year + month // 12
        month = month % 12 + 1
        day = min(start.day, _days_in_month(year, month))
        return start.replace(year=year, month=month, day=day)
    if unit == "a":
        return add_duration(start, value * 12, "mo")
    if unit not in _UNIT_DAYS:
        raise Unprocessable(f"Unsupported duration unit '{unit}'")
    return start + timedelta(days=value * _UNIT_DAYS[unit])


def _days_in_month(year: int, month: int) -> int:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day


def ref(resource_type: str, rid: str, display: str | None = None) -> dict[str, str]:
    out = {"reference": f"{resource_type}/{rid}"}
    if display:
        out["display"] = display
    return out


def split_ref(reference: str, expected: str | None = None) -> tuple[str, str]:
    """'Patient/x' -> ('Patient', 'x'); Unprocessable when malformed or of another type."""
    parts = reference.split("/_history/")[0].split("/")
    if len(parts) < 2 or not parts[-1] or (expected and parts[-2] != expected):
        want = f"a {expected} reference" if expected else "a Type/id reference"
        raise Unprocessable(f"'{reference}' is not {want}", code="value")
    return parts[-2], parts[-1]


def read_ref(store: Store, reference: str, expected: str | None = None) -> Resource:
    """The resource a local reference points to; NotFound when absent."""
    rtype, rid = split_ref(reference, expected)
    return store.read(rtype, rid)


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(
    system: str, code: str, display: str | None = None, text: str | None = None
) -> Resource:
    out: Resource = {"coding": [coding(system, code, display)]}
    if text or display:
        out["text"] = text or display
    return out


def codings_of(value: Any) -> list[tuple[str | None, str | None]]:
    """(system, code) pairs of a CodeableConcept (or list of them)."""
    items = value if isinstance(value, list) else [value]
    return [
        (c.get("system"), c.get("code"))
        for item in items
        if isinstance(item, dict)
        for c in item.get("coding") or []
    ]


def has_code(value: Any, system: str, code: str) -> bool:
    return (system, code) in codings_of(value)


def create_op(resource: Resource) -> WriteOp:
    """A create keeping the id we chose (so resources in one commit can reference each other)."""
    return WriteOp(
        "create", resource["resourceType"], id=resource["id"], resource=resource, keep_id=True
    )


def update_op(resource: Resource, if_match: str | None = None) -> WriteOp:
    return WriteOp(
        "update", resource["resourceType"], id=resource["id"], resource=resource, if_match=if_match
    )


def commit(store: Store, ops: list[WriteOp]) -> list[Resource]:
    """Commit atomically; return the written resources (with meta.versionId)."""
    results = store.commit(ops)
    return [r.resource for r in results if r.resource is not None]


def mapping(name: str) -> dict[str, Any]:
    """A YAML mapping from `mappings/` by name (without extension)."""
    return definitions.mapping(name)


def task_due(task: Resource) -> str | None:
    """A Task's due date/time: restriction.period.end."""
    return ((task.get("restriction") or {}).get("period") or {}).get("end")

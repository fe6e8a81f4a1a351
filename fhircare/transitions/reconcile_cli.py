"""Core of `fhircare reconcile BUNDLE.json`: pick the discharge out of a Bundle, reconcile it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.markup import escape
from rich.table import Table

from fhircare.fhir.datetimes import parse_datetime_lenient
from fhircare.fhir.errors import BadRequest
from fhircare.transitions.medrec import ReconciliationResult, reconcile

Resource = dict[str, Any]

INPATIENT_CLASSES = frozenset({"IMP", "EMER", "OBSENC", "ACUTE"})
MED_TYPES = frozenset({"MedicationRequest", "MedicationStatement", "List", "Medication"})
_SUBJECT_FIELD = {
    "MedicationRequest": "subject",
    "MedicationStatement": "subject",
    "List": "subject",
}


def _when(value: str | None) -> datetime:
    return parse_datetime_lenient(value) or datetime.min.replace(tzinfo=UTC)


def _aliases(resource: Resource, full_url: str | None) -> set[str]:
    out = {f"{resource['resourceType']}/{resource['id']}"} if resource.get("id") else set()
    if full_url:
        out.add(full_url)
    return out


def _entries(bundle: Any) -> list[tuple[Resource, str | None]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("input is not a FHIR Bundle (resourceType must be 'Bundle')")
    raw = bundle.get("entry")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("the Bundle has no entries", expression=["Bundle.entry"])
    out = []
    for n, e in enumerate(raw):
        if not isinstance(e, dict) or not isinstance(e.get("resource"), dict):
            raise BadRequest(f"entry {n} has no resource", expression=[f"Bundle.entry[{n}]"])
        r = e["resource"]
        if not isinstance(r.get("resourceType"), str):
            raise BadRequest(
                f"entry {n} resource has no resourceType",
                expression=[f"Bundle.entry[{n}].resource"],
            )
        out.append((r, e.get("fullUrl")))
    return out


def find_discharge(
    entries: list[tuple[Resource, str | None]], patient: set[str]
) -> tuple[Resource, str | None]:
    """The discharge: finished encounter of an inpatient-like class with the latest end."""
    best: tuple[datetime, Resource, str | None] | None = None
    for r, full in entries:
        if r["resourceType"] != "Encounter" or r.get("status") != "finished":
            continue
        cls = r.get("class")
        codes = {c.get("code") for c in cls} if isinstance(cls, list) else {(cls or {}).get("code")}
        if not codes & INPATIENT_CLASSES:
            continue
        subject = (r.get("subject") or {}).get("reference")
        if subject and subject not in patient:
            continue
        end = (r.get("period") or {}).get("end")
        if not end:
            continue
        key = _when(end)
        if best is None or key > best[0]:
            best = (key, r, full)
    if best is None:
        raise BadRequest(
            "no finished inpatient/emergency/observation Encounter (class IMP, EMER, OBSENC or "
            "ACUTE) with a period.end in the Bundle"
        )
    return best[1], best[2]


def run_reconcile(bundle: dict[str, Any]) -> ReconciliationResult:
    """Reconcile the latest discharge of the single Patient in a Bundle."""
    entries = _entries(bundle)
    patients = [(r, f) for r, f in entries if r["resourceType"] == "Patient"]
    if not patients:
        raise BadRequest("the Bundle has no Patient")
    if len(patients) > 1:
        raise BadRequest(f"the Bundle has {len(patients)} Patients; reconcile one at a time")
    patient = _aliases(*patients[0])
    encounter, enc_full = find_discharge(entries, patient)
    meds: list[Resource] = []
    for r, full in entries:
        if r["resourceType"] not in MED_TYPES:
            continue
        field = _SUBJECT_FIELD.get(r["resourceType"])
        subject = (r.get(field) or {}).get("reference") if field else None
        if subject and subject not in patient:
            continue
        meds.append({"fullUrl": full, "resource": r} if full else r)
    return reconcile(meds, {"fullUrl": enc_full, "resource": encounter} if enc_full else encounter)


_STATUS_STYLE = {
    "continued": "green",
    "changed": "yellow",
    "new": "cyan",
    "discontinued": "red",
}


def render_table(result: ReconciliationResult) -> Table:
    """A rich table of the items; the issues go in the caption."""
    table = Table(title=f"Medication reconciliation: {result.encounter}", show_lines=False)
    # a narrow terminal (or a pipe: 80 columns) folds a cell over lines, never cuts it to
    # an ellipsis: a status or a reference must be read whole
    table.add_column("#")
    table.add_column("status", min_width=len("discontinued"), no_wrap=True)
    for col in ("medication", "RxNorm", "before", "after", "changes"):
        table.add_column(col, overflow="fold")
    for n, item in enumerate(result.items):
        style = _STATUS_STYLE.get(item.status, "")
        table.add_row(
            str(n),
            f"[{style}]{item.status}[/{style}]" if style else item.status,
            escape(item.ingredient),
            ", ".join(item.rxnorm or []),
            escape(item.before or ""),
            escape(item.after or ""),
            escape("; ".join(item.notes) or ", ".join(item.changes)),
        )
    if result.issues:
        table.caption = "\n".join(
            escape(f"[{i.severity}] {i.type} {i.items}: {i.detail}") for i in result.issues
        )
    else:
        table.caption = "no issues"
    return table

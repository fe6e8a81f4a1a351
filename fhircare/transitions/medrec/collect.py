"""Collect the two lists: the pre-admission and the discharge medications of one stay.

Pre-admission: MedicationStatements, community/outpatient MedicationRequests authored before
admission, Lists coded LOINC 10160-0. Discharge: MedicationRequests with category discharge (or
community/outpatient ones authored during the stay), Lists coded LOINC 75311-1. A side with none
of these is derived from the MedicationRequest timeline against Encounter.period.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fhircare.fhir.datetimes import parse_datetime_lenient
from fhircare.transitions.medications import (
    MedInfo,
    Resolver,
    Resource,
    Sig,
    coding_key,
    concept_text,
    hold_instruction,
    identify_key,
    identify_medication,
    label_of,
    medication_of,
    parse_dosage,
    parse_name,
    stop_reason_of,
)

PRE_LIST_CODE = "10160-0"  # History of Medication use Narrative
DISCHARGE_LIST_CODE = "75311-1"  # Discharge medications Narrative
DISCHARGE_GRACE = timedelta(hours=12)  # orders written just after Encounter.period.end


def unwrap(x: Resource) -> tuple[Resource, str | None]:
    """(resource, fullUrl) of a resource or a Bundle entry."""
    if "resourceType" not in x and isinstance(x.get("resource"), dict):
        return x["resource"], x.get("fullUrl")
    return x, None


def ref_of(r: Resource, full_url: str | None, n: int) -> str:
    """How the outputs name an input: Type/id, else its fullUrl, else its position."""
    if r.get("id"):
        return f"{r['resourceType']}/{r['id']}"
    return full_url or f"urn:fhircare:input:{n}"


def parse_time(value: str | None) -> datetime | None:
    """A FHIR dateTime as an aware datetime (UTC when it has no offset), or None."""
    return parse_datetime_lenient(value)


def _codes(ccs: Iterable[Resource] | None) -> set[str]:
    return {c.get("code") for cc in ccs or () for c in cc.get("coding") or () if c.get("code")}


def _end_time(r: Resource) -> datetime | None:
    """When a medication ended, as far as the resource says."""
    for period in (
        r.get("effectivePeriod"),
        (r.get("dispenseRequest") or {}).get("validityPeriod"),
    ):
        if period and period.get("end"):
            return parse_time(period["end"])
    for d in r.get("dosageInstruction") or r.get("dosage") or ():
        end = (((d.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") or {}).get("end")
        if end:
            return parse_time(end)
    return parse_time((r.get("meta") or {}).get("lastUpdated"))


class Index:
    """Local reference resolution over the input resources, then the caller's resolver."""

    __slots__ = ("by_ref", "resolve")

    def __init__(self, by_ref: dict[str, Resource], resolve: Resolver | None) -> None:
        self.by_ref = by_ref
        self.resolve = resolve

    def add(self, key: str, r: Resource) -> None:
        self.by_ref[key] = r

    def __call__(self, ref: str) -> Resource | None:
        hit = self.by_ref.get(ref)
        if hit is None and "/_history/" in ref:
            hit = self.by_ref.get(ref.split("/_history/")[0])
        if hit is None and "://" in ref:
            hit = self.by_ref.get("/".join(ref.rstrip("/").split("/")[-2:]))
        if hit is None and self.resolve is not None:
            hit = self.resolve(ref)
        return hit


# --------------------------------------------------------------------------- building lists


def _info(r: Resource, ref: str, status: str, index: Resolver) -> MedInfo:
    """One medication resource as reconciliation sees it (the hot path of collection)."""
    get = r.get
    concept = get("medicationCodeableConcept")
    if concept:  # medication_of's common case, inline
        ident, resolved = identify_key(coding_key(concept)), True
    else:
        ident, concept, resolved = medication_of(r, index)
    dosage = get("dosageInstruction") or get("dosage") or []
    if ident.ingredients:
        label = " / ".join(ident.ingredients)  # label_of, which needs no fallback here
    else:
        fallback = concept_text(concept) or (get("medicationReference") or {}).get("display")
        label = fallback or "unknown medication"
    info = MedInfo(
        ref,
        get("resourceType", ""),
        status,
        ident,
        parse_dosage(dosage) if dosage else _NO_SIG,
        label,
        concept,
        dosage,
        None,
        resolved,
    )
    if status == "stopped":
        info.stop_reason = stop_reason_of(r)
    elif status == "active" and dosage:
        if len(dosage) == 1:  # the usual single dosage: its texts, inline (hot path)
            first = dosage[0]
            text, note = first.get("text"), first.get("patientInstruction")
            if (text and type(text) is str and hold_instruction(text)) or (
                note and type(note) is str and hold_instruction(note)
            ):
                _apply_hold_text(info, dosage)
        else:
            _apply_hold_text(info, dosage)
    return info


def _apply_hold_text(info: MedInfo, dosage: list[Resource]) -> None:
    """An active order whose sig says HOLD is held; a conditional hold needs confirming."""
    for d in dosage:
        for text in (d.get("text"), d.get("patientInstruction")):
            if not text or type(text) is not str:
                continue
            kind = hold_instruction(text)
            if kind == "held":
                info.status, info.held_by = "held", text
                return
            if kind == "conditional" and info.unconfirmed is None:
                info.unconfirmed = f"the sig has a conditional hold ('{text}')"


_NO_SIG = Sig()  # shared: Sig is immutable


def _medication_only(med: Resource, ref: str) -> MedInfo:
    ident = identify_medication(med)
    return MedInfo(
        ref=ref,
        resource_type="Medication",
        status="active",
        identity=ident,
        sig=Sig(),
        label=label_of(ident, concept_text(med.get("code"))),
        concept=med.get("code"),
    )


_MR_STATUS = {
    "active": "active",
    "on-hold": "held",
    "draft": "active",
    "completed": "active",
    "unknown": "active",
    "stopped": "stopped",
    "cancelled": "stopped",
}
_COMMUNITY = frozenset({"community", "outpatient"})
# Discharge orders in these statuses are kept on the list (dropping them could hide a
# medication the patient will take) but flagged: a draft is unsigned, "unknown" says
# nothing, and a completed order may or may not continue at home.
_UNCONFIRMED_ORDER = frozenset({"draft", "unknown", "completed"})

_MS_STATUS = {
    "active": "active",
    "intended": "active",
    "completed": "active",
    "unknown": "active",
    "on-hold": "held",
    "stopped": "stopped",
}


@dataclass(slots=True)
class Sides:
    """The two lists of one stay, plus the explicit stop decisions made at discharge."""

    pre: list[MedInfo] = field(default_factory=list)
    post: list[MedInfo] = field(default_factory=list)
    stops: list[MedInfo] = field(default_factory=list)  # explicit stop orders at discharge
    pre_explicit: bool = False
    post_explicit: bool = False


def collect_sides(
    entries: list[tuple[Resource, str]],
    start: datetime | None,
    end: datetime | None,
    encounter_aliases: set[str],
    index: Index,
) -> Sides:
    """Sort the patient's medication resources into the pre-admission and discharge lists."""
    sides = Sides()
    window_end = end + DISCHARGE_GRACE if end else None

    def in_stay(d: datetime | None) -> bool:
        return (
            d is not None
            and (start is None or d >= start)
            and (window_end is None or d <= window_end)
        )

    listed: set[str] = set()
    meds: list[tuple[Resource, str, str]] = []
    for r, ref in entries:  # Lists first: their members are not classified again
        rt = r.get("resourceType")
        if rt == "MedicationRequest" or rt == "MedicationStatement":
            meds.append((r, ref, rt))
            continue
        if rt != "List" or r.get("status") == "entered-in-error":
            continue
        codes = _codes([r.get("code") or {}])
        if PRE_LIST_CODE in codes:
            target, sides.pre_explicit = sides.pre, True
        elif DISCHARGE_LIST_CODE in codes:
            enc = (r.get("encounter") or {}).get("reference")
            if enc and enc not in encounter_aliases:
                continue
            target, sides.post_explicit = sides.post, True
        else:
            continue
        for entry in r.get("entry") or ():
            item_ref = (entry.get("item") or {}).get("reference") or ""
            member = index(item_ref) if item_ref else None
            info = _member(entry, item_ref, member, index)
            if info is None:
                continue
            if target is sides.post and (entry.get("deleted") or info.status == "stopped"):
                sides.stops.append(info)  # a stop decision; the resource keeps its own side
                continue
            listed.add(item_ref)
            if member is not None and member.get("id"):
                listed.add(f"{member['resourceType']}/{member['id']}")
            target.append(info)

    timeline: list[tuple[Resource, str]] = []
    for r, ref, rt in meds:
        if ref in listed:
            continue
        status = r.get("status")
        if status in ("entered-in-error", "not-taken") or status is None:
            continue
        if rt == "MedicationStatement":
            mapped = _MS_STATUS.get(status)
            if mapped is None:
                continue
            sides.pre_explicit = True
            ended = _end_time(r) if mapped == "stopped" or status == "completed" else None
            if mapped == "stopped" and not in_stay(ended):
                continue  # stopped before admission (or when is unknown): not a home med
            if status == "completed" and ended is not None and start and ended < start:
                continue
            sides.pre.append(_info(r, ref, mapped, index))
            continue
        cats = _codes(r.get("category"))
        mapped = _MR_STATUS.get(status)
        if mapped is None:
            continue
        if "discharge" in cats:
            discharge = True
        else:
            discharge = bool(
                cats & _COMMUNITY and in_stay(parse_time(r.get("authoredOn"))) and start is not None
            )
        if discharge:
            sides.post_explicit = True
            if mapped == "stopped":
                sides.stops.append(_info(r, ref, mapped, index))
            else:
                info = _info(r, ref, mapped, index)
                if status in _UNCONFIRMED_ORDER:
                    info.unconfirmed = f"the discharge order's status is '{status}'"
                sides.post.append(info)
        elif cats & _COMMUNITY:
            sides.pre_explicit = True
            if _still_taken_at_admission(r, status, mapped, start, in_stay):
                sides.pre.append(_info(r, ref, mapped, index))
        else:
            timeline.append((r, ref))

    for r, ref in timeline:
        status = r["status"]
        mapped = _MR_STATUS[status]
        authored = parse_time(r.get("authoredOn"))
        enc = (r.get("encounter") or {}).get("reference")
        during = in_stay(authored) or (enc in encounter_aliases if enc else False)
        before = authored is not None and start is not None and authored < start and not during
        if not sides.pre_explicit and before:
            if _still_taken_at_admission(r, status, mapped, start, in_stay):
                sides.pre.append(_info(r, ref, mapped, index))
        elif not sides.post_explicit and during:
            if mapped == "stopped":
                sides.stops.append(_info(r, ref, mapped, index))
            elif status != "completed":
                info = _info(r, ref, mapped, index)
                if status in _UNCONFIRMED_ORDER:
                    info.unconfirmed = f"the order's status is '{status}'"
                sides.post.append(info)
    return sides


def _still_taken_at_admission(
    r: Resource,
    status: str,
    mapped: str,
    start: datetime | None,
    in_stay: Callable[[datetime | None], bool],
) -> bool:
    """A pre-admission order that counts as a home medication: not a draft, not stopped
    before the stay, not completed before admission."""
    if status == "draft":
        return False
    if mapped == "stopped" and not in_stay(_end_time(r)):
        return False
    return not (status == "completed" and not _ends_after(r, start))


def _ends_after(r: Resource, start: datetime | None) -> bool:
    ended = _end_time(r)
    return ended is not None and (start is None or ended >= start)


def _member(
    entry: Resource, item_ref: str, member: Resource | None, index: Index
) -> MedInfo | None:
    display = (entry.get("item") or {}).get("display")
    if member is None:
        ident = parse_name(display) if display else parse_name("")
        return MedInfo(
            ref=item_ref or "unknown",
            resource_type="",
            status="active",
            identity=ident,
            sig=Sig(),
            label=label_of(ident, display or item_ref),
            concept={"text": display} if display else None,
            resolved=False,
        )
    rt = member.get("resourceType")
    status_map = _MS_STATUS if rt == "MedicationStatement" else _MR_STATUS
    if rt == "Medication":
        return _medication_only(member, item_ref)
    if rt not in ("MedicationStatement", "MedicationRequest"):
        return None
    mapped = status_map.get(member.get("status", ""), None)
    if mapped is None:
        return None
    ref = f"{rt}/{member['id']}" if member.get("id") else item_ref
    info = _info(member, ref, mapped, index)
    if entry.get("deleted"):
        info.status = "stopped"
        info.stop_reason = info.stop_reason or concept_text(entry.get("flag"))
    return info

"""Discharge medication reconciliation: pre-admission list vs discharge list, by ingredient.

Lists. Pre-admission: MedicationStatements, community/outpatient MedicationRequests authored
before admission, Lists coded LOINC 10160-0. Discharge: MedicationRequests with category
discharge (or community/outpatient ones authored during the stay), Lists coded LOINC 75311-1.
A side with none of these is derived from the MedicationRequest timeline against
Encounter.period.

Matching is by the SET of ingredients (RxNorm codes, brands, salts, combinations), never by
string similarity. Each pair is compared on strength, dose, frequency/PRN, route, dose form
and release, salt and hold status.

Issue severities (why):
- duplicate-therapy, same ingredient twice: high (double dosing, e.g. hidden acetaminophen).
  Same class: the class's `duplicate_severity` in the table (two anticoagulants high; dual
  antiplatelet or basal + bolus insulin low because usually intended; others moderate).
- omission of a chronic medication with no recorded stop: moderate, high when high-alert;
  an explicit stop without a reason: low (a decision exists, its reason is missing).
- high-risk (ISMP high-alert) new, or changed in dose/strength/frequency/route: high (these
  changes cause most post-discharge adverse drug events); other changes (form, salt, held):
  moderate.
- unverifiable (pair whose dose/frequency/route cannot be compared): moderate, high when
  high-alert: it must not pass as "continued" unseen.
- unmatched (drug not identified): moderate: it escapes every other check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from fhircare.fhir.datetimes import parse_datetime_lenient
from fhircare.transitions.medications import (
    Dose,
    Identity,
    MedInfo,
    Resolver,
    Resource,
    Sig,
    _coding_key,
    _identify_key,
    concept_text,
    label_of,
    load_tables,
    medication_of,
    parse_dosage,
    parse_name,
    stop_reason_of,
)

LOINC = "http://loinc.org"
PRE_LIST_CODE = "10160-0"  # History of Medication use Narrative
DISCHARGE_LIST_CODE = "75311-1"  # Discharge medications Narrative
DISCHARGE_GRACE = timedelta(hours=12)  # orders written just after Encounter.period.end

CONTINUED, CHANGED, NEW, DISCONTINUED = "continued", "changed", "new", "discontinued"
SEVERITY_RANK = {"high": 0, "moderate": 1, "low": 2}
_DOSING_CHANGES = frozenset({"dose", "strength", "frequency", "route"})


@dataclass(slots=True)
class RecItem:
    """One reconciled medication."""

    status: str
    ingredient: str
    rxnorm: list[str] | None
    before: str | None
    after: str | None
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    before_info: MedInfo | None = None
    after_info: MedInfo | None = None
    stop_reason: str | None = None
    stop_recorded: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "ingredient": self.ingredient,
            "rxnorm": self.rxnorm,
            "before": self.before,
            "after": self.after,
            "changes": list(self.changes),
        }


@dataclass(slots=True)
class RecIssue:
    """A problem for a person to review; `items` index ReconciliationResult.items."""

    type: str  # duplicate-therapy | omission | high-risk | unverifiable | unmatched
    severity: str  # high | moderate | low
    detail: str
    items: list[int]
    basis: str = ""  # duplicate-therapy: same-ingredient | same-class | class-group

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "severity": self.severity,
            "detail": self.detail,
            "items": list(self.items),
        }


@dataclass(slots=True)
class ReconciliationResult:
    """The reconciliation of one discharge."""

    encounter: str
    items: list[RecItem]
    issues: list[RecIssue]

    def to_json(self) -> dict[str, Any]:
        return {
            "encounter": self.encounter,
            "items": [i.to_json() for i in self.items],
            "issues": [i.to_json() for i in self.issues],
        }


# --------------------------------------------------------------------------- input helpers


def _unwrap(x: Resource) -> tuple[Resource, str | None]:
    if "resourceType" not in x and isinstance(x.get("resource"), dict):
        return x["resource"], x.get("fullUrl")
    return x, None


def _ref_of(r: Resource, full_url: str | None, n: int) -> str:
    if r.get("id"):
        return f"{r['resourceType']}/{r['id']}"
    return full_url or f"urn:fhircare:input:{n}"


def _dt(value: str | None) -> datetime | None:
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
            return _dt(period["end"])
    for d in r.get("dosageInstruction") or r.get("dosage") or ():
        end = (((d.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") or {}).get("end")
        if end:
            return _dt(end)
    return _dt((r.get("meta") or {}).get("lastUpdated"))


class _Index:
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
    get = r.get
    concept = get("medicationCodeableConcept")
    if concept:  # medication_of's common case, inline
        ident, resolved = _identify_key(_coding_key(concept)), True
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
    return info


_NO_SIG = Sig()  # shared: Sig is immutable


def _medication_only(med: Resource, ref: str) -> MedInfo:
    from fhircare.transitions.medications import identify_medication

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
class _Sides:
    pre: list[MedInfo] = field(default_factory=list)
    post: list[MedInfo] = field(default_factory=list)
    stops: list[MedInfo] = field(default_factory=list)  # explicit stop orders at discharge
    pre_explicit: bool = False
    post_explicit: bool = False


def _collect(
    entries: list[tuple[Resource, str]],
    start: datetime | None,
    end: datetime | None,
    encounter_aliases: set[str],
    index: _Index,
) -> _Sides:
    sides = _Sides()
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
                cats & _COMMUNITY and in_stay(_dt(r.get("authoredOn"))) and start is not None
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
        authored = _dt(r.get("authoredOn"))
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
    entry: Resource, item_ref: str, member: Resource | None, index: _Index
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


# --------------------------------------------------------------------------- comparison


def _release(info: MedInfo) -> str | None:
    return _release_of(info.identity)


_IR_FORMS = ("tablet", "capsule")


def _release_of(ident: Identity) -> str | None:
    if ident.release:
        return ident.release
    if ident.form in _IR_FORMS and ident.source != "medication":
        return "immediate"  # RxNorm names omit "immediate release"
    return None


def _dose_amount(info: MedInfo) -> tuple[str, float] | None:
    return _amount(info.sig.dose, info.identity.strength)


def _amount(
    d: Dose | None, strength: tuple[tuple[str, float, str], ...]
) -> tuple[str, float] | None:
    if d is None:
        return None
    unit = d.unit
    if len(strength) == 1:
        if unit == "count" and "/" not in strength[0][2]:
            return strength[0][2], round(d.value * strength[0][1], 6)
        if unit == "ml" and strength[0][2].endswith("/ml"):
            return strength[0][2][:-3], round(d.value * strength[0][1], 6)
    return unit, d.value


def _fmt(x: float) -> str:
    return f"{x:g}"


def compare(b: MedInfo, a: MedInfo) -> tuple[list[str], list[str], list[str]]:
    """(changes, notes, fields that could not be compared) between before and after."""
    changes: list[str] = []
    notes: list[str] = []
    missing: list[str] = []
    ib, ia = b.identity, a.identity
    sgb, sga = b.sig, a.sig
    sb, sa = ib.strength, ia.strength
    strength_units_differ = False
    if sb and sa and sb != sa:
        if [u for _, _, u in sb] != [u for _, _, u in sa]:
            strength_units_differ = True  # e.g. 40 mg tablet vs 10 mg/ml solution
        else:
            changes.append("strength")
        notes.append(f"strength {_strength_text(sb)} -> {_strength_text(sa)}")
    dose_b, dose_a = sgb.dose, sga.dose
    if dose_a is None or dose_b is None:
        missing.append("dose")
    else:
        ua, va = dose_a.unit, dose_a.value  # _amount, inline
        if len(sa) == 1:
            s0u = sa[0][2]
            if ua == "count" and "/" not in s0u:
                ua, va = s0u, round(va * sa[0][1], 6)
            elif ua == "ml" and s0u.endswith("/ml"):
                ua, va = s0u[:-3], round(va * sa[0][1], 6)
        ub, vb = dose_b.unit, dose_b.value
        if len(sb) == 1:
            s0u = sb[0][2]
            if ub == "count" and "/" not in s0u:
                ub, vb = s0u, round(vb * sb[0][1], 6)
            elif ub == "ml" and s0u.endswith("/ml"):
                ub, vb = s0u[:-3], round(vb * sb[0][1], 6)
        if ua != ub:
            missing.append("dose")
        elif va != vb and abs(va - vb) > 1e-6 * max(abs(va), abs(vb), 1.0):
            changes.append("dose")
            notes.append(f"dose {vb:g} {ub} -> {va:g} {ua}")
    fb, fa = sgb.per_day, sga.per_day
    if sgb.prn != sga.prn:
        changes.append("frequency")
        notes.append("as needed -> scheduled" if sgb.prn else "scheduled -> as needed")
    elif fb is None or fa is None:
        if not (sgb.prn and sga.prn and fb is None and fa is None):
            missing.append("frequency")
    elif abs(fb - fa) > 0.01 * max(fb, fa):
        changes.append("frequency")
        notes.append(f"frequency {fb:g}/day -> {fa:g}/day")
    rb, ra = sgb.route or ib.route, sga.route or ia.route  # MedInfo.route
    if rb is None or ra is None:
        missing.append("route")
    elif rb != ra:
        changes.append("route")
        notes.append(f"route {rb} -> {ra}")
    if ib.form and ia.form and ib.form != ia.form:
        changes.append("form")
        notes.append(f"form {ib.form} -> {ia.form}")
    elif strength_units_differ:
        changes.append("form")
        notes.append("different product (strength units differ)")
    else:
        relb = ib.release or (
            "immediate" if ib.form in _IR_FORMS and ib.source != "medication" else None
        )  # _release_of
        rela = ia.release or (
            "immediate" if ia.form in _IR_FORMS and ia.source != "medication" else None
        )
        if relb and rela and relb != rela:
            changes.append("form")
            notes.append(f"release {relb} -> {rela}")
        elif (relb or rela) and not (relb and rela) and "immediate" not in (relb, rela):
            missing.append("form")  # extended/delayed release on one side, unknown on the other
            notes.append(f"release {relb or 'not stated'} -> {rela or 'not stated'}")
    if sgb.complex or sga.complex:
        missing.append("dosage")
        notes.append(f"dosage not comparable: {sgb.complex or sga.complex}")
    if ib.salt and ia.salt and ib.salt != ia.salt:
        changes.append("salt")
        notes.append(f"salt {ib.salt} -> {ia.salt}")
    if a.status == "held":
        if b.status != "held":
            changes.append("held")
            notes.append("on hold at discharge")
    elif b.status == "held" and a.status == "active":
        changes.append("resumed")
        notes.append("on hold before admission, active at discharge")
    return changes, notes, missing


def _strength_text(strength: tuple[tuple[str, float, str], ...]) -> str:
    if len(strength) == 1:
        return f"{strength[0][1]:g} {strength[0][2]}"  # _fmt, inline
    return " / ".join([f"{v:g} {u}" for _, v, u in strength])


# --------------------------------------------------------------------------- reconcile


@lru_cache(maxsize=4096)
def _facts(ingredients: tuple[str, ...]) -> tuple[list[str] | None, frozenset[str], bool, bool]:
    """(RxNorm codes, classes, high-alert?, chronic?) of an ingredient set, from the table."""
    t = load_tables()
    known = [t.ingredients[n] for n in ingredients if n in t.ingredients]
    codes = [i.rxcui for i in known if i.rxcui]
    classes = frozenset(c for i in known for c in i.classes)
    return (
        codes or None,
        classes,
        any(i.high_alert for i in known),
        any(i.chronic for i in known),
    )


def _rxnorm(info: MedInfo) -> list[str] | None:
    codes = _facts(info.identity.ingredients)[0]
    return list(codes) if codes else None


def _text_key(info: MedInfo) -> str:
    return " ".join(info.label.lower().split())


_Compared = dict[tuple[int, int], tuple[list[str], list[str], list[str]]]


def _pair(
    pre: list[MedInfo],
    post: list[MedInfo],
    pre_keys: dict[int, Any],
    post_keys: dict[int, Any],
    compared: _Compared,
) -> dict[int, int]:
    """Pair pre and post medications with the same key, fewest differences first.

    `pre_keys`/`post_keys` map list positions to keys (in list order); comparisons made to
    rank candidates are kept in `compared` for reuse.
    """
    post_by_key: dict[Any, list[int]] = {}
    for j, k in post_keys.items():
        js = post_by_key.get(k)
        if js is None:
            post_by_key[k] = [j]
        else:
            js.append(j)
    pairs: dict[int, int] = {}
    candidates: list[tuple[int, int, int]] = []
    for i, k in pre_keys.items():
        js = post_by_key.get(k)
        if not js:
            continue
        if len(js) == 1:
            candidates.append((0, i, js[0]))
        else:
            b = pre[i]
            for j in js:
                compared[i, j] = result = compare(b, post[j])
                candidates.append((len(result[0]) * 2 + len(result[2]), i, j))
    if not candidates:
        return pairs
    candidates.sort()
    taken: set[int] = set()
    for _, i, j in candidates:
        if i not in pairs and j not in taken:
            pairs[i] = j
            taken.add(j)
    return pairs


def reconcile(
    resources: list[Resource],
    encounter: Resource,
    *,
    resolve: Resolver | None = None,
) -> ReconciliationResult:
    """Reconcile a patient's medication resources around a discharge Encounter.

    `resources` may be resources or Bundle entries ({"fullUrl", "resource"}); `resolve` looks up
    references (e.g. "Medication/123") that are not among them.
    """
    enc, enc_full = _unwrap(encounter)
    enc_ref = _ref_of(enc, enc_full, -1)
    aliases = {enc_ref}
    if enc_full:
        aliases.add(enc_full)
    if enc.get("id"):
        aliases.add(f"urn:uuid:{enc['id']}")
    period = enc.get("period") or {}
    start, end = _dt(period.get("start")), _dt(period.get("end"))
    entries: list[tuple[Resource, str]] = []
    by_ref: dict[str, Resource] = {}
    by_full: list[tuple[str, Resource]] = []
    for n, x in enumerate(resources):
        if "resourceType" not in x and isinstance(x.get("resource"), dict):  # _unwrap
            r, full = x["resource"], x.get("fullUrl")
        else:
            r, full = x, None
        if not isinstance(r, dict):
            continue
        rt = r.get("resourceType")
        if rt:
            rid = r.get("id")  # _ref_of
            ref = f"{rt}/{rid}" if rid else full or f"urn:fhircare:input:{n}"
            entries.append((r, ref))
            by_ref[ref] = r
        if full:
            by_full.append((full, r))
    for full, r in by_full:  # full URLs win over resource references
        by_ref[full] = r
    index = _Index(by_ref, resolve)
    sides = _collect(entries, start, end, aliases, index)
    return _reconcile_sides(enc_ref, sides)


_Facts = tuple[list[str] | None, frozenset[str], bool, bool]
_NO_FACTS: _Facts = (None, frozenset(), False, False)


def _keys_and_facts(
    meds: list[MedInfo],
) -> tuple[dict[int, Any], dict[int, Any], list[_Facts]]:
    """Per medication, once: its ingredient-set key (identified) or text key, and its facts."""
    keys: dict[int, Any] = {}
    text: dict[int, Any] = {}
    facts: list[_Facts] = []
    for i, m in enumerate(meds):
        ings = m.identity.ingredients
        if ings:
            keys[i] = frozenset(ings)
        else:
            text[i] = _text_key(m)
        facts.append(_facts(ings))
    return keys, text, facts


def _reconcile_sides(enc_ref: str, sides: _Sides) -> ReconciliationResult:
    pre, post = sides.pre, sides.post
    pre_keys, pre_text, pre_facts = _keys_and_facts(pre)
    post_keys, post_text, post_facts = _keys_and_facts(post)
    compared: _Compared = {}
    pairs = _pair(pre, post, pre_keys, post_keys, compared)
    pairs.update(_pair(pre, post, pre_text, post_text, compared))

    stops: dict[frozenset[str], MedInfo] = {}
    for s in sides.stops:
        if s.identity.ingredients:
            stops.setdefault(s.identity.key, s)

    items: list[RecItem] = []
    facts: list[_Facts] = []  # of each item's after_info or before_info
    chronic: list[bool] = []  # before_info is chronic
    issues: list[RecIssue] = []
    unverifiable: list[tuple[int, list[str]]] = []
    for i, b in enumerate(pre):
        fb = pre_facts[i]
        j = pairs.get(i)
        if j is not None:
            a = post[j]
            fa = post_facts[j]
            changes, notes, missing = compared.get((i, j)) or compare(b, a)
            a_identified = j in post_keys
            codes = fa[0] or fb[0]
            if missing and a_identified:
                unverifiable.append((len(items), missing))
            items.append(
                RecItem(
                    CHANGED if changes else CONTINUED,
                    a.label if a_identified else b.label,
                    list(codes) if codes else None,
                    b.ref,
                    a.ref,
                    changes,
                    notes,
                    b,
                    a,
                )
            )
            facts.append(fa)
            chronic.append(fb[3])
            continue
        codes = fb[0]
        item = RecItem(
            DISCONTINUED, b.label, list(codes) if codes else None, b.ref, None, [], [], b
        )
        if b.status == "stopped":
            item.stop_recorded, item.stop_reason = True, b.stop_reason
        elif i in pre_keys and pre_keys[i] in stops:
            stop = stops[pre_keys[i]]
            item.stop_recorded, item.stop_reason = True, stop.stop_reason
            item.notes.append(f"stopped by {stop.ref}")
        items.append(item)
        facts.append(fb)
        chronic.append(fb[3])
    paired_post = set(pairs.values())
    for j, a in enumerate(post):
        if j in paired_post:
            continue
        codes = post_facts[j][0]
        items.append(
            RecItem(
                NEW,
                a.label,
                list(codes) if codes else None,
                None,
                a.ref,
                ["held"] if a.status == "held" else [],
                [],
                None,
                a,
            )
        )
        facts.append(post_facts[j])
        chronic.append(False)
    issues.extend(_duplicates(items, facts))
    issues.extend(_omissions(items, facts, chronic))
    issues.extend(_high_risk(items, facts))
    for idx, missing in unverifiable:
        item = items[idx]
        high = facts[idx][2]
        issues.append(
            RecIssue(
                "unverifiable",
                "high" if high else "moderate",
                f"{item.ingredient}: {', '.join(missing)} cannot be compared between the "
                f"pre-admission and discharge lists; verify before treating it as "
                f"{item.status}",
                [idx],
            )
        )
    for idx, item in enumerate(items):
        after = item.after_info
        if after is not None and after.unconfirmed:
            issues.append(
                RecIssue(
                    "unverifiable",
                    "high" if facts[idx][2] else "moderate",
                    f"{item.ingredient}: {after.unconfirmed}; confirm whether the patient "
                    f"is to take it after discharge",
                    [idx],
                )
            )
        info = item.after_info or item.before_info
        if info is not None and not info.identity.ingredients:
            why = "reference could not be resolved" if not info.resolved else "not identified"
            issues.append(
                RecIssue(
                    "unmatched",
                    "moderate",
                    f"'{item.ingredient}' ({item.status}): drug {why}; review by hand "
                    f"(duplicate and omission checks could not run on it)",
                    [idx],
                )
            )
    issues.sort(key=_issue_order)
    return ReconciliationResult(encounter=enc_ref, items=items, issues=issues)


def _issue_order(x: RecIssue) -> tuple[int, list[int], str]:
    return SEVERITY_RANK[x.severity], x.items, x.type


# --------------------------------------------------------------------------- issues


def _ingredient_classes(item: RecItem) -> frozenset[str]:
    info = item.after_info or item.before_info
    return _facts(info.identity.ingredients)[1] if info else frozenset()


def _is_high_alert(item: RecItem) -> bool:
    info = item.after_info or item.before_info
    return _facts(info.identity.ingredients)[2] if info else False


def _is_chronic(item: RecItem) -> bool:
    info = item.before_info
    return _facts(info.identity.ingredients)[3] if info else False


def _duplicates(items: list[RecItem], facts: list[_Facts]) -> list[RecIssue]:
    """Duplicate therapy among the discharge medications; `facts` aligned with `items`."""
    t = load_tables()
    after: list[int] = []
    by_ing: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        a = it.after_info
        if it.status == DISCONTINUED or a is None or not a.identity.ingredients:
            continue
        after.append(i)
        for n in a.identity.ingredients:
            idxs = by_ing.get(n)
            if idxs is None:
                by_ing[n] = [i]
            else:
                idxs.append(i)
    out: list[RecIssue] = []
    seen_sets: set[tuple[int, ...]] = set()
    same_ing_pairs: set[tuple[int, int]] = set()  # (a, b), a < b: idxs lists are ascending
    for n, idxs in by_ing.items():
        if len(idxs) < 2:
            continue
        key = tuple(idxs)
        if key in seen_sets:
            continue
        seen_sets.add(key)
        for x, a in enumerate(idxs):
            for b in idxs[x + 1 :]:
                if a != b:
                    same_ing_pairs.add((a, b))
        names = "; ".join(items[i].ingredient for i in idxs)
        out.append(
            RecIssue(
                "duplicate-therapy",
                "high",
                f"{n} is in {len(idxs)} discharge medications ({names}): risk of double dosing",
                list(idxs),
                "same-ingredient",
            )
        )
    classes = {i: facts[i][1] for i in after}

    def new_dups(idxs: list[int]) -> bool:
        """Whether two of `idxs` (distinct, ascending) are not already a same-ingredient pair."""
        if not same_ing_pairs:  # idxs are distinct, so any two make a new pair
            return len(idxs) > 1
        for x, a in enumerate(idxs):
            for b in idxs[x + 1 :]:
                if (a, b) not in same_ing_pairs:
                    return True
        return False

    by_class: dict[str, list[int]] = {}
    for i in after:
        for c in classes[i]:
            idxs = by_class.get(c)
            if idxs is None:
                by_class[c] = [i]
            else:
                idxs.append(i)
    for c, idxs in by_class.items():
        if len(idxs) < 2:
            continue
        key = tuple(idxs)
        if key in seen_sets or not new_dups(idxs):
            continue
        seen_sets.add(key)
        meta = t.classes.get(c, {})
        names = "; ".join(items[i].ingredient for i in idxs)
        out.append(
            RecIssue(
                "duplicate-therapy",
                meta.get("duplicate_severity", "moderate"),
                f"{len(idxs)} {meta.get('name', c)} at discharge ({names})",
                list(idxs),
                "same-class",
            )
        )
    for group in t.duplicate_groups:
        members = set(group["classes"])
        idxs = [i for i in after if not classes[i].isdisjoint(members)]
        if len(idxs) < 2:
            continue
        spanned = set().union(*(classes[i] & members for i in idxs))
        if len(spanned) < 2 or tuple(idxs) in seen_sets:
            continue
        seen_sets.add(tuple(idxs))
        names = "; ".join(items[i].ingredient for i in idxs)
        out.append(
            RecIssue(
                "duplicate-therapy",
                group.get("severity", "moderate"),
                f"{group['name']} at discharge ({names})",
                idxs,
                "class-group",
            )
        )
    return out


def _omissions(items: list[RecItem], facts: list[_Facts], chronic: list[bool]) -> list[RecIssue]:
    out: list[RecIssue] = []
    for i, it in enumerate(items):
        b = it.before_info
        if it.status != DISCONTINUED or b is None or not b.identity.ingredients:
            continue
        if it.stop_recorded:
            if not it.stop_reason:
                out.append(
                    RecIssue(
                        "omission",
                        "moderate" if facts[i][2] else "low",  # high-alert: confirm the stop
                        f"{it.ingredient} was stopped without a documented reason",
                        [i],
                    )
                )
            continue
        if not chronic[i] and not facts[i][2]:
            continue  # acute, not high-alert: stopping it at discharge is usual
        high = facts[i][2]
        kind = ", ".join(k for k, on in (("chronic", chronic[i]), ("high-alert", high)) if on)
        out.append(
            RecIssue(
                "omission",
                "high" if high else "moderate",
                f"{it.ingredient} ({kind}) was taken before "
                f"admission but is missing from the discharge list with no recorded stop",
                [i],
            )
        )
    return out


def _high_risk(items: list[RecItem], facts: list[_Facts]) -> list[RecIssue]:
    out: list[RecIssue] = []
    for i, it in enumerate(items):
        if it.status not in (NEW, CHANGED) or not facts[i][2]:
            continue
        if it.status == NEW:
            sev, what = "high", "started"
        else:
            dosing = _DOSING_CHANGES.intersection(it.changes)
            sev = "high" if dosing else "moderate"
            what = "changed (" + ", ".join(it.notes or it.changes) + ")"
        out.append(
            RecIssue(
                "high-risk",
                sev,
                f"high-alert medication {it.ingredient} {what}: confirm dose, "
                f"monitoring and patient teaching",
                [i],
            )
        )
    return out

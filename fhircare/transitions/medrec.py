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
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from fhircare.transitions.medications import (
    MedInfo,
    Resolver,
    Resource,
    Sig,
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
    if not value:
        return None
    try:
        d = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            d = datetime.fromisoformat(value[:10])
        except ValueError:
            return None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


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

    def __init__(self, entries: list[tuple[Resource, str]], resolve: Resolver | None) -> None:
        self.by_ref: dict[str, Resource] = {}
        for r, ref in entries:
            self.by_ref[ref] = r
            if r.get("id"):
                self.by_ref[f"{r['resourceType']}/{r['id']}"] = r
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
    ident, concept, resolved = medication_of(r, index)
    dosage = r.get("dosageInstruction") or r.get("dosage") or []
    fallback = concept_text(concept) or (r.get("medicationReference") or {}).get("display")
    info = MedInfo(
        ref=ref,
        resource_type=r.get("resourceType", ""),
        status=status,
        identity=ident,
        sig=parse_dosage(dosage) if dosage else Sig(),
        label=label_of(ident, fallback),
        concept=concept,
        dosage=dosage,
        resolved=resolved,
    )
    if status == "stopped":
        info.stop_reason = stop_reason_of(r)
    return info


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
    for r, _ in entries:  # Lists first: their members are not classified again
        if r.get("resourceType") != "List" or r.get("status") == "entered-in-error":
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
    for r, ref in entries:
        rt = r.get("resourceType")
        if ref in listed or rt not in ("MedicationRequest", "MedicationStatement"):
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
        authored = _dt(r.get("authoredOn"))
        if "discharge" in cats or (
            cats & {"community", "outpatient"} and in_stay(authored) and start is not None
        ):
            sides.post_explicit = True
            if mapped == "stopped":
                sides.stops.append(_info(r, ref, mapped, index))
            else:
                sides.post.append(_info(r, ref, mapped, index))
        elif cats & {"community", "outpatient"}:
            sides.pre_explicit = True
            if status in ("draft",):
                continue
            if mapped == "stopped" and not in_stay(_end_time(r)):
                continue
            if status == "completed" and not _ends_after(r, start):
                continue
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
            if status in ("draft",):
                continue
            if mapped == "stopped" and not in_stay(_end_time(r)):
                continue
            if status == "completed" and not _ends_after(r, start):
                continue
            sides.pre.append(_info(r, ref, mapped, index))
        elif not sides.post_explicit and during:
            if mapped == "stopped":
                sides.stops.append(_info(r, ref, mapped, index))
            elif status != "completed":
                sides.post.append(_info(r, ref, mapped, index))
    return sides


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
    ident = info.identity
    if ident.release:
        return ident.release
    if ident.form in ("tablet", "capsule") and ident.source != "medication":
        return "immediate"  # RxNorm names omit "immediate release"
    return None


def _dose_amount(info: MedInfo) -> tuple[str, float] | None:
    d = info.sig.dose
    if d is None:
        return None
    strength = info.identity.strength
    if d.unit == "count" and len(strength) == 1 and "/" not in strength[0][2]:
        return strength[0][2], round(d.value * strength[0][1], 6)
    if d.unit == "ml" and len(strength) == 1 and strength[0][2].endswith("/ml"):
        return strength[0][2][:-3], round(d.value * strength[0][1], 6)
    return d.unit, d.value


def _fmt(x: float) -> str:
    return f"{x:g}"


def compare(b: MedInfo, a: MedInfo) -> tuple[list[str], list[str], list[str]]:
    """(changes, notes, fields that could not be compared) between before and after."""
    changes: list[str] = []
    notes: list[str] = []
    missing: list[str] = []
    ib, ia = b.identity, a.identity
    strength_units_differ = False
    if ib.strength and ia.strength and ib.strength != ia.strength:
        if [u for _, _, u in ib.strength] != [u for _, _, u in ia.strength]:
            strength_units_differ = True  # e.g. 40 mg tablet vs 10 mg/ml solution
        else:
            changes.append("strength")
        notes.append(f"strength {_strength_text(ib.strength)} -> {_strength_text(ia.strength)}")
    da, db = _dose_amount(a), _dose_amount(b)
    if da is None or db is None or da[0] != db[0]:
        missing.append("dose")
    elif abs(da[1] - db[1]) > 1e-6 * max(abs(da[1]), abs(db[1]), 1.0):
        changes.append("dose")
        notes.append(f"dose {_fmt(db[1])} {db[0]} -> {_fmt(da[1])} {da[0]}")
    fb, fa = b.sig.per_day, a.sig.per_day
    if b.sig.prn != a.sig.prn:
        changes.append("frequency")
        notes.append("as needed -> scheduled" if b.sig.prn else "scheduled -> as needed")
    elif fb is None or fa is None:
        if not (b.sig.prn and a.sig.prn and fb is None and fa is None):
            missing.append("frequency")
    elif abs(fb - fa) > 0.01 * max(fb, fa):
        changes.append("frequency")
        notes.append(f"frequency {_fmt(fb)}/day -> {_fmt(fa)}/day")
    rb, ra = b.route, a.route
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
        relb, rela = _release(b), _release(a)
        if relb and rela and relb != rela:
            changes.append("form")
            notes.append(f"release {relb} -> {rela}")
    if ib.salt and ia.salt and ib.salt != ia.salt:
        changes.append("salt")
        notes.append(f"salt {ib.salt} -> {ia.salt}")
    if a.status == "held" and b.status != "held":
        changes.append("held")
        notes.append("on hold at discharge")
    elif b.status == "held" and a.status == "active":
        changes.append("resumed")
        notes.append("on hold before admission, active at discharge")
    return changes, notes, missing


def _strength_text(strength: tuple[tuple[str, float, str], ...]) -> str:
    return " / ".join(f"{_fmt(v)} {u}" for _, v, u in strength)


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


def _pair(pre: list[MedInfo], post: list[MedInfo], key: Callable[[MedInfo], Any]) -> dict[int, int]:
    """Pair pre and post medications with the same key, fewest differences first."""
    post_by_key: dict[Any, list[int]] = {}
    for j, a in enumerate(post):
        post_by_key.setdefault(key(a), []).append(j)
    pairs: dict[int, int] = {}
    taken: set[int] = set()
    candidates: list[tuple[int, int, int]] = []
    for i, b in enumerate(pre):
        js = post_by_key.get(key(b))
        if not js:
            continue
        if len(js) == 1:
            candidates.append((0, i, js[0]))
        else:
            for j in js:
                changes, _, missing = compare(b, post[j])
                candidates.append((len(changes) * 2 + len(missing), i, j))
    candidates.sort()
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
    for n, x in enumerate(resources):
        r, full = _unwrap(x)
        if isinstance(r, dict) and r.get("resourceType"):
            ref = _ref_of(r, full, n)
            entries.append((r, ref))
    index = _Index(entries, resolve)
    for x in resources:
        r, full = _unwrap(x)
        if full and isinstance(r, dict):
            index.add(full, r)
    sides = _collect(entries, start, end, aliases, index)
    return _reconcile_sides(enc_ref, sides)


def _reconcile_sides(enc_ref: str, sides: _Sides) -> ReconciliationResult:
    pre, post = sides.pre, sides.post
    ident_pre = [i for i, m in enumerate(pre) if m.identified]
    ident_post = [j for j, m in enumerate(post) if m.identified]
    pairs_local = _pair(
        [pre[i] for i in ident_pre], [post[j] for j in ident_post], lambda m: m.identity.key
    )
    pairs = {ident_pre[i]: ident_post[j] for i, j in pairs_local.items()}
    un_pre = [i for i, m in enumerate(pre) if not m.identified]
    un_post = [j for j, m in enumerate(post) if not m.identified]
    text_pairs = _pair([pre[i] for i in un_pre], [post[j] for j in un_post], _text_key)
    pairs.update({un_pre[i]: un_post[j] for i, j in text_pairs.items()})

    stops: dict[frozenset[str], MedInfo] = {}
    for s in sides.stops:
        if s.identified:
            stops.setdefault(s.identity.key, s)

    items: list[RecItem] = []
    issues: list[RecIssue] = []
    unverifiable: list[tuple[int, list[str]]] = []
    paired_post: set[int] = set(pairs.values())
    for i, b in enumerate(pre):
        j = pairs.get(i)
        if j is not None:
            a = post[j]
            changes, notes, missing = compare(b, a)
            item = RecItem(
                status=CHANGED if changes else CONTINUED,
                ingredient=a.label if a.identified else b.label,
                rxnorm=_rxnorm(a) or _rxnorm(b),
                before=b.ref,
                after=a.ref,
                changes=changes,
                notes=notes,
                before_info=b,
                after_info=a,
            )
            if missing and a.identified:
                unverifiable.append((len(items), missing))
            items.append(item)
            continue
        item = RecItem(
            status=DISCONTINUED,
            ingredient=b.label,
            rxnorm=_rxnorm(b),
            before=b.ref,
            after=None,
            before_info=b,
        )
        if b.status == "stopped":
            item.stop_recorded, item.stop_reason = True, b.stop_reason
        elif b.identified and b.identity.key in stops:
            stop = stops[b.identity.key]
            item.stop_recorded, item.stop_reason = True, stop.stop_reason
            item.notes.append(f"stopped by {stop.ref}")
        items.append(item)
    for j, a in enumerate(post):
        if j in paired_post:
            continue
        items.append(
            RecItem(
                status=NEW,
                ingredient=a.label,
                rxnorm=_rxnorm(a),
                before=None,
                after=a.ref,
                changes=["held"] if a.status == "held" else [],
                after_info=a,
            )
        )
    issues.extend(_duplicates(items))
    issues.extend(_omissions(items))
    issues.extend(_high_risk(items))
    for idx, missing in unverifiable:
        item = items[idx]
        high = _is_high_alert(item)
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
        info = item.after_info or item.before_info
        if info is not None and not info.identified:
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
    issues.sort(key=lambda x: (SEVERITY_RANK[x.severity], x.items, x.type))
    return ReconciliationResult(encounter=enc_ref, items=items, issues=issues)


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


def _duplicates(items: list[RecItem]) -> list[RecIssue]:
    t = load_tables()
    after = [
        i
        for i, it in enumerate(items)
        if it.status != DISCONTINUED and it.after_info is not None and it.after_info.identified
    ]
    out: list[RecIssue] = []
    seen_sets: set[tuple[int, ...]] = set()
    by_ing: dict[str, list[int]] = {}
    for i in after:
        for n in items[i].after_info.identity.ingredients:  # type: ignore[union-attr]
            by_ing.setdefault(n, []).append(i)
    same_ing_pairs: set[frozenset[int]] = set()
    for n, idxs in by_ing.items():
        if len(idxs) < 2 or tuple(idxs) in seen_sets:
            continue
        seen_sets.add(tuple(idxs))
        same_ing_pairs.update(frozenset((a, b)) for a in idxs for b in idxs if a != b)
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
    classes = {i: _ingredient_classes(items[i]) for i in after}

    def new_dups(idxs: list[int]) -> bool:
        pairs = {frozenset((a, b)) for a in idxs for b in idxs if a != b}
        return bool(pairs - same_ing_pairs)

    by_class: dict[str, list[int]] = {}
    for i in after:
        for c in classes[i]:
            by_class.setdefault(c, []).append(i)
    for c, idxs in by_class.items():
        if len(idxs) < 2 or tuple(idxs) in seen_sets or not new_dups(idxs):
            continue
        seen_sets.add(tuple(idxs))
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
        idxs = [i for i in after if classes[i] & members]
        spanned = set().union(*(classes[i] & members for i in idxs)) if idxs else set()
        if len(idxs) < 2 or len(spanned) < 2 or tuple(idxs) in seen_sets:
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


def _omissions(items: list[RecItem]) -> list[RecIssue]:
    out: list[RecIssue] = []
    for i, it in enumerate(items):
        if it.status != DISCONTINUED or it.before_info is None or not it.before_info.identified:
            continue
        if it.stop_recorded:
            if not it.stop_reason:
                out.append(
                    RecIssue(
                        "omission",
                        "low",
                        f"{it.ingredient} was stopped without a documented reason",
                        [i],
                    )
                )
            continue
        if not _is_chronic(it):
            continue
        high = _is_high_alert(it)
        out.append(
            RecIssue(
                "omission",
                "high" if high else "moderate",
                f"{it.ingredient} (chronic{', high-alert' if high else ''}) was taken before "
                f"admission but is missing from the discharge list with no recorded stop",
                [i],
            )
        )
    return out


def _high_risk(items: list[RecItem]) -> list[RecIssue]:
    out: list[RecIssue] = []
    for i, it in enumerate(items):
        if it.status not in (NEW, CHANGED) or not _is_high_alert(it):
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

"""reconcile(): collect the two lists, pair them, compare each pair, raise the issues."""

from __future__ import annotations

from fhircare.transitions.medications import MedInfo, Resolver, Resource
from fhircare.transitions.medrec import issues as checks
from fhircare.transitions.medrec.collect import (
    Index,
    Sides,
    collect_sides,
    parse_time,
    ref_of,
    unwrap,
)
from fhircare.transitions.medrec.compare import compare
from fhircare.transitions.medrec.model import (
    CHANGED,
    CONTINUED,
    DISCONTINUED,
    NEW,
    RecIssue,
    RecItem,
    ReconciliationResult,
    issue_order,
)
from fhircare.transitions.medrec.pairing import Compared, Facts, keys_and_facts, pair


def reconcile(
    resources: list[Resource],
    encounter: Resource,
    *,
    resolve: Resolver | None = None,
) -> ReconciliationResult:
    """Reconcile a patient's medication resources around a discharge Encounter.

    `resources` may be resources or Bundle entries ({"fullUrl", "resource"}); `resolve` looks up
    references (e.g. "Medication/123") that are not among them. `unwrap` and `ref_of` are
    inlined in the loop over `resources` (marked); tests/unit/test_medrec_perf_equivalence.py
    checks the result against cold caches and fresh copies of the input.
    """
    enc, enc_full = unwrap(encounter)
    enc_ref = ref_of(enc, enc_full, -1)
    aliases = {enc_ref}
    if enc_full:
        aliases.add(enc_full)
    if enc.get("id"):
        aliases.add(f"urn:uuid:{enc['id']}")
    period = enc.get("period") or {}
    start, end = parse_time(period.get("start")), parse_time(period.get("end"))
    entries: list[tuple[Resource, str]] = []
    by_ref: dict[str, Resource] = {}
    by_full: list[tuple[str, Resource]] = []
    for n, x in enumerate(resources):
        if "resourceType" not in x and isinstance(x.get("resource"), dict):  # unwrap()
            r, full = x["resource"], x.get("fullUrl")
        else:
            r, full = x, None
        if not isinstance(r, dict):
            continue
        rt = r.get("resourceType")
        if rt:
            rid = r.get("id")  # ref_of()
            ref = f"{rt}/{rid}" if rid else full or f"urn:fhircare:input:{n}"
            entries.append((r, ref))
            by_ref[ref] = r
        if full:
            by_full.append((full, r))
    for full, r in by_full:  # full URLs win over resource references
        by_ref[full] = r
    sides = collect_sides(entries, start, end, aliases, Index(by_ref, resolve))
    return reconcile_sides(enc_ref, sides)


def reconcile_sides(enc_ref: str, sides: Sides) -> ReconciliationResult:
    """Pair the two lists, build one item per medication, then raise the issues."""
    pre, post = sides.pre, sides.post
    pre_keys, pre_text, pre_facts = keys_and_facts(pre)
    post_keys, post_text, post_facts = keys_and_facts(post)
    compared: Compared = {}
    pairs = pair(pre, post, pre_keys, post_keys, compared)
    pairs.update(pair(pre, post, pre_text, post_text, compared))

    stops: dict[frozenset[str], MedInfo] = {}
    for s in sides.stops:
        if s.identity.ingredients:
            stops.setdefault(s.identity.key, s)

    items: list[RecItem] = []
    facts: list[Facts] = []  # of each item's after_info or before_info
    chronic: list[bool] = []  # before_info is chronic
    missing: list[tuple[int, list[str]]] = []  # pairs whose dosing could not be compared
    for i, b in enumerate(pre):
        fb = pre_facts[i]
        j = pairs.get(i)
        if j is not None:
            a = post[j]
            fa = post_facts[j]
            changes, notes, fields = compared.get((i, j)) or compare(b, a)
            a_identified = j in post_keys
            codes = fa[0] or fb[0]
            if fields:  # identified or paired by identical text: an unread sig is flagged
                missing.append((len(items), fields))
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
    found: list[RecIssue] = []
    found.extend(checks.duplicates(items, facts))
    found.extend(checks.omissions(items, facts, chronic))
    found.extend(checks.high_risk(items, facts))
    found.extend(checks.interactions(items, facts))
    found.extend(checks.unverifiable(items, facts, missing))
    found.extend(checks.unmatched(items))
    found.sort(key=issue_order)
    return ReconciliationResult(encounter=enc_ref, items=items, issues=found)

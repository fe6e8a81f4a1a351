"""Issues a person must review: duplicate therapy, omissions, high-alert changes, unverifiable
comparisons and unidentified drugs.

Severities (why):
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
- interaction (a combination rule of the table: anticoagulant with antiplatelet or NSAID,
  opioid with benzodiazepine): the rule's severity (high) when one of the drugs is new or
  changed at discharge; moderate when every one continues unchanged (a combination already
  taken at home still deserves a look, but was not started here).
- unmatched (drug not identified): moderate: it escapes every other check.
"""

from __future__ import annotations

from fhircare.transitions.medications import load_tables
from fhircare.transitions.medrec.model import CHANGED, DISCONTINUED, NEW, RecIssue, RecItem
from fhircare.transitions.medrec.pairing import Facts

DOSING_CHANGES = frozenset({"dose", "strength", "frequency", "route", "schedule"})


def duplicates(items: list[RecItem], facts: list[Facts]) -> list[RecIssue]:
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


def omissions(items: list[RecItem], facts: list[Facts], chronic: list[bool]) -> list[RecIssue]:
    """Pre-admission medications missing at discharge: silently, or stopped without a reason.

    A medication whose ingredients all go on inside a discharge combination product
    (bisoprolol -> bisoprolol/hydrochlorothiazide) is replaced, not omitted: noted, not raised.
    """
    discharge: list[tuple[int, frozenset[str]]] | None = None  # built when first needed
    out: list[RecIssue] = []
    for i, it in enumerate(items):
        b = it.before_info
        if it.status != DISCONTINUED or b is None or not b.identity.ingredients:
            continue
        if discharge is None:
            discharge = [
                (j, frozenset(x.after_info.identity.ingredients))
                for j, x in enumerate(items)
                if x.status != DISCONTINUED
                and x.after_info is not None
                and len(x.after_info.identity.ingredients) > 1
            ]
        key = b.identity.key
        inside = next((j for j, ings in discharge if key < ings), None)
        if inside is not None and not it.stop_recorded:
            it.notes.append(f"goes on inside {items[inside].ingredient} at discharge")
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
        unknown = facts[i][4]
        if not chronic[i] and not facts[i][2] and not unknown:
            continue  # acute, not high-alert: stopping it at discharge is usual
        high = facts[i][2]
        kind = ", ".join(
            k
            for k, on in (
                ("chronic", chronic[i]),
                ("high-alert", high),
                ("not in the drug table: whether it is chronic is unknown", unknown),
            )
            if on
        )
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


def high_risk(items: list[RecItem], facts: list[Facts]) -> list[RecIssue]:
    """High-alert medications started or changed."""
    out: list[RecIssue] = []
    for i, it in enumerate(items):
        if it.status not in (NEW, CHANGED) or not facts[i][2]:
            continue
        if it.status == NEW:
            sev, what = "high", "started"
        else:
            dosing = DOSING_CHANGES.intersection(it.changes)
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


def unverifiable(
    items: list[RecItem], facts: list[Facts], missing: list[tuple[int, list[str]]]
) -> list[RecIssue]:
    """Pairs whose dosing cannot be compared, and discharge orders that need confirming."""
    out: list[RecIssue] = []
    for idx, fields in missing:
        item = items[idx]
        out.append(
            RecIssue(
                "unverifiable",
                "high" if facts[idx][2] else "moderate",
                f"{item.ingredient}: {', '.join(fields)} cannot be compared between the "
                f"pre-admission and discharge lists; verify before treating it as "
                f"{item.status}",
                [idx],
            )
        )
    for idx, item in enumerate(items):
        after = item.after_info
        if after is not None and after.unconfirmed:
            out.append(
                RecIssue(
                    "unverifiable",
                    "high" if facts[idx][2] else "moderate",
                    f"{item.ingredient}: {after.unconfirmed}; confirm whether the patient "
                    f"is to take it after discharge",
                    [idx],
                )
            )
    return out


def unmatched(items: list[RecItem]) -> list[RecIssue]:
    """Medications not identified: they escape every other check."""
    out: list[RecIssue] = []
    for idx, item in enumerate(items):
        info = item.after_info or item.before_info
        if info is not None and not info.identity.ingredients:
            why = "reference could not be resolved" if not info.resolved else "not identified"
            out.append(
                RecIssue(
                    "unmatched",
                    "moderate",
                    f"'{item.ingredient}' ({item.status}): drug {why}; review by hand "
                    f"(duplicate and omission checks could not run on it)",
                    [idx],
                )
            )
    return out


def interactions(items: list[RecItem], facts: list[Facts]) -> list[RecIssue]:
    """Combinations of discharge medications the table's interaction rules name."""
    t = load_tables()
    watched = t.interaction_classes
    hits: dict[str, list[int]] = {}  # rule class -> discharge medications taken of that class
    for i, it in enumerate(items):
        classes = facts[i][1]
        if not classes or classes.isdisjoint(watched):
            continue
        after = it.after_info
        if after is None or it.status == DISCONTINUED or after.status == "held":
            continue
        for c in classes & watched:
            hits.setdefault(c, []).append(i)
    out: list[RecIssue] = []
    if not hits:
        return out
    for rule in t.interactions:
        groups = [hits.get(c) for c in rule["classes"]]
        if not all(groups):
            continue
        idxs = sorted(set().union(*groups))  # type: ignore[arg-type]
        if len(idxs) < 2:
            continue
        fresh = any(items[i].status in (NEW, CHANGED) for i in idxs)
        names = "; ".join(items[i].ingredient for i in idxs)
        out.append(
            RecIssue(
                "interaction",
                rule.get("severity", "high") if fresh else "moderate",
                f"{rule['name']} at discharge ({names}): {rule['basis']}",
                idxs,
                rule["name"],
            )
        )
    return out

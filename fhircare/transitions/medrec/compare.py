"""Compare one pre-admission medication with its discharge counterpart."""

from __future__ import annotations

import re
from functools import lru_cache

from fhircare.transitions.medications import Dose, Identity, MedInfo

IR_FORMS = ("tablet", "capsule")
_HELD_SIG_GAPS = frozenset({"dose", "frequency", "route", "dosage"})
_SLIDING_RE = re.compile(r"\bsliding scale\b|\bcorrection(?:al)? (?:scale|dose|insulin)\b")


def _sliding_scale(text: str | None) -> bool:
    return bool(text) and _sliding_text(text)  # type: ignore[arg-type]


@lru_cache(maxsize=4096)
def _sliding_text(text: str) -> bool:
    return bool(_SLIDING_RE.search(text.lower()))


def release_of(ident: Identity) -> str | None:
    """Release of a product; plain tablets and capsules named by RxNorm are immediate."""
    if ident.release:
        return ident.release
    if ident.form in IR_FORMS and ident.source != "medication":
        return "immediate"  # RxNorm names omit "immediate release"
    return None


def amount(
    d: Dose | None, strength: tuple[tuple[str, float, str], ...]
) -> tuple[str, float] | None:
    """(unit, value) of a dose, counts and volumes turned into mass by a single strength."""
    if d is None:
        return None
    unit = d.unit
    if len(strength) == 1:
        if unit == "count" and "/" not in strength[0][2]:
            return strength[0][2], round(d.value * strength[0][1], 6)
        if unit == "ml" and strength[0][2].endswith("/ml"):
            return strength[0][2][:-3], round(d.value * strength[0][1], 6)
    return unit, d.value


def compare(b: MedInfo, a: MedInfo) -> tuple[list[str], list[str], list[str]]:
    """(changes, notes, fields that could not be compared) between before and after.

    The hot path of reconciliation: `amount` and `release_of` are inlined here (marked), and
    tests/unit/test_medrec_perf_equivalence.py checks that the inlined copies agree.
    """
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
        notes.append(f"strength {strength_text(sb)} -> {strength_text(sa)}")
    ub_, ua_ = ib.unitless, ia.unitless
    if (ub_ or ua_) and ub_ != ua_ and (sb or sa or (ub_ and ua_)):
        missing.append("strength")
        notes.append(
            f"strength {ub_ or strength_text(sb) or 'not stated'} -> "
            f"{ua_ or strength_text(sa) or 'not stated'} (a strength without units is not "
            f"assumed to be mg)"
        )
    counted = False  # both doses are tablet/capsule counts that no strength turned into mass
    complex_ = sgb.complex or sga.complex
    scale = _sliding_scale(sgb.text), _sliding_scale(sga.text)
    whole = compare_regimens(b, a) if complex_ else None
    if scale[0] != scale[1]:  # a sliding scale on one side only is a change of regimen
        whole = (
            "schedule",
            "fixed dosing -> sliding scale" if scale[1] else "sliding scale -> fixed dosing",
        )
    if whole is not None:
        if whole:
            changes.append(whole[0])
            notes.append(whole[1])
        counted = whole == () and regimen_unit(b) == "count"
    else:
        dose_b, dose_a = sgb.dose, sga.dose
        if dose_a is None or dose_b is None:
            missing.append("dose")
        else:
            ua, va = dose_a.unit, dose_a.value  # amount(), inline
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
            counted = ua == "count"
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
        if complex_:
            missing.append("dosage")
            notes.append(f"dosage not comparable: {complex_}")
    if counted and (sb, ub_) != (sa, ua_) and "strength" not in missing and not (sb and sa):
        missing.append("strength")
        notes.append("doses are tablet counts but the strength is not stated on both lists")
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
            "immediate" if ib.form in IR_FORMS and ib.source != "medication" else None
        )  # release_of(), inline
        rela = ia.release or (
            "immediate" if ia.form in IR_FORMS and ia.source != "medication" else None
        )
        if relb and rela and relb != rela:
            changes.append("form")
            notes.append(f"release {relb} -> {rela}")
        elif (relb or rela) and not (relb and rela) and "immediate" not in (relb, rela):
            missing.append("form")  # extended/delayed release on one side, unknown on the other
            notes.append(f"release {relb or 'not stated'} -> {rela or 'not stated'}")
    if ib.salt and ia.salt and ib.salt != ia.salt:
        changes.append("salt")
        notes.append(f"salt {ib.salt} -> {ia.salt}")
    if a.status == "held" and a.held_by:
        # held by its sig ("HOLD until seen"): the sig says when, not how much; the hold is
        # the change reported, and the dose to resume is compared only where it is written
        missing = [m for m in missing if m not in _HELD_SIG_GAPS]
    if a.status == "held":
        if b.status != "held":
            changes.append("held")
            notes.append(
                f"on hold at discharge (sig: '{a.held_by}')"
                if a.held_by
                else "on hold at discharge"
            )
    elif b.status == "held" and a.status == "active":
        changes.append("resumed")
        notes.append("on hold before admission, active at discharge")
    return changes, notes, missing


def strength_text(strength: tuple[tuple[str, float, str], ...]) -> str:
    """'10 mg', or '5 mg / 325 mg' for a combination."""
    if len(strength) == 1:
        return f"{strength[0][1]:g} {strength[0][2]}"
    return " / ".join([f"{v:g} {u}" for _, v, u in strength])


def compare_regimens(b: MedInfo, a: MedInfo) -> tuple[str, str] | tuple[()] | None:
    """() when both whole regimens are the same, (change, note) when they differ, None when
    either cannot be read or they are not comparable (flagged by the caller)."""
    from fhircare.transitions.medrec.regimen import comparable, difference, regimen_of

    rb, ra = regimen_of(b), regimen_of(a)
    if rb is None or ra is None or not comparable(rb, ra):
        return None
    return difference(rb, ra) or ()


def regimen_unit(info: MedInfo) -> str | None:
    """The unit a medication's whole regimen is counted in (mg, count...)."""
    from fhircare.transitions.medrec.regimen import regimen_of

    r = regimen_of(info)
    return r.unit if r else None

"""Whole-regimen comparison for variable-dose sigs: weekly totals, weekday patterns, tapers.

A regimen is read from all of a medication's Dosage entries (or its one free-text sig) as a
sequence of phases, each with a duration (None: ongoing) and the amount given on each weekday.
Two regimens are the same when every phase is; otherwise the difference is described (weekly
total, weekday pattern, taper). Anything this reader cannot account for exactly (ranges, "as
directed", "per INR", PRN, unknown timing) gives no regimen, and the pair stays unverifiable:
it is never read as unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from fhircare.transitions.medications import (
    MedInfo,
    Resource,
    normalise_counts,
    parse_dosage,
    parse_sig_text,
)
from fhircare.transitions.medrec.compare import amount

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ALL_DAYS = frozenset(range(7))
_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Phase:
    """One stretch of a regimen: `days` long (None: ongoing), `week` amounts Mon..Sun.

    `week` is None when the amount cannot be placed on weekdays (every other day, once a week
    on an unstated day); `weekly` is always the total a week.
    """

    days: float | None
    weekly: float
    week: tuple[float, ...] | None


@dataclass(frozen=True, slots=True)
class Regimen:
    unit: str
    phases: tuple[Phase, ...]

    def describe(self) -> str:
        return "; then ".join(_describe_phase(p, self.unit) for p in self.phases)


def _describe_phase(p: Phase, unit: str) -> str:
    if p.week is not None and len(set(p.week)) == 1:
        what = f"{p.week[0]:g} {unit}/day"
    elif p.week is not None:
        what = ", ".join(f"{d} {v:g}" for d, v in zip(WEEKDAYS, p.week, strict=True)) + f" {unit}"
    else:
        what = f"{p.weekly:g} {unit}/week"
    return f"{what} x {p.days:g} days" if p.days is not None else what


def regimen_of(info: MedInfo) -> Regimen | None:
    """The whole regimen of a medication, or None when it cannot be read exactly."""
    dosages = info.dosage
    if not dosages:
        return None
    strength = info.identity.strength
    if all(_structured(d) for d in dosages):
        return _from_structured(dosages, strength)
    if len(dosages) == 1 and isinstance(dosages[0].get("text"), str):
        return _from_text(dosages[0]["text"], strength)
    return None


def difference(before: Regimen, after: Regimen) -> tuple[str, str] | None:
    """(change, note) between two regimens, or None when they are the same."""
    if _same(before, after):
        return None
    wb = [p.weekly for p in before.phases]
    wa = [p.weekly for p in after.phases]
    u = before.unit
    if len(before.phases) == len(after.phases) == 1:
        pb, pa = before.phases[0], after.phases[0]
        if abs(wb[0] - wa[0]) > _TOLERANCE * max(wb[0], wa[0], 1.0):
            if _uniform(pb) and _uniform(pa):
                return "dose", f"daily total {wb[0] / 7:g} {u} -> {wa[0] / 7:g} {u}"
            return "dose", f"weekly total {wb[0]:g} {u} -> {wa[0]:g} {u}"
        return "schedule", (
            f"weekday pattern changed ({before.describe()} -> {after.describe()}), "
            f"same {wb[0]:g} {u} a week"
        )
    return "schedule", f"dosing schedule {before.describe()} -> {after.describe()}"


def _uniform(p: Phase) -> bool:
    return p.week is not None and len(set(p.week)) == 1


def _same(a: Regimen, b: Regimen) -> bool:
    if len(a.phases) != len(b.phases):
        return False
    for pa, pb in zip(a.phases, b.phases, strict=True):
        if pa.days != pb.days or not _close(pa.weekly, pb.weekly):
            return False
        if (pa.week is None) != (pb.week is None):
            return False
        if (
            pa.week is not None
            and pb.week is not None
            and not all(_close(x, y) for x, y in zip(pa.week, pb.week, strict=True))
        ):
            return False
    return True


def _close(x: float, y: float) -> bool:
    return abs(x - y) <= _TOLERANCE * max(abs(x), abs(y), 1.0)


def comparable(a: Regimen, b: Regimen) -> bool:
    """Same unit, and weekday patterns known on both sides or on neither (phase by phase)."""
    if a.unit != b.unit:
        return False
    if len(a.phases) == len(b.phases):
        return all(
            (pa.week is None) == (pb.week is None)
            for pa, pb in zip(a.phases, b.phases, strict=True)
        )
    return True


# --------------------------------------------------------------------------- structured

_NOT_READ = ("frequencyMax", "periodMax", "count", "countMax", "boundsRange", "offset")
_PERIOD_DAYS = {"h": 1 / 24, "d": 1.0, "wk": 7.0}


def _structured(d: Resource) -> bool:
    dr = d.get("doseAndRate") or ()
    return bool(dr and dr[0].get("doseQuantity") and d.get("timing"))


def _from_structured(
    dosages: list[Resource], strength: tuple[tuple[str, float, str], ...]
) -> Regimen | None:
    by_sequence: dict[int, list[Resource]] = {}
    for d in dosages:
        if d.get("asNeededBoolean") or "asNeededCodeableConcept" in d:
            return None
        seq = d.get("sequence", 1)
        if type(seq) is not int:
            return None
        by_sequence.setdefault(seq, []).append(d)
    unit: str | None = None
    phases: list[Phase] = []
    for seq in sorted(by_sequence):
        week = [0.0] * 7
        placed = True
        weekly = 0.0
        days: set[float | None] = set()
        for d in by_sequence[seq]:
            dose = parse_dosage([d]).dose
            got = amount(dose, strength)
            rep = (d.get("timing") or {}).get("repeat") or {}
            if got is None or not rep or any(k in rep for k in _NOT_READ):
                return None
            if unit is None:
                unit = got[0]
            elif unit != got[0]:
                return None
            slot = _timing_slots(rep)
            if slot is None:
                return None
            per_day, weekdays, weekly_only = slot
            days.add(_bounds_days(rep))
            if weekly_only is not None:
                placed = False
                weekly += got[1] * weekly_only
                continue
            for wd in weekdays:
                week[wd] += got[1] * per_day
            weekly += got[1] * per_day * len(weekdays)
        if len(days) != 1:
            return None
        (span,) = days
        if span is None and seq != max(by_sequence):
            return None  # an open-ended phase followed by another: order unknown
        phases.append(
            Phase(span, round(weekly, 6), tuple(round(x, 6) for x in week) if placed else None)
        )
    return Regimen(unit, tuple(phases)) if unit else None


def _timing_slots(rep: Resource) -> tuple[float, frozenset[int], float | None] | None:
    """(administrations per day, weekdays, administrations per week when not placeable)."""
    unit = rep.get("periodUnit") or "d"
    if unit not in _PERIOD_DAYS:
        return None
    freq = float(rep.get("frequency") or 1)
    period_days = float(rep.get("period") or 1) * _PERIOD_DAYS[unit]
    when = rep.get("when") or rep.get("timeOfDay")
    if when and not rep.get("frequency") and not rep.get("period"):
        freq, period_days = float(len(when)), 1.0
    if period_days <= 0:
        return None
    dow = rep.get("dayOfWeek")
    if dow:
        days = frozenset(WEEKDAYS.index(x) for x in dow if x in WEEKDAYS)
        if len(days) != len(dow) or period_days > 1:
            return None
        return freq / period_days, days, None
    if period_days <= 1:
        return freq / period_days, _ALL_DAYS, None
    return 0.0, frozenset(), freq * 7 / period_days  # every other day, weekly: no weekday


def _bounds_days(rep: Resource) -> float | None:
    bound = rep.get("boundsDuration")
    if not bound:
        return None
    unit = bound.get("code") or bound.get("unit")
    factor = {"d": 1.0, "day": 1.0, "days": 1.0, "wk": 7.0, "week": 7.0, "weeks": 7.0}.get(unit)
    value = bound.get("value")
    return float(value) * factor if factor and isinstance(value, int | float) else None


# --------------------------------------------------------------------------- free text

_UNREADABLE = re.compile(
    r"\bas directed\b|\bper inr\b|\bas instructed\b|\bsliding scale\b|\bprotocol\b|\bper (?:md|"
    r"doctor|provider|physician|clinic)\b|\bor\b|\bup to\b|\bif\b|\bprn\b|\bas needed\b"
    r"|\d\s*(?:-|–|to)\s*\d|\bunless\b|\bmay\b|\bhold\b"
)
_SEGMENT_SPLIT = re.compile(r"\band then\b|\bthen\b|;|,(?=\s*\d)")
_DURATION = re.compile(r"\b(?:x|for)\s*(\d+)\s*(days?|d|weeks?|wks?)\b")
_STOP = re.compile(r"^\s*(?:stop|discontinue|off|done)\b")
_DAY_NAMES = {
    "mon": 0, "monday": 0, "mondays": 0, "tue": 1, "tues": 1, "tuesday": 1, "tuesdays": 1,
    "wed": 2, "wednesday": 2, "wednesdays": 2, "thu": 3, "thur": 3, "thurs": 3,
    "thursday": 3, "thursdays": 3, "fri": 4, "friday": 4, "fridays": 4, "sat": 5,
    "saturday": 5, "saturdays": 5, "sun": 6, "sunday": 6, "sundays": 6,
}  # fmt: skip
_DAY_RE = re.compile(r"\b(" + "|".join(sorted(_DAY_NAMES, key=len, reverse=True)) + r")\b")
_OTHER_DAYS = re.compile(r"\b(?:all |the )?(?:other|remaining) days\b|\brest of the week\b")
_EXCEPT = re.compile(r"\bexcept\b(.*)$")


def _from_text(text: str, strength: tuple[tuple[str, float, str], ...]) -> Regimen | None:
    low = normalise_counts(text.lower())
    if _UNREADABLE.search(low):
        return None
    return _text_regimen(low, strength)


@lru_cache(maxsize=2048)
def _text_regimen(low: str, strength: tuple[tuple[str, float, str], ...]) -> Regimen | None:
    segments = [s.strip(" ,.") for s in _SEGMENT_SPLIT.split(low)]
    if not segments or not segments[0]:
        return None
    if segments and _STOP.match(segments[-1]):
        segments = segments[:-1]
    parsed = []
    for seg in segments:
        part = _segment(seg, strength)
        if part is None:
            return None
        parsed.append(part)
    units = {p[0] for p in parsed}
    if len(units) != 1:
        return None
    unit = units.pop()
    if any(p[3] is not None for p in parsed) and not all(p[2] is None for p in parsed):
        return None  # durations and weekdays mixed: not read
    if all(p[2] is None for p in parsed):  # a sequence of phases (a taper) or one plain sig
        phases = []
        for n, (_, daily, _, days, placed) in enumerate(parsed):
            if days is None and n != len(parsed) - 1:
                return None
            week = tuple([round(daily, 6)] * 7) if placed else None
            phases.append(Phase(days, round(daily * 7, 6), week))
        return Regimen(unit, tuple(phases))
    week: list[float | None] = [None] * 7
    rest: float | None = None
    for _, daily, weekdays, _, _ in parsed:
        if weekdays == "other":
            if rest is not None:
                return None
            rest = daily
            continue
        if weekdays is None:
            return None
        for wd in weekdays:
            if week[wd] is not None:
                return None
            week[wd] = daily
    filled = [rest if v is None else v for v in week]
    if any(v is None for v in filled):
        return None
    values = tuple(round(float(v), 6) for v in filled if v is not None)
    return Regimen(unit, (Phase(None, round(sum(values), 6), values),))


def _segment(
    seg: str, strength: tuple[tuple[str, float, str], ...]
) -> tuple[str, float, frozenset[int] | str | None, float | None, bool] | None:
    """(unit, amount per day on the days it applies, weekdays or 'other', duration in days,
    whether the doses fall on every day)."""
    sig = parse_sig_text(seg)
    got = amount(sig.dose, strength)
    if got is None or sig.prn:
        return None
    days: frozenset[int] | str | None = None
    exc = _EXCEPT.search(seg)
    named = frozenset(_DAY_NAMES[m] for m in _DAY_RE.findall(exc.group(1) if exc else seg))
    if exc:
        if not named:
            return None
        days = _ALL_DAYS - named
    elif _OTHER_DAYS.search(seg):
        days = "other"
    elif named:
        days = named
    per_day = sig.per_day
    if per_day is None:
        if days is None:
            return None
        per_day = 1.0  # "5 mg on Mon, Wed, Fri": once on each of those days
    elif days is not None and per_day < 1:
        return None  # "weekly on Monday" and the like: not read
    duration = None
    m = _DURATION.search(seg)
    if m:
        n = float(m.group(1))
        duration = n * 7 if m.group(2).startswith("w") else n
    return got[0], got[1] * per_day, days, duration, per_day >= 1

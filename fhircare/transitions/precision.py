"""Times at the precision they were given (FHIR dateTime semantics).

A time stands for every instant of its precision: an HL7 v2 "201302111000" is the minute
10:00 (FHIR can only write it as 10:00:00), a FHIR "2013-02-11" is the whole of that day in a
zone nobody stated (so any zone's 11 February: 14 hours before UTC midnight to 12 after the
next). Two times are ordered only when their spans do not overlap; where they overlap,
neither is known to come first. Used wherever a discharge compares times: the HL7 v2 admit
and discharge times, the follow-up window, the sweep's `since`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fhircare.fhir.search import date_range
from fhircare.transitions.hl7v2_er7 import Hl7Time

# The UTC offsets a zone can have (ISO 8601 / IANA: -12:00 to +14:00).
_EARLIEST_OFFSET = timedelta(hours=14)
_LATEST_OFFSET = timedelta(hours=12)
_UNIT = {"hour": timedelta(hours=1), "minute": timedelta(minutes=1), "second": timedelta(seconds=1)}


@dataclass(frozen=True)
class Span:
    """The instants [lo, hi) a time may stand for."""

    lo: datetime
    hi: datetime

    def wholly_before(self, other: Span) -> bool:
        """True when every instant of this span is before every instant of `other`."""
        return self.hi <= other.lo


def _has_time(value: str) -> bool:
    return "T" in value


def span(value: str) -> Span:
    """The span of a FHIR date, dateTime or instant (ValueError when it is none of these)."""
    lo, hi = date_range(value)
    if not _has_time(value):  # a date has no zone: widen it to every zone's day
        lo, hi = lo.replace(tzinfo=UTC) - _EARLIEST_OFFSET, hi.replace(tzinfo=UTC) + _LATEST_OFFSET
    return Span(lo, hi)


def hl7_span(value: Hl7Time) -> Span:
    """The span of an HL7 v2 TS/DTM at the precision it was sent (minute, hour...)."""
    if value.moment is None or value.precision not in _UNIT:
        return span(value.fhir)
    if value.precision == "second":
        return span(value.fhir)  # fractions of a second narrow it further
    return Span(value.moment, value.moment + _UNIT[value.precision])


def ordered_end(start: str, start_span: Span, end: str, end_span: Span) -> str | None:
    """The end to store after `start` so that start <= end holds (FHIR invariant per-1).

    `end` unchanged when it is not before the start; `start` itself when the end's span
    reaches the start but the end as written lies before it (10:00 given to the minute for a
    stay that began at 10:00:52: the stay ended in that minute, at 10:00:52 at the earliest);
    None when the whole end span lies before the start (the times contradict each other).
    """
    if end_span.wholly_before(start_span):
        return None
    if _has_time(start) and _has_time(end) and span(end).lo < span(start).lo:
        return start
    return end


def may_be_on_or_after(value: str, moment: datetime) -> bool:
    """True unless the whole span of `value` lies before `moment` (so benefit of the doubt)."""
    return span(value).hi > moment

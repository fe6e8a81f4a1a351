"""Business-day arithmetic for transitional-care deadlines.

A business day is Monday to Friday and not a listed holiday (CMS TCM: "2 business days
following the discharge" excludes weekends and holidays). Counting starts the day after the
discharge date: a Friday discharge has its 1st business day on Monday and its 2nd on Tuesday.
Deadlines are the END of the due day in the discharge's own UTC offset.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta

SATURDAY = 5


def is_business_day(day: date, holidays: Iterable[date] = ()) -> bool:
    return day.weekday() < SATURDAY and day not in set(holidays)


def add_business_days(start: date, days: int, holidays: Iterable[date] = ()) -> date:
    """The `days`-th business day after `start` (`start` itself never counts; 0 -> start)."""
    if days < 0:
        raise ValueError("days must be >= 0")
    off = set(holidays)
    current = start
    left = days
    while left:
        current += timedelta(days=1)
        if is_business_day(current, off):
            left -= 1
    return current


def end_of_day(day: date, like: datetime) -> datetime:
    """23:59:59 on `day` in the timezone of `like` (naive `like` -> naive result)."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=like.tzinfo)


def business_deadline(discharge: datetime, days: int, holidays: Iterable[date] = ()) -> datetime:
    """End of the `days`-th business day after the discharge's local date."""
    return end_of_day(add_business_days(discharge.date(), days, holidays), discharge)


def calendar_deadline(discharge: datetime, days: int) -> datetime:
    """End of the day `days` calendar days after the discharge's local date."""
    return end_of_day(discharge.date() + timedelta(days=days), discharge)


def parse_holidays(values: Iterable[str | date]) -> frozenset[date]:
    """ISO dates (or dates, as YAML loads them) as a set of dates."""
    out = set()
    for v in values:
        out.add(v if isinstance(v, date) else date.fromisoformat(str(v)))
    return frozenset(out)

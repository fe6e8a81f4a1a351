"""FHIR date, dateTime and instant text as aware datetimes: the one parser every module uses.

Python 3.11's `datetime.fromisoformat` reads `Z` and offsets itself. Partial dates (`2024`,
`2024-05`, `2024-05-01`) start at their first instant in UTC; a time without an offset is
read as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime


def parse_datetime(text: str) -> datetime:
    """An aware datetime; ValueError when `text` is not a FHIR date/dateTime/instant."""
    if len(text) in (4, 7):  # year or year-month
        text = (text + "-01-01")[:10]
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_datetime_lenient(text: str | None) -> datetime | None:
    """Like `parse_datetime`, falling back to the date part; None when unreadable."""
    if not text:
        return None
    for candidate in (text, text[:10]):
        try:
            return parse_datetime(candidate)
        except ValueError:
            continue
    return None

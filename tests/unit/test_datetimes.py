"""The one FHIR date/dateTime/instant parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from fhircare.fhir.datetimes import parse_datetime, parse_datetime_lenient


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-05", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-17", datetime(2024, 5, 17, tzinfo=UTC)),
        ("2024-05-17T10:30:00Z", datetime(2024, 5, 17, 10, 30, tzinfo=UTC)),
        ("2024-05-17T10:30:00.123Z", datetime(2024, 5, 17, 10, 30, 0, 123000, tzinfo=UTC)),
        (
            "2024-05-17T10:30:00-05:00",
            datetime(2024, 5, 17, 10, 30, tzinfo=timezone(timedelta(hours=-5))),
        ),
        ("2024-05-17T10:30:00", datetime(2024, 5, 17, 10, 30, tzinfo=UTC)),
    ],
)
def test_fhir_date_and_time_forms(text: str, expected: datetime) -> None:
    parsed = parse_datetime(text)
    assert parsed == expected and parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["2024-13-01", "2024-02-30", "yesterday", "", "2024-05-17T25:00Z"])
def test_unreadable_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_datetime(text)


def test_lenient_falls_back_to_the_date_or_none() -> None:
    assert parse_datetime_lenient("2024-05-17T10:30:00 local") == datetime(2024, 5, 17, tzinfo=UTC)
    assert parse_datetime_lenient("soon") is None
    assert parse_datetime_lenient(None) is None and parse_datetime_lenient("") is None

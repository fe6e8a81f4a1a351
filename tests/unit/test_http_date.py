"""Last-Modified: `http_date` writes what `email.utils.format_datetime(usegmt=True)` writes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from fhircare.api.http import http_date
from fhircare.fhir.datetimes import parse_datetime


def test_http_date_matches_format_datetime_on_utc_instants() -> None:
    rng = random.Random(5)
    start = datetime(1, 1, 1, tzinfo=UTC)
    for _ in range(5000):
        dt = start + timedelta(
            seconds=rng.randrange(0, 315_000_000_000), microseconds=rng.randrange(10**6)
        )
        for text in (
            dt.isoformat(timespec="milliseconds"),  # the store's form: ...+00:00
            dt.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            dt.isoformat(),
            dt.isoformat(timespec="seconds"),
        ):
            assert http_date(text) == format_datetime(parse_datetime(text), usegmt=True), text


@pytest.mark.parametrize("text", ["2026-12-06", "2026-12", "2026", "2024-02-29T23:59:59Z"])
def test_http_date_on_dates_and_edges(text: str) -> None:
    assert http_date(text) == format_datetime(parse_datetime(text), usegmt=True)


def test_http_date_refuses_other_offsets_as_format_datetime_does() -> None:
    with pytest.raises(ValueError):
        format_datetime(parse_datetime("2026-12-06T10:00:00+02:00"), usegmt=True)
    with pytest.raises(ValueError):
        http_date("2026-12-06T10:00:00+02:00")

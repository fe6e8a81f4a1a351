"""Search values: what an element holds, normalised per parameter type.

Extractors (`fhircare.fhir.fhirpath`) give typed JSON values; these functions turn them
into the comparable forms search needs: tokens (system, code), reference keys, date ranges
in microseconds, numbers, quantities, normalised strings, uris.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from fhircare.fhir.fhirpath import Typed

NEG_INF = -(2**62)
POS_INF = 2**62
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# ---- dates ---------------------------------------------------------------------------------

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def date_range(text: str) -> tuple[datetime, datetime]:
    """The [start, end) instant range a FHIR date/dateTime/instant value covers."""
    m = _DATE_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a FHIR date: {text!r}")
    y = int(m["y"])
    tz: timezone = UTC
    if m["tz"] and m["tz"] != "Z":
        sign = 1 if m["tz"][0] == "+" else -1
        hh, mm = m["tz"][1:].split(":")
        tz = timezone(sign * timedelta(hours=int(hh), minutes=int(mm)))
    if m["m"] is None:
        start = datetime(y, 1, 1, tzinfo=tz)
        return start, datetime(y + 1, 1, 1, tzinfo=tz)
    mo = int(m["m"])
    if not 1 <= mo <= 12:
        raise ValueError(f"not a FHIR date: {text!r}")
    if m["d"] is None:
        start = datetime(y, mo, 1, tzinfo=tz)
        return start, datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=tz)
    d = int(m["d"])
    if m["H"] is None:
        start = datetime(y, mo, d, tzinfo=tz)
        return start, start + timedelta(days=1)
    sec = int(m["S"] or 0)
    micro = int((m["f"] or ".0")[1:7].ljust(6, "0"))
    start = datetime(y, mo, d, int(m["H"]), int(m["M"]), sec, micro, tzinfo=tz)
    if m["S"] is None:
        return start, start + timedelta(minutes=1)
    if m["f"] is None:
        return start, start + timedelta(seconds=1)
    return start, start + timedelta(milliseconds=1)


def micros(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(microseconds=1)


def date_range_us(text: str) -> tuple[int, int]:
    lo, hi = date_range(text)
    return micros(lo), micros(hi)


def _date_of(value: str) -> tuple[int, int] | None:
    try:
        return date_range_us(value)
    except (ValueError, OverflowError):
        return None


def dates(values: list[Typed]) -> list[tuple[int, int]]:
    """[lo, hi) ranges in microseconds since the epoch."""
    out: list[tuple[int, int]] = []
    for t, v in values:
        if isinstance(v, str):
            r = _date_of(v)
            if r:
                out.append(r)
        elif isinstance(v, dict):
            if t == "Timing" or (not t and ("event" in v or "repeat" in v)):
                events = [r for e in v.get("event") or [] if (r := _date_of(str(e)))]
                if events:
                    out.extend(events)
                    continue
                bounds = (v.get("repeat") or {}).get("boundsPeriod")
                if isinstance(bounds, dict):
                    out.extend(_period(bounds))
            elif t in ("Period", "") and ("start" in v or "end" in v):
                out.extend(_period(v))
    return out


def _period(v: dict[str, Any]) -> list[tuple[int, int]]:
    lo = _date_of(v["start"]) if isinstance(v.get("start"), str) else None
    hi = _date_of(v["end"]) if isinstance(v.get("end"), str) else None
    if v.get("start") is not None and lo is None or v.get("end") is not None and hi is None:
        return []
    return [(lo[0] if lo else NEG_INF, hi[1] if hi else POS_INF)]


# ---- tokens --------------------------------------------------------------------------------


def tokens(values: list[Typed], implicit_system: str | None = None) -> list[tuple[str | None, str]]:
    """(system, code) pairs of codes, Codings, CodeableConcepts, Identifiers, ContactPoints,
    booleans and strings."""
    out: list[tuple[str | None, str]] = []
    for t, v in values:
        if isinstance(v, bool):
            out.append((None, "true" if v else "false"))
        elif isinstance(v, str):
            out.append((implicit_system if t == "code" else None, v))
        elif isinstance(v, int | float):
            out.append((None, str(v)))
        elif isinstance(v, dict):
            if t == "CodeableConcept" or (not t and "coding" in v):
                for c in v.get("coding") or []:
                    if isinstance(c, dict) and isinstance(c.get("code"), str):
                        out.append((c.get("system"), c["code"]))
            elif t in ("Identifier", "ContactPoint") or (not t and "value" in v):
                if isinstance(v.get("value"), str):
                    out.append((v.get("system"), v["value"]))
            elif isinstance(v.get("code"), str):  # Coding
                out.append((v.get("system"), v["code"]))
    return out


def token_texts(values: list[Typed]) -> list[str]:
    """The texts `:text` searches: CodeableConcept.text, Coding.display, Identifier.type.text."""
    out: list[str] = []
    for _, v in values:
        if not isinstance(v, dict):
            continue
        if isinstance(v.get("text"), str):
            out.append(v["text"])
        if isinstance(v.get("display"), str):
            out.append(v["display"])
        for c in v.get("coding") or []:
            if isinstance(c, dict) and isinstance(c.get("display"), str):
                out.append(c["display"])
        t = v.get("type")
        if isinstance(t, dict) and isinstance(t.get("text"), str):
            out.append(t["text"])
    return out


def identifier_types(values: list[Typed]) -> list[tuple[str | None, str, str]]:
    """(type system, type code, value) of Identifiers, for `:of-type`."""
    out: list[tuple[str | None, str, str]] = []
    for _, v in values:
        if not isinstance(v, dict) or not isinstance(v.get("value"), str):
            continue
        for c in (v.get("type") or {}).get("coding") or []:
            if isinstance(c, dict) and isinstance(c.get("code"), str):
                out.append((c.get("system"), c["code"], v["value"]))
    return out


# ---- references ----------------------------------------------------------------------------


def reference_key(reference: str) -> str:
    """'Patient/1/_history/2' -> 'Patient/1'; absolute URLs keep their base."""
    return reference.split("/_history/")[0]


def references(values: list[Typed]) -> list[str]:
    """Keys of references: 'Type/id', absolute URLs, canonical urls (with and without
    their |version)."""
    out: list[str] = []
    for t, v in values:
        if isinstance(v, dict):
            ref = v.get("reference")
            if isinstance(ref, str) and not ref.startswith("#"):
                out.append(reference_key(ref))
            elif isinstance(v.get("resourceType"), str) and isinstance(v.get("id"), str):
                out.append(f"{v['resourceType']}/{v['id']}")  # a resource inside (Bundle)
        elif isinstance(v, str) and t in ("canonical", "uri", "url", ""):
            out.append(v)
            if "|" in v:
                out.append(v.split("|", 1)[0])
    return out


def reference_identifiers(values: list[Typed]) -> list[tuple[str | None, str]]:
    out: list[tuple[str | None, str]] = []
    for _, v in values:
        ident = v.get("identifier") if isinstance(v, dict) else None
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            out.append((ident.get("system"), ident["value"]))
    return out


# ---- strings -------------------------------------------------------------------------------

_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def strings(values: list[Typed]) -> list[str]:
    """Strings a string parameter searches (the parts of HumanNames and Addresses)."""
    out: list[str] = []
    for t, v in values:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            if t == "HumanName":
                keys: tuple[str, ...] = _NAME_PARTS
            elif t == "Address":
                keys = _ADDRESS_PARTS
            else:
                keys = _NAME_PARTS + _ADDRESS_PARTS[1:] + ("display", "value")
            for k in keys:
                x = v.get(k)
                if isinstance(x, str):
                    out.append(x)
                elif isinstance(x, list):
                    out.extend(s for s in x if isinstance(s, str))
    return out


def normalise(text: str) -> str:
    """Case- and accent-insensitive form (what HAPI's string index compares)."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


# ---- numbers and quantities ----------------------------------------------------------------


def to_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def numbers(values: list[Typed]) -> list[tuple[Decimal, Decimal]]:
    """[lo, hi] of numbers (a Range gives its bounds)."""
    out: list[tuple[Decimal, Decimal]] = []
    for _, v in values:
        if isinstance(v, dict):
            if "low" in v or "high" in v:
                lo = to_decimal((v.get("low") or {}).get("value"))
                hi = to_decimal((v.get("high") or {}).get("value"))
                out.append(
                    (lo if lo is not None else Decimal("-Infinity"), hi or Decimal("Infinity"))
                )
                continue
            v = v.get("value")
        d = to_decimal(v)
        if d is not None:
            out.append((d, d))
    return out


def quantities(
    values: list[Typed],
) -> list[tuple[Decimal, Decimal, str | None, str | None, str | None]]:
    """(lo, hi, system, code, unit) of Quantity-like values and Ranges; Money uses its
    currency as the code of urn:iso:std:iso:4217."""
    out: list[tuple[Decimal, Decimal, str | None, str | None, str | None]] = []
    for t, v in values:
        if not isinstance(v, dict):
            continue
        if "low" in v or "high" in v:  # Range
            low, high = v.get("low") or {}, v.get("high") or {}
            lo = to_decimal(low.get("value"))
            hi = to_decimal(high.get("value"))
            unit = low or high
            out.append(
                (
                    lo if lo is not None else Decimal("-Infinity"),
                    hi if hi is not None else Decimal("Infinity"),
                    unit.get("system"),
                    unit.get("code"),
                    unit.get("unit"),
                )
            )
            continue
        d = to_decimal(v.get("value"))
        if d is None:
            continue
        if t == "Money" or (not t and "currency" in v):
            out.append((d, d, "urn:iso:std:iso:4217", v.get("currency"), v.get("currency")))
        else:
            out.append((d, d, v.get("system"), v.get("code"), v.get("unit")))
    return out


def uris(values: list[Typed]) -> list[str]:
    return [v for _, v in values if isinstance(v, str)]


def iter_present(values: list[Typed]) -> Iterator[Any]:
    yield from (v for _, v in values)

"""JSON for FHIR data: the one strict decoder of request bodies and files, and fast
encoding and copying (orjson where it is exact, the standard library where it is not).

orjson writes the same JSON as `json.dumps(..., ensure_ascii=False, separators=(",", ":"))`
for everything a FHIR resource holds, except integers beyond 64 bits (a FHIR `decimal` may
be one), which it refuses: those documents take the standard library's path. Decoding
stays with the standard library where exactness matters (orjson turns such integers into
floats); `copy` only decodes what orjson itself encoded, so it is exact.

`pack` encodes a document for keeping as bytes (the embedded store holds AuditEvents so:
one bytes object instead of dozens of dicts and lists for the cyclic collector to walk),
`unpack` decodes it again; `dumps` writes packed bytes found in a value as the JSON they
hold, without decoding them.

`parse_json` refuses, with a 400, what cannot be FHIR JSON. Numbers: a FHIR integer is 32
bits and a decimal is read as a double (integers stay exact), so a number of more than
MAX_NUMBER_DIGITS digits, or one a double cannot hold (overflow to infinity, or a non-zero
value that underflows to 0), is refused instead of reaching Python's int-size limit or
being stored as a value it is not.
"""

from __future__ import annotations

import copy as _copy
import json
import math
import re
from typing import Any

import orjson

from fhircare.fhir.errors import BadRequest

MAX_DEPTH = 64
MAX_NUMBER_DIGITS = 64
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(raw: bytes) -> Any:
    """Strict JSON (RFC 8259): UTF-8 (one leading BOM tolerated), no NaN/Infinity, no
    duplicate keys, no lone surrogates, nesting at most MAX_DEPTH, numbers a FHIR integer
    or decimal can be. BadRequest otherwise."""
    try:
        text = raw.decode("utf-8-sig")
        data = json.loads(
            text,
            parse_int=_integer,  # about 4 ms per MB of FHIR JSON, with parse_float
            parse_float=_decimal,
            parse_constant=_no_constant,
            object_pairs_hook=_no_duplicates,
        )
    except UnicodeDecodeError as exc:
        raise BadRequest("The body is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"Malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise BadRequest("The JSON is nested too deeply") from exc
    if _depth(data) > MAX_DEPTH:
        raise BadRequest(f"The JSON is nested deeper than {MAX_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(text):  # a \ud800-\udfff escape: is it half a pair?
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest("The JSON holds an unpaired surrogate (\\uD800-\\uDFFF)") from exc
    return data


def _too_many_digits(literal: str, digits: int) -> BadRequest:
    shown = literal if len(literal) <= 24 else f"{literal[:12]}...{literal[-8:]}"
    return BadRequest(
        f"The JSON number {shown} has {digits} digits: a FHIR integer or decimal has at "
        f"most {MAX_NUMBER_DIGITS} here"
    )


def _integer(literal: str) -> int:
    digits = len(literal) - literal.startswith("-")
    if digits > MAX_NUMBER_DIGITS:
        raise _too_many_digits(literal, digits)
    return int(literal)


def _decimal(literal: str) -> float:
    mantissa = re.split("[eE]", literal, maxsplit=1)[0]
    digits = sum(c.isdigit() for c in mantissa)
    if digits > MAX_NUMBER_DIGITS:
        raise _too_many_digits(literal, digits)
    value = float(literal)
    if math.isinf(value):
        raise BadRequest(f"The JSON number {literal[:40]} is beyond the range of a decimal")
    if value == 0.0 and any(c in "123456789" for c in mantissa):
        raise BadRequest(f"The JSON number {literal[:40]} is too small for a decimal (not 0)")
    return value


def _no_constant(name: str) -> Any:
    raise BadRequest(f"Malformed JSON: {name} is not a JSON value")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise BadRequest(f"Malformed JSON: the key {dup!r} appears twice in one object")
    return obj


def _depth(node: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(node, dict):
        return max((_depth(v, level + 1) for v in node.values()), default=level + 1)
    if isinstance(node, list):
        return max((_depth(v, level + 1) for v in node), default=level + 1)
    return level


def _fragment(value: Any) -> Any:
    """orjson's `default`: packed bytes are JSON already, written as they are."""
    if isinstance(value, bytes):
        return orjson.Fragment(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _unpacked(value: Any) -> Any:
    """The standard library's `default`: packed bytes decoded."""
    if isinstance(value, bytes):
        return unpack(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (packed bytes in `value` written as the JSON they hold)."""
    try:
        return orjson.dumps(value, default=_fragment)
    except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits (or not JSON)
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), default=_unpacked
        ).encode("utf-8")


def dumps_pretty(value: Any) -> bytes:
    """UTF-8 JSON indented by two spaces."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, indent=2).encode("utf-8")


def dumps_orjson(value: Any) -> bytes | None:
    """`dumps` by orjson alone, or None when it cannot write `value` (an integer beyond 64
    bits): what it writes, `orjson.loads` reads back exactly."""
    try:
        return orjson.dumps(value, default=_fragment)
    except TypeError:
        return None


def pack(value: dict[str, Any]) -> bytes | None:
    """`value` as compact JSON bytes that `unpack` turns back into an equal value, or None
    when orjson cannot encode it exactly (an integer beyond 64 bits). Copied to a bytes
    object of its own size: orjson's keeps the buffer it grew (4 KB for a 1.4 KB event)."""
    try:
        return bytes(memoryview(orjson.dumps(value)))
    except TypeError:
        return None


def unpack(data: bytes) -> Any:
    """A fresh value decoded from `pack`'s bytes (exact: orjson reads what it wrote)."""
    return orjson.loads(data)


def copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, strings, numbers, booleans, None): a JSON
    round trip through orjson, several times faster than `copy.deepcopy`."""
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        return _copy.deepcopy(value)


__all__ = [
    "MAX_DEPTH",
    "MAX_NUMBER_DIGITS",
    "copy",
    "dumps",
    "dumps_pretty",
    "dumps_orjson",
    "pack",
    "parse_json",
    "unpack",
]

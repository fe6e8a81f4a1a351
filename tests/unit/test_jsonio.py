"""The strict JSON decoder: numbers that cannot be a FHIR integer or decimal are refused
with a 400; every other number keeps its value."""

from __future__ import annotations

import json

import pytest

from fhircare.fhir import jsonio
from fhircare.fhir.errors import BadRequest


def _doc(number: str) -> bytes:
    return ('{"resourceType":"Observation","valueQuantity":{"value":' + number + "}}").encode()


@pytest.mark.parametrize(
    "number",
    [
        "1" * 5000,  # beyond Python's int-string limit (4300 digits): was a 500
        "-" + "9" * 4301,
        "1" * (jsonio.MAX_NUMBER_DIGITS + 1),
        "1" * 400 + ".5",
        "0." + "0" * 80 + "1",
        "1e999",  # a double overflows to infinity
        "-1E+400",
        "1e-400",  # a non-zero value that underflows to 0
    ],
)
def test_numbers_no_decimal_can_hold_are_refused(number: str) -> None:
    with pytest.raises(BadRequest) as caught:
        jsonio.parse_json(_doc(number))
    assert caught.value.status == 400
    assert len(caught.value.diagnostics) < 200  # the number is not echoed in full


@pytest.mark.parametrize(
    "number, value",
    [
        ("2147483647", 2147483647),
        ("-2147483648", -2147483648),
        (str(10**30), 10**30),  # a decimal beyond 64 bits stays exact
        ("9" * jsonio.MAX_NUMBER_DIGITS, int("9" * jsonio.MAX_NUMBER_DIGITS)),
        ("0.44979319332294454", 0.44979319332294454),
        ("1e300", 1e300),
        ("1.5e-7", 1.5e-7),
        ("0e999", 0.0),
        ("0.000", 0.0),
    ],
)
def test_numbers_a_decimal_holds_keep_their_value(number: str, value: float) -> None:
    data = jsonio.parse_json(_doc(number))
    assert data["valueQuantity"]["value"] == value
    assert type(data["valueQuantity"]["value"]) is type(value)
    assert data == json.loads(_doc(number))  # what the standard library reads


def test_digits_inside_strings_are_not_numbers() -> None:
    body = json.dumps({"resourceType": "Patient", "id": "x", "note": "7" * 5000}).encode()
    assert jsonio.parse_json(body)["note"] == "7" * 5000


def test_pack_round_trips_and_holds_no_spare_buffer():
    import tracemalloc

    value = {"a": ["x" * 40] * 40, "n": 1.5, "t": True, "z": None}
    packed = jsonio.pack(value)
    assert packed is not None and jsonio.unpack(packed) == value
    tracemalloc.start()
    try:
        held = [jsonio.pack(value) for _ in range(100)]
        per_value = tracemalloc.get_traced_memory()[0] / len(held)
    finally:
        tracemalloc.stop()
    assert per_value < len(packed) + 100  # not orjson's grown buffer (2 KB for 1.7 KB)
    assert jsonio.pack({"big": 2**70}) is None  # orjson cannot encode it exactly
    assert jsonio.dumps({"p": packed, "q": [packed]}) == jsonio.dumps({"p": value, "q": [value]})
    assert jsonio.dumps({"p": packed, "big": 2**70}) == (
        b'{"p":' + jsonio.dumps(value) + b',"big":1180591620717411303424}'
    )

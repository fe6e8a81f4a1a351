"""Fast JSON encoding and copying of FHIR data: orjson where it is exact, the standard
library where it is not.

orjson writes the same JSON as `json.dumps(..., ensure_ascii=False, separators=(",", ":"))`
for everything a FHIR resource holds, except integers beyond 64 bits (a FHIR `decimal` may
be one), which it refuses: those documents take the standard library's path. Decoding
stays with the standard library where exactness matters (orjson turns such integers into
floats); `copy` only decodes what orjson itself encoded, so it is exact.
"""

from __future__ import annotations

import copy as _copy
import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits (or not JSON)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def dumps_pretty(value: Any) -> bytes:
    """UTF-8 JSON indented by two spaces."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, indent=2).encode("utf-8")


def copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, strings, numbers, booleans, None): a JSON
    round trip through orjson, several times faster than `copy.deepcopy`."""
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        return _copy.deepcopy(value)


__all__ = ["copy", "dumps", "dumps_pretty"]

"""`_summary` and `_elements`: subsets of a resource, tagged SUBSETTED (R4 search.html).

Which elements are summary elements comes from the R4 element definitions (`isSummary`)
in the registry.
"""

from __future__ import annotations

import copy
from typing import Any

from fhircare.fhir import registry
from fhircare.fhir.errors import BadRequest

SUMMARY_MODES = ("true", "text", "data", "count", "false")
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "Resource encoded in summary mode",
}
_ALWAYS = ("resourceType", "id", "meta")


def check_summary(value: str | None) -> str | None:
    if value is not None and value not in SUMMARY_MODES:
        raise BadRequest(
            f"_summary must be one of {', '.join(SUMMARY_MODES)}, not {value[:40]!r}",
            code="value",
        )
    return value


def parse_elements(values: list[str], resource_type: str) -> list[str] | None:
    """Top-level element names from `_elements` values ('name', 'Patient.name')."""
    if not values:
        return None
    names: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            if item.startswith("-"):
                raise BadRequest(
                    "_elements=-name (leaving elements out) is not FHIR R4 and not supported",
                    code="not-supported",
                )
            head, dot, rest = item.partition(".")
            if dot and head[:1].isupper():
                if head != resource_type and head != "*":
                    continue  # for another type (of a _include)
                item = rest
            names.append(item.split(".")[0])
    if not names:
        raise BadRequest("_elements names no element", code="value")
    return names


def _tagged(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if t.get("code") != "SUBSETTED"]
    meta["tag"] = tags + [dict(SUBSETTED)]
    resource["meta"] = meta
    return resource


def _summary_node(node: dict[str, Any], type_path: str) -> dict[str, Any]:
    info = registry.types()
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _ALWAYS:
            out[key] = value
            continue
        name = key[1:] if key.startswith("_") else key
        found = info.child(type_path, name)
        if found is None:
            continue
        el, type_code = found
        if not el.summary:
            continue
        code = type_code or (el.types[0] if el.types else "")
        if code in ("BackboneElement", "Element") and not el.content_reference:
            items = value if isinstance(value, list) else [value]
            kept = [_summary_node(v, el.path) if isinstance(v, dict) else v for v in items]
            out[key] = kept if isinstance(value, list) else kept[0]
        else:
            out[key] = value
    return out


def subset(
    resource: dict[str, Any], *, summary: str | None = None, elements: list[str] | None = None
) -> dict[str, Any]:
    """The resource as `_summary`/`_elements` ask (a copy when anything is left out)."""
    rtype = resource.get("resourceType", "")
    if summary in (None, "false", "count") and not elements:
        return resource
    if summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
        return _tagged(copy.deepcopy(out)) if "text" in resource else resource
    if summary == "text":
        info = registry.types()
        mandatory = {n for n, el in info.children(rtype).items() if el.min >= 1}
        out = {
            k: v
            for k, v in resource.items()
            if k in _ALWAYS or k == "text" or k.removeprefix("_") in mandatory
        }
        return _tagged(copy.deepcopy(out))
    if summary == "true":
        return _tagged(copy.deepcopy(_summary_node(resource, rtype)))
    assert elements is not None
    info = registry.types()
    wanted = set(elements)
    kids = info.children(rtype)
    out = {}
    for key, value in resource.items():
        name = key.removeprefix("_")
        stem = name
        if name not in kids:
            found = info.child(rtype, name)
            if found is not None:
                stem = found[0].path.rsplit(".", 1)[-1].removesuffix("[x]")
        if key in _ALWAYS or name in wanted or stem in wanted:
            out[key] = value
    return _tagged(copy.deepcopy(out))

"""Search and history Bundles: paging links, `_include`/`_revinclude` (with `*` and
`:iterate`), `_summary`, `_elements`, `_total`; and the resources of a compartment.

Criteria are checked against the store's registry first (a 400 names the valid
parameters); with `lenient` (Prefer: handling=lenient) unknown parameters are ignored and
left out of the self link, as HAPI does.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from fhircare.fhir import registry
from fhircare.fhir.errors import BadRequest, Forbidden
from fhircare.fhir.references import parse_local
from fhircare.fhir.registry import SearchParam
from fhircare.fhir.search import date_range, extract, parse_query
from fhircare.fhir.search import values as search_values
from fhircare.fhir.summary import check_summary, parse_elements, subset
from fhircare.security.compartment import compartment_searches
from fhircare.services.resources import ResourceService

TOTAL_MODES = ("none", "estimate", "accurate")
# fhirpy's count() sends _totalMethod=count (an Aidbox parameter): the same as _total.
TOTAL_METHODS = {"count": "accurate", "estimate": "estimate", "none": "none"}
MAX_INCLUDES = 5000
MAX_ITERATIONS = 10


@dataclass(frozen=True)
class Paging:
    default_count: int = 50
    max_count: int = 1000


def _int_param(params: list[tuple[str, str]], name: str, default: int) -> int:
    values = [v for k, v in params if k == name]
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError as exc:
        raise BadRequest(
            f"{name} must be a whole number, not {values[-1]!r}", code="value"
        ) from exc
    if value < 0:
        raise BadRequest(f"{name} must not be negative", code="value")
    return value


def since_param(params: list[tuple[str, str]]) -> str | None:
    """`_since` as a UTC instant comparable with meta.lastUpdated; BadRequest if unparseable."""
    values = [v for k, v in params if k == "_since"]
    if not values:
        return None
    try:
        start = date_range(values[-1])[0]
    except ValueError as exc:
        raise BadRequest(
            f"_since must be an instant, not {values[-1][:80]!r}", code="value"
        ) from exc
    return start.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _link(base_url: str, path: str, params: list[tuple[str, str]], **overrides: int) -> str:
    kept = [(k, v) for k, v in params if k not in overrides]
    kept += [(k, str(v)) for k, v in overrides.items()]
    query = urllib.parse.urlencode(kept)
    return f"{base_url}/{path}" + (f"?{query}" if query else "")


def _last(params: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in reversed(params) if k == name), None)


def _total_mode(params: list[tuple[str, str]]) -> str:
    total = _last(params, "_total")
    method = _last(params, "_totalMethod")
    if total is not None and total not in TOTAL_MODES:
        raise BadRequest(f"_total must be one of {', '.join(TOTAL_MODES)}", code="value")
    if method is not None and method not in TOTAL_METHODS:
        raise BadRequest(f"_totalMethod must be one of {', '.join(TOTAL_METHODS)}", code="value")
    return total or TOTAL_METHODS.get(method or "", "accurate")


def search_bundle(
    svc: ResourceService,
    resource_type: str,
    params: list[tuple[str, str]],
    *,
    base_url: str,
    paging: Paging = Paging(),
    lenient: bool = False,
) -> dict[str, Any]:
    """A searchset Bundle for one page of a search (through `svc`'s store: a caller's gated
    view restricts the matches, the total and the included resources)."""
    store = svc.store
    query = parse_query(resource_type, params, registry_=store.registry, lenient=lenient)
    if query.ignored:
        params = [(k, v) for k, v in params if k not in query.ignored]
    count = min(_int_param(params, "_count", paging.default_count), paging.max_count)
    offset = _int_param(params, "_offset", 0)
    summary = check_summary(_last(params, "_summary"))
    elements = parse_elements([v for k, v in params if k == "_elements"], resource_type)
    total_mode = _total_mode(params)
    includes = _include_specs(store.registry, resource_type, params)
    if summary == "count":
        count = 0
    result = store.search_page(resource_type, params, offset=offset, count=count)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total_mode != "none" or summary == "count":
        bundle["total"] = result.total
    bundle["link"] = [{"relation": "self", "url": _link(base_url, resource_type, params)}]
    if summary == "count":
        return bundle
    page = result.resources
    if count and offset + count < result.total:
        bundle["link"].append(
            {
                "relation": "next",
                "url": _link(base_url, resource_type, params, _count=count, _offset=offset + count),
            }
        )
    if offset > 0 and count:
        bundle["link"].append(
            {
                "relation": "previous",
                "url": _link(
                    base_url, resource_type, params, _count=count, _offset=max(0, offset - count)
                ),
            }
        )
    included = _includes(svc, page, includes) if includes else []
    bundle["entry"] = [
        {
            "fullUrl": f"{base_url}/{resource_type}/{r['id']}",
            "resource": subset(r, summary=summary, elements=elements),
            "search": {"mode": "match"},
        }
        for r in page
    ] + [
        {
            "fullUrl": f"{base_url}/{r['resourceType']}/{r['id']}",
            "resource": subset(r, summary=summary),
            "search": {"mode": "include"},
        }
        for r in included
    ]
    return bundle


# ---- _include and _revinclude --------------------------------------------------------------


@dataclass(frozen=True)
class IncludeSpec:
    reverse: bool
    iterate: bool
    source_type: str | None  # None: '*' (every type)
    param: str | None  # None: '*' (every reference parameter)
    target_type: str | None = None


def _include_specs(
    reg: registry.SearchRegistry, resource_type: str, params: list[tuple[str, str]]
) -> list[IncludeSpec]:
    specs: list[IncludeSpec] = []
    for name, value in params:
        base, _, mod = name.partition(":")
        if base not in ("_include", "_revinclude"):
            continue
        if mod not in ("", "iterate", "recurse"):
            raise BadRequest(f"Unknown modifier {name!r}", code="value")
        reverse = base == "_revinclude"
        for item in value.split(","):
            specs.append(_include_spec(reg, resource_type, reverse, bool(mod), item.strip()))
    return specs


def _include_spec(
    reg: registry.SearchRegistry, resource_type: str, reverse: bool, iterate: bool, value: str
) -> IncludeSpec:
    name = "_revinclude" if reverse else "_include"
    if value == "*":
        return IncludeSpec(reverse, iterate, None, None)
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise BadRequest(
            f"Invalid {name} {value!r}: expected Type:parameter[:targetType] or *", code="value"
        )
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if not registry.is_resource_type(source):
        raise BadRequest(f"Invalid {name} {value!r}: {source} is not a resource type")
    if not reverse and not iterate and source != resource_type:
        raise BadRequest(
            f"Invalid _include {value!r}: the search is on {resource_type} "
            "(use _include:iterate for included resources)",
            code="value",
        )
    if target is not None and not registry.is_resource_type(target):
        raise BadRequest(f"Invalid {name} {value!r}: {target} is not a resource type")
    if code == "*":
        return IncludeSpec(reverse, iterate, source, None, target)
    param = reg.param(source, code)
    if param is None or param.type != "reference":
        raise BadRequest(
            f"Invalid {name} {value!r}: '{code}' is not a reference parameter of {source}",
            code="value",
        )
    return IncludeSpec(reverse, iterate, source, code, target)


def _reference_params(
    reg: registry.SearchRegistry, resource_type: str, code: str | None
) -> list[SearchParam]:
    if code is not None:
        p = reg.param(resource_type, code)
        return [p] if p is not None else []
    return [p for p in reg.params(resource_type).values() if p.type == "reference" and p.supported]


def _includes(
    svc: ResourceService, page: list[dict[str, Any]], specs: list[IncludeSpec]
) -> list[dict[str, Any]]:
    """Included resources: the page's, then (for :iterate) the included ones' in turn."""
    seen = {(r["resourceType"], r["id"]) for r in page}
    out: list[dict[str, Any]] = []
    frontier = page
    for round_ in range(MAX_ITERATIONS):
        added: list[dict[str, Any]] = []
        for spec in specs:
            if round_ > 0 and not spec.iterate:
                continue
            for found in _apply(svc, frontier, spec):
                key = (found["resourceType"], found["id"])
                if key not in seen and len(out) + len(added) < MAX_INCLUDES:
                    seen.add(key)
                    added.append(found)
        if not added:
            break
        out.extend(added)
        frontier = added
    return out


def _apply(
    svc: ResourceService, resources: list[dict[str, Any]], spec: IncludeSpec
) -> list[dict[str, Any]]:
    reg = svc.store.registry
    found: list[dict[str, Any]] = []
    if not spec.reverse:
        wanted: dict[tuple[str, str], None] = {}
        for r in resources:
            rtype = r["resourceType"]
            if spec.source_type is not None and rtype != spec.source_type:
                continue
            for param in _reference_params(reg, rtype, spec.param):
                for key in search_values.references(extract(param, r)):
                    local = parse_local(key)
                    if local and (spec.target_type is None or local[0] == spec.target_type):
                        wanted[(local[0], local[1])] = None
        for rtype, rid in wanted:
            if svc.store.exists(rtype, rid):
                try:
                    found.append(svc.store.read(rtype, rid))
                except Forbidden:
                    continue  # not the caller's to see: left out, as if absent
        return found
    targets = [f"{r['resourceType']}/{r['id']}" for r in resources]
    if not targets:
        return found
    types = [spec.source_type] if spec.source_type else list(registry.resource_types())
    page_types = {r["resourceType"] for r in resources}
    for source in types:
        if source is None:
            continue
        for param in _reference_params(reg, source, spec.param):
            if param.targets and not page_types & set(param.targets):
                continue
            try:
                found.extend(svc.store.search(source, [(param.code, ",".join(targets))]))
            except Forbidden:
                continue  # a type the caller may not search
    return found


# ---- compartments --------------------------------------------------------------------------


def compartment_resources(
    svc: ResourceService,
    compartment: str,
    owner_id: str,
    *,
    types: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Every resource in the compartment `compartment`/`owner_id` (the owner included), by
    the CompartmentDefinition's parameters: one search per (type, parameter), unioned."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    member_types = list(registry.compartment(compartment).params)
    if compartment not in member_types:
        member_types.insert(0, compartment)
    for rtype in member_types:
        if types is not None and rtype not in types:
            continue
        for search in compartment_searches(compartment, owner_id, rtype):
            for r in svc.store.search(rtype, search):
                key = (rtype, r["id"])
                if key not in seen:
                    seen.add(key)
                    out.append(r)
    return out


def history_bundle(
    entries: list[dict[str, Any]],
    params: list[tuple[str, str]],
    *,
    base_url: str,
    path: str,
    paging: Paging = Paging(),
) -> dict[str, Any]:
    """A history Bundle (newest first) for one page."""
    count = min(_int_param(params, "_count", paging.default_count), paging.max_count)
    offset = _int_param(params, "_offset", 0)
    page = entries[offset : offset + count]
    for entry in page:
        full = entry.get("fullUrl") or ""
        if not full.startswith(("http://", "https://")):
            entry["fullUrl"] = f"{base_url}/{full}"
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "total": len(entries),
        "link": [{"relation": "self", "url": _link(base_url, path, params)}],
        "entry": page,
    }
    if offset + count < len(entries):
        bundle["link"].append(
            {
                "relation": "next",
                "url": _link(base_url, path, params, _count=count, _offset=offset + count),
            }
        )
    if offset > 0:
        bundle["link"].append(
            {
                "relation": "previous",
                "url": _link(base_url, path, params, _count=count, _offset=max(0, offset - count)),
            }
        )
    return bundle

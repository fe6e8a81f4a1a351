"""Search and history Bundles: paging links, `_include`/`_revinclude`, `_summary=count`."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from fhircare.fhir.errors import BadRequest
from fhircare.fhir.references import parse_local
from fhircare.fhir.search import date_range, param_def, values_at
from fhircare.fhir.validation import SUPPORTED
from fhircare.services.resources import ResourceService


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
    return f"{base_url}/{path}?{urllib.parse.urlencode(kept)}"


def search_bundle(
    svc: ResourceService,
    resource_type: str,
    params: list[tuple[str, str]],
    *,
    base_url: str,
    paging: Paging = Paging(),
    restrict: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """A searchset Bundle for one page of a search."""
    count = min(_int_param(params, "_count", paging.default_count), paging.max_count)
    offset = _int_param(params, "_offset", 0)
    summary = next((v for k, v in params if k == "_summary"), None)
    if summary not in (None, "count", "false", "true", "data", "text"):
        raise BadRequest(f"Unsupported _summary value {summary!r}", code="value")
    matched = svc.search(resource_type, params + (restrict or []))
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(matched),
        "link": [{"relation": "self", "url": _link(base_url, resource_type, params)}],
    }
    if summary == "count":
        return bundle
    page = matched[offset : offset + count] if count else []
    if offset + count < len(matched) and count:
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
    entries = [
        {
            "fullUrl": f"{base_url}/{resource_type}/{r['id']}",
            "resource": r,
            "search": {"mode": "match"},
        }
        for r in page
    ]
    entries += [
        {
            "fullUrl": f"{base_url}/{r['resourceType']}/{r['id']}",
            "resource": r,
            "search": {"mode": "include"},
        }
        for r in _includes(svc, resource_type, page, params)
    ]
    bundle["entry"] = entries
    return bundle


def _includes(
    svc: ResourceService,
    resource_type: str,
    page: list[dict[str, Any]],
    params: list[tuple[str, str]],
) -> list[dict[str, Any]]:
    seen = {(r["resourceType"], r["id"]) for r in page}
    out: list[dict[str, Any]] = []

    def add(resource: dict[str, Any]) -> None:
        key = (resource["resourceType"], resource["id"])
        if key not in seen:
            seen.add(key)
            out.append(resource)

    for name, value in params:
        if name in ("_include", "_include:iterate"):
            parts = value.split(":")
            if len(parts) < 2 or parts[0] not in (resource_type, "*"):
                raise BadRequest(f"Invalid _include {value!r}: expected {resource_type}:param")
            if parts[1] == "*":
                continue
            definition = param_def(resource_type, parts[1])
            if definition is None or definition.kind != "reference":
                raise BadRequest(f"_include {value!r}: {parts[1]} is not a reference parameter")
            target_type = parts[2] if len(parts) > 2 else None
            for resource in page:
                for path in definition.paths:
                    for ref in values_at(resource, path):
                        local = (
                            parse_local(ref.get("reference", "")) if isinstance(ref, dict) else None
                        )
                        if not local or (target_type and local[0] != target_type):
                            continue
                        if svc.store.exists(local[0], local[1]):
                            add(svc.store.read(local[0], local[1]))
        elif name == "_revinclude":
            parts = value.split(":")
            if len(parts) < 2 or parts[0] not in SUPPORTED:
                raise BadRequest(f"Invalid _revinclude {value!r}: expected Type:param")
            definition = param_def(parts[0], parts[1])
            if definition is None or definition.kind != "reference":
                raise BadRequest(f"_revinclude {value!r}: {parts[1]} is not a reference parameter")
            for resource in page:
                ref = f"{resource['resourceType']}/{resource['id']}"
                for found in svc.search(parts[0], [(parts[1], ref)]):
                    add(found)
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

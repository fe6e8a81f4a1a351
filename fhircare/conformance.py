"""Conformance check: validate resources with a real HAPI FHIR server's `$validate`.

The project's StructureDefinitions, ValueSets and CodeSystems (`profiles/`) are loaded into
the server first, so each resource is validated against the base R4 specification and
against the profile named in its `meta.profile`. Only `error` and `fatal` issues count;
terminology warnings (a server without LOINC or SNOMED CT loaded cannot expand them) do not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from fhircare.care.definitions import load_profiles_dir
from fhircare.fhir.meta import without_server_meta

# Loaded in this order: profiles bind to the value sets, value sets include the code systems.
CONFORMANCE_TYPES = ("CodeSystem", "ValueSet", "StructureDefinition")


@dataclass
class Finding:
    resource_type: str
    id: str | None
    profile: str | None
    messages: list[str] = field(default_factory=list)


def load_conformance_resources(client: httpx.Client) -> int:
    """PUT every StructureDefinition, ValueSet and CodeSystem of `profiles/` on the server."""
    count = 0
    resources = [r for r in load_profiles_dir() if r["resourceType"] in CONFORMANCE_TYPES]
    resources.sort(key=lambda r: CONFORMANCE_TYPES.index(r["resourceType"]))
    for resource in resources:
        r = client.put(
            f"/{resource['resourceType']}/{resource['id']}",
            json=resource,
            headers={"Content-Type": "application/fhir+json"},
        )
        if r.status_code >= 300:
            raise RuntimeError(
                f"loading {resource['resourceType']}/{resource['id']} failed: "
                f"{r.status_code} {r.text[:500]}"
            )
        count += 1
    return count


def validate(client: httpx.Client, resource: dict[str, Any]) -> Finding:
    """Validate one resource (base spec + its meta.profile) and return its errors."""
    profiles = (resource.get("meta") or {}).get("profile") or []
    body = without_server_meta(resource)
    params = {"profile": profiles[0]} if profiles else {}
    r = client.post(
        f"/{resource['resourceType']}/$validate",
        params=params,
        content=json.dumps(body),
        headers={"Content-Type": "application/fhir+json"},
    )
    finding = Finding(
        resource["resourceType"], resource.get("id"), profiles[0] if profiles else None
    )
    try:
        outcome = r.json()
    except ValueError:
        finding.messages.append(f"HTTP {r.status_code}: not JSON")
        return finding
    for issue in outcome.get("issue") or []:
        if issue.get("severity") in ("error", "fatal"):
            where = ", ".join(issue.get("expression") or issue.get("location") or [])
            finding.messages.append(f"{where}: {issue.get('diagnostics')}")
    return finding


def shape_key(resource: dict[str, Any]) -> tuple[Any, ...]:
    """Resources of one type, profile and set of top-level elements validate alike."""
    profiles = tuple((resource.get("meta") or {}).get("profile") or [])
    return (resource.get("resourceType"), profiles, tuple(sorted(resource)))


def sample(resources: Iterable[dict[str, Any]], per_shape: int = 2) -> list[dict[str, Any]]:
    """At most `per_shape` resources of each shape (see `shape_key`)."""
    seen: dict[tuple[Any, ...], int] = {}
    out = []
    for resource in resources:
        key = shape_key(resource)
        if seen.get(key, 0) < per_shape:
            seen[key] = seen.get(key, 0) + 1
            out.append(resource)
    return out

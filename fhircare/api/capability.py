"""The CapabilityStatement: what this server really supports, built from its registries.

* resource types and search parameters (with their definition URLs) from the store's
  `SearchRegistry` (the R4 specification plus the SearchParameters the store indexes);
* interactions from the routes the API registers (a route added for PATCH adds `patch`);
* operations from the `OperationRegistry`, with the official OperationDefinition URL where
  the operation is the specification's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhircare import FHIR_VERSION, __version__
from fhircare.api.operations import OperationRegistry
from fhircare.fhir import registry
from fhircare.fhir.registry import SearchRegistry

PREFIX = "/fhir"
BULK_DATA_CAPABILITY = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
# (HTTP method, route path below /fhir) -> (level, interaction codes)
ROUTE_INTERACTIONS: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("GET", "/{resource_type}/{resource_id}"): ("type", ("read",)),
    ("GET", "/{resource_type}/{resource_id}/_history/{version_id}"): ("type", ("vread",)),
    ("PUT", "/{resource_type}/{resource_id}"): ("type", ("update",)),
    ("PATCH", "/{resource_type}/{resource_id}"): ("type", ("patch",)),
    ("DELETE", "/{resource_type}/{resource_id}"): ("type", ("delete",)),
    ("GET", "/{resource_type}/{resource_id}/_history"): ("type", ("history-instance",)),
    ("GET", "/{resource_type}/_history"): ("type", ("history-type",)),
    ("POST", "/{resource_type}"): ("type", ("create",)),
    ("GET", "/{resource_type}"): ("type", ("search-type",)),
    ("POST", ""): ("system", ("transaction", "batch")),
    ("GET", "/_history"): ("system", ("history-system",)),
}
PATCH_FORMATS = (
    "application/json-patch+json",
    "application/fhir+json",
    "application/merge-patch+json",
)
TYPE_ORDER = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)


def _flat_routes(routes: Iterable[Any], prefix: str = "") -> Iterable[tuple[str, set[str]]]:
    """(path, methods) of every route, through included routers."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:  # FastAPI's wrapper of an included router
            context = getattr(route, "include_context", None)
            yield from _flat_routes(inner.routes, prefix + getattr(context, "prefix", ""))
        elif hasattr(route, "path"):
            yield prefix + route.path, set(getattr(route, "methods", None) or ())


def interactions_from_routes(routes: Iterable[Any]) -> tuple[list[str], list[str]]:
    """(type-level, system-level) interaction codes of the FHIR routes an app registers."""
    found: dict[str, set[str]] = {"type": set(), "system": set()}
    for path, methods in _flat_routes(routes):
        if not path.startswith(PREFIX):
            continue
        sub = path[len(PREFIX) :].rstrip("/")
        for method in methods:
            hit = ROUTE_INTERACTIONS.get((method, sub))
            if hit:
                found[hit[0]].update(hit[1])
    type_level = [c for c in TYPE_ORDER if c in found["type"]]
    system_level = sorted(found["system"])
    return type_level, system_level


def _search_params(reg: SearchRegistry, rtype: str) -> list[dict[str, Any]]:
    out = []
    for code, p in sorted(reg.params(rtype).items()):
        if not p.supported:
            continue
        out.append({"name": code, "definition": p.url, "type": p.type})
    return out


def _rev_includes(reg: SearchRegistry, rtype: str) -> list[str]:
    out = []
    for source in registry.resource_types():
        for code, p in sorted(reg.params(source).items()):
            if p.type == "reference" and p.supported and (not p.targets or rtype in p.targets):
                out.append(f"{source}:{code}")
    return out


def _operation_url(name: str, resource_type: str | None, definition: str | None = None) -> str:
    if definition:
        return definition
    official = registry.operation_definition(name, resource_type)
    if official is not None:
        return official.url
    return f"http://fhircare.org/fhir/OperationDefinition/{name}"


def capability_statement(
    *,
    base_url: str,
    operations: OperationRegistry,
    search_registry: SearchRegistry | None = None,
    routes: Iterable[Any] = (),
    security: dict[str, Any] | None = None,
    software_date: str = "2026-11-24",
) -> dict[str, Any]:
    reg = search_registry or registry.R4
    type_interactions, system_interactions = interactions_from_routes(routes)
    resources = []
    for rtype in registry.resource_types():
        params = reg.params(rtype)
        entry: dict[str, Any] = {
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": code} for code in type_interactions],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "multiple",
            "referencePolicy": ["literal", "local"],
            "searchInclude": ["*"]
            + [
                f"{rtype}:{code}"
                for code, p in sorted(params.items())
                if p.type == "reference" and p.supported
            ],
            "searchRevInclude": _rev_includes(reg, rtype),
            "searchParam": _search_params(reg, rtype),
        }
        ops = [
            {"name": op.name, "definition": _operation_url(op.name, rtype, op.definition)}
            for op in operations.all()
            if op.level in ("type", "instance") and (not op.types or rtype in op.types)
        ]
        if ops:
            entry["operation"] = list({o["name"]: o for o in ops}.values())
        resources.append(entry)
    rest: dict[str, Any] = {
        "mode": "server",
        "resource": resources,
        "interaction": [{"code": code} for code in system_interactions],
        "searchParam": [
            {"name": "_count", "type": "number"},
            {"name": "_offset", "type": "number"},
        ],
        "operation": [
            {"name": op.name, "definition": _operation_url(op.name, None, op.definition)}
            for op in operations.all()
            if op.level == "system"
        ],
    }
    if security:
        rest["security"] = security
    instantiates = sorted({BULK_DATA_CAPABILITY for op in operations.all() if op.name == "export"})
    return {
        "resourceType": "CapabilityStatement",
        **({"instantiates": instantiates} if instantiates else {}),
        "status": "active",
        "date": software_date,
        "publisher": "fhircare",
        "kind": "instance",
        "software": {"name": "fhircare", "version": __version__},
        "implementation": {"description": "fhircare care-management FHIR server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": list(PATCH_FORMATS) if "patch" in type_interactions else [],
        "rest": [rest],
    }


class CapabilityProvider:
    """The CapabilityStatement of one app, rebuilt when the store's parameters change."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        self._app = app
        self._kwargs = kwargs
        self._cached: tuple[int, dict[str, Any]] | None = None

    def __call__(self) -> dict[str, Any]:
        reg: SearchRegistry = self._kwargs.get("search_registry") or registry.R4
        if self._cached is None or self._cached[0] != reg.version:
            statement = capability_statement(routes=self._app.routes, **self._kwargs)
            self._cached = (reg.version, statement)
        return self._cached[1]

"""The CapabilityStatement: what this server really supports, built from its registries."""

from __future__ import annotations

from typing import Any

from fhircare import FHIR_VERSION, __version__
from fhircare.api.operations import OperationRegistry
from fhircare.fhir.search import supported_params
from fhircare.fhir.validation import SUPPORTED_TYPES

INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]


def capability_statement(
    *,
    base_url: str,
    operations: OperationRegistry,
    security: dict[str, Any] | None = None,
    software_date: str = "2026-11-24",
) -> dict[str, Any]:
    resources = []
    for rtype in SUPPORTED_TYPES:
        params = supported_params(rtype)
        entry: dict[str, Any] = {
            "type": rtype,
            "interaction": [{"code": code} for code in INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "multiple",
            "searchInclude": [f"{rtype}:{n}" for n, d in params.items() if d.kind == "reference"],
            "searchParam": [
                {"name": name, "type": d.kind if d.kind != "uri" else "uri"}
                for name, d in sorted(params.items())
            ],
        }
        ops = [
            {
                "name": op.name,
                "definition": f"http://fhircare.org/fhir/OperationDefinition/{op.name}",
            }
            for op in operations.all()
            if op.level in ("type", "instance") and (not op.types or rtype in op.types)
        ]
        if ops:
            entry["operation"] = ops
        resources.append(entry)
    rest: dict[str, Any] = {
        "mode": "server",
        "resource": resources,
        "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
        "searchParam": [
            {"name": "_count", "type": "number"},
            {"name": "_offset", "type": "number"},
        ],
        "operation": [
            {
                "name": op.name,
                "definition": f"http://fhircare.org/fhir/OperationDefinition/{op.name}",
            }
            for op in operations.all()
            if op.level == "system"
        ],
    }
    if security:
        rest["security"] = security
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": software_date,
        "publisher": "fhircare",
        "kind": "instance",
        "software": {"name": "fhircare", "version": __version__},
        "implementation": {"description": "fhircare care-management FHIR server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": [
            "application/json-patch+json",
            "application/fhir+json",
            "application/merge-patch+json",
        ],
        "rest": [rest],
    }

"""Operations every FHIR server is expected to have: $validate, $everything, $meta."""

from __future__ import annotations

from typing import Any

from fhircare.api.operations import OpCall, Operation, OperationRegistry
from fhircare.fhir.errors import BadRequest, FhirError
from fhircare.fhir.validation import validate_resource
from fhircare.services.searching import compartment_resources


def validate(call: OpCall) -> dict[str, Any]:
    """$validate: structure, datatypes, cardinality and closed code bindings."""
    resource = (
        call.param("resource")
        if call.body and call.body.get("resourceType") == "Parameters"
        else call.body
    )
    if resource is None and call.id:
        resource = call.state.svc.read(call.resource_type, call.id)
        call.access.require(call.resource_type, "read", resource)
    if not isinstance(resource, dict):
        raise BadRequest("$validate needs a resource (body or Parameters.parameter 'resource')")
    try:
        validate_resource(resource, call.resource_type)
    except FhirError as exc:
        oo = exc.outcome()
        return oo, 200 if exc.status in (400, 422) else exc.status  # type: ignore[return-value]
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "information", "code": "informational", "diagnostics": "No issues found"}
        ],
    }


def everything(call: OpCall) -> dict[str, Any]:
    """Patient/$everything: the patient and every resource in its compartment."""
    svc = call.state.svc
    patient = svc.read("Patient", call.id)
    call.access.require("Patient", "read", patient)
    ref = f"Patient/{call.id}"
    entries = [
        {
            "fullUrl": f"{call.state.base_url}/{ref}",
            "resource": patient,
            "search": {"mode": "match"},
        }
    ]
    for resource in compartment_resources(svc, "Patient", call.id):
        if resource["resourceType"] == "Patient" and resource["id"] == call.id:
            continue
        entries.append(
            {
                "fullUrl": f"{call.state.base_url}/{resource['resourceType']}/{resource['id']}",
                "resource": resource,
                "search": {"mode": "match"},
            }
        )
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "entry": entries,
    }
    call.access.filter_bundle(bundle)
    call.access.audit_search("Patient", f"_id={call.id}&$everything", bundle)
    return bundle


def register(ops: OperationRegistry) -> None:
    ops.add(
        Operation(
            "validate", validate, "type", affects_state=False, description="Validate a resource"
        )
    )
    ops.add(Operation("validate", validate, "instance", affects_state=False))
    ops.add(
        Operation(
            "everything",
            everything,
            "instance",
            ("Patient",),
            affects_state=False,
            description="Everything about a patient",
        )
    )

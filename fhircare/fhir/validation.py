"""Validate FHIR R4 JSON with fhir.resources (R4B classes) and report FHIRPath-like paths."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ValidationError

from fhircare.fhir.errors import BadRequest, FhirError, NotFound, Unprocessable

# The resource types this service stores and serves.
SUPPORTED_TYPES: tuple[str, ...] = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "RelatedPerson",
    "Location",
    "CareTeam",
    "Encounter",
    "EpisodeOfCare",
    "Condition",
    "Observation",
    "Goal",
    "CarePlan",
    "Task",
    "ServiceRequest",
    "Questionnaire",
    "QuestionnaireResponse",
    "PlanDefinition",
    "ActivityDefinition",
    "MedicationRequest",
    "MedicationStatement",
    "Medication",
    "AllergyIntolerance",
    "List",
    "DetectedIssue",
    "Communication",
    "DocumentReference",
    "Provenance",
    "AuditEvent",
    "Subscription",
    "StructureDefinition",
    "ValueSet",
    "CodeSystem",
    "ConceptMap",
    "Basic",
)
SUPPORTED = frozenset(SUPPORTED_TYPES)

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def check_type(resource_type: str) -> None:
    """Raise NotFound for a type this server does not serve."""
    if resource_type not in SUPPORTED:
        raise NotFound(
            f"Unknown or unsupported resource type '{resource_type}'", code="not-supported"
        )


def check_id(resource_id: str) -> None:
    """Raise BadRequest for an id that is not a valid FHIR id."""
    if not ID_RE.match(resource_id):
        raise BadRequest(
            f"Invalid resource id {resource_id[:80]!r}: ids are 1-64 of [A-Za-z0-9-.]",
            code="value",
        )


@cache
def model_class(resource_type: str) -> type[BaseModel]:
    return get_fhir_model_class(resource_type)


def _expression(resource_type: str, loc: tuple[Any, ...]) -> str:
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not part.startswith("function-"):
            out += f".{part}"
    return out


def validate_resource(data: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Check a FHIR resource (structure, datatypes, cardinality, required code bindings).

    Returns the same dict. Raises BadRequest (not a resource, wrong type) or
    Unprocessable (invalid) with the failing element paths in `issue.expression`.
    """
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object holding a FHIR resource")
    rtype = data.get("resourceType")
    if not isinstance(rtype, str):
        raise BadRequest("The resource has no resourceType")
    if expected_type and rtype != expected_type:
        raise BadRequest(
            f"resourceType '{rtype}' does not match the endpoint's type '{expected_type}'"
        )
    if rtype not in SUPPORTED and rtype not in ("Bundle", "Parameters"):
        raise BadRequest(f"Unsupported resourceType '{rtype}'", code="not-supported")
    if "id" in data and (not isinstance(data["id"], str) or not ID_RE.match(data["id"])):
        raise Unprocessable(
            "Invalid resource id: ids are 1-64 of [A-Za-z0-9-.]", expression=[f"{rtype}.id"]
        )
    try:
        model = model_class(rtype).model_validate(data)
    except ValidationError as exc:
        raise _unprocessable(rtype, exc) from exc
    except (ValueError, TypeError) as exc:  # raised by some root validators
        raise Unprocessable(f"Invalid {rtype}: {exc}", expression=[rtype]) from exc
    problems = list(_binding_problems(model, rtype))
    if problems:
        first_path, first_msg = problems[0]
        raise Unprocessable(
            first_msg,
            expression=[first_path],
            issues=[
                {"severity": "error", "code": "code-invalid", "diagnostics": m, "expression": [p]}
                for p, m in problems[1:20]
            ],
        )
    return data


def _unprocessable(rtype: str, exc: ValidationError) -> FhirError:
    errors = exc.errors()
    issues = []
    for err in errors[:20]:
        path = _expression(rtype, tuple(err.get("loc", ())))
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "Unknown element"
        elif err.get("type") == "missing":
            msg = "Required element is missing"
        issues.append((path, f"{path}: {msg}"))
    first_path, first_msg = issues[0] if issues else (rtype, f"Invalid {rtype}")
    return Unprocessable(
        first_msg,
        expression=[first_path],
        issues=[
            {"severity": "error", "code": "structure", "diagnostics": m, "expression": [p]}
            for p, m in issues[1:]
        ],
    )


def _binding_problems(model: BaseModel, path: str):  # noqa: ANN202 - generator
    """Values of `code` elements outside their required (closed) value set."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name, None)
        if value is None:
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        enum = extra.get("enum_values")
        alias = field.alias or name
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            sub = f"{path}.{alias}" + (f"[{i}]" if isinstance(value, list) else "")
            if isinstance(item, BaseModel):
                yield from _binding_problems(item, sub)
            elif enum and "+" not in enum and isinstance(item, str) and item not in enum:
                yield sub, f"{sub}: '{item}' is not one of {', '.join(enum)}"

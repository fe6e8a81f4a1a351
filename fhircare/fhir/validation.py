"""Validate FHIR R4 JSON with fhir.resources (R4B classes) and report FHIRPath-like paths."""

from __future__ import annotations

import json
import re
from datetime import date, time
from decimal import Decimal
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
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


@cache
def is_resource_type(name: str) -> bool:
    """True for the name of a FHIR R4 resource type (served here or not)."""
    try:
        return issubclass(model_class(name), Resource)
    except ValueError:
        return False


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
    empty = _first_empty(data, rtype)
    if empty:
        raise Unprocessable(
            f'{empty}: FHIR elements must not be empty (no [], {{}}, "" or null)',
            expression=[empty],
        )
    try:
        model = model_class(rtype).model_validate(data)
    except ValidationError as exc:
        raise _unprocessable(rtype, exc) from exc
    except (ValueError, TypeError) as exc:  # raised by some root validators
        raise Unprocessable(f"Invalid {rtype}: {exc}", expression=[rtype]) from exc
    problems = list(_json_type_problems(model, data, rtype))
    problems += list(_binding_problems(model, rtype))
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


def _first_empty(node: Any, path: str) -> str | None:
    """The path of the first empty array, object or string, or null property, if any.

    (JSON nulls inside arrays are allowed: they align primitive extensions, `_given`.)"""
    if isinstance(node, dict):
        if not node:
            return path
        for key, value in node.items():
            if value is None or value == "" or value == [] or value == {}:
                return f"{path}.{key}"
            found = _first_empty(value, f"{path}.{key}")
            if found:
                return found
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if item == "" or item == [] or item == {}:
                return f"{path}[{i}]"
            if item is not None:
                found = _first_empty(item, f"{path}[{i}]")
                if found:
                    return found
    return None


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


def _json_kind_ok(value: Any, raw: Any) -> bool:
    """Does the JSON value have the JSON type of the (coerced) primitive value?"""
    if isinstance(value, bool):
        return isinstance(raw, bool)
    if isinstance(value, int):
        return isinstance(raw, int) and not isinstance(raw, bool)
    if isinstance(value, Decimal | float):
        return isinstance(raw, int | float) and not isinstance(raw, bool)
    if isinstance(value, str | bytes | date | time):  # datetime is a date
        return isinstance(raw, str)
    return True


def _json_type_problems(model: BaseModel, raw: Any, path: str):  # noqa: ANN202 - generator
    """FHIR JSON type errors the (lax) model validation coerced away: "true" or 1 for a
    boolean, "3" for an integer, "12" for a decimal, 5 for a string, and nulls."""
    if not isinstance(raw, dict):
        return
    for key, value in raw.items():
        if value is None:
            yield f"{path}.{key}", f"{path}.{key}: null is not allowed in FHIR JSON"
        elif isinstance(value, list) and f"_{key}" not in raw and any(v is None for v in value):
            yield f"{path}.{key}", f"{path}.{key}: null is not allowed in FHIR JSON arrays"
    for name, field in type(model).model_fields.items():
        alias = field.alias or name
        value = getattr(model, name, None)
        if value is None or alias not in raw:
            continue
        rv = raw[alias]
        pairs = (
            list(enumerate(zip(value, rv, strict=True)))
            if isinstance(value, list) and isinstance(rv, list) and len(value) == len(rv)
            else [(None, (value, rv))]
        )
        for i, (item, ritem) in pairs:
            sub = f"{path}.{alias}" + ("" if i is None else f"[{i}]")
            if isinstance(item, BaseModel):
                yield from _json_type_problems(item, ritem, sub)
            elif not isinstance(item, list) and not _json_kind_ok(item, ritem):
                yield sub, f"{sub}: {json.dumps(ritem)[:40]} has the wrong JSON type"


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

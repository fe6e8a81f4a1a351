"""Validate FHIR R4 JSON and report FHIRPath-like paths.

Types whose fhir.resources R4B model matches R4 are validated with the model (plus a check
that refuses the few R4B-only elements); the others (types R4B removed or restructured)
from the R4 element definitions (`structure.py`). Required code bindings are checked from
the R4 value sets for every type.
"""

from __future__ import annotations

import json
import re
from datetime import date, time
from decimal import Decimal
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ValidationError

from fhircare.fhir import registry, structure
from fhircare.fhir.errors import BadRequest, FhirError, NotFound, Unprocessable

# Every R4 resource type is stored and served (the registry's list, from the specification).
SUPPORTED_TYPES: tuple[str, ...] = registry.resource_types()
SUPPORTED = frozenset(SUPPORTED_TYPES)

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def check_type(resource_type: str) -> None:
    """Raise NotFound for a name that is not an R4 resource type."""
    if not registry.is_resource_type(resource_type):
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


def is_resource_type(name: str) -> bool:
    """True for the name of a FHIR R4 resource type."""
    return registry.is_resource_type(name)


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
    if not registry.is_resource_type(rtype):
        raise BadRequest(f"Unknown resourceType '{rtype}'", code="not-supported")
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
    if rtype in registry.r4b_model_types():
        try:
            model = model_class(rtype).model_validate(data)
        except ValidationError as exc:
            raise _unprocessable(rtype, exc) from exc
        except (ValueError, TypeError) as exc:  # raised by some root validators
            raise Unprocessable(f"Invalid {rtype}: {exc}", expression=[rtype]) from exc
        problems = list(_r4b_only(data, rtype))
        problems += list(_json_type_problems(model, data, rtype))
        problems += structure.problems(data, rtype, bindings_only=True, contained=_contained)
    else:
        problems = structure.problems(data, rtype, contained=_contained)
    if rtype == "SearchParameter" and not problems:
        problems = search_parameter_problems(data)
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


def _contained(resource: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """Problems of a resource inside another (contained, Bundle entries, parameters)."""
    try:
        validate_resource(resource)
    except FhirError as exc:
        return [(where, f"{where}: {exc.diagnostics}")]
    return []


def _r4b_only(data: dict[str, Any], rtype: str):  # noqa: ANN202 - generator
    """Elements the R4B model has that R4 does not (refused: they are not FHIR R4)."""
    for path in registry.r4b_only_elements().get(rtype, ()):
        name = path.split(".", 1)[1]
        if name in data or f"_{name}" in data:
            yield path, f"{path}: Unknown element (not in FHIR R4)"


def search_parameter_problems(sp: dict[str, Any]) -> list[tuple[str, str]]:
    """A SearchParameter fhircare can index: known bases, a supported type, an expression
    it can evaluate, components that name known parameters."""
    from fhircare.fhir.fhirpath import UnsupportedExpression, compile_expression

    out: list[tuple[str, str]] = []
    for i, base in enumerate(sp.get("base") or []):
        if base not in ("Resource", "DomainResource") and not registry.is_resource_type(base):
            out.append((f"SearchParameter.base[{i}]", f"'{base}' is not a resource type"))
    if sp.get("type") == "special":
        return out
    expression = sp.get("expression")
    if not expression:
        out.append(("SearchParameter.expression", "An expression is needed to index it"))
        return out
    for base in sp.get("base") or []:
        try:
            compile_expression(expression, base)
        except UnsupportedExpression as exc:
            out.append(("SearchParameter.expression", f"Cannot evaluate the expression: {exc}"))
            break
    for i, comp in enumerate(sp.get("component") or []):
        if not registry.R4.by_url(comp.get("definition", "")):
            out.append(
                (
                    f"SearchParameter.component[{i}].definition",
                    f"Unknown component parameter {comp.get('definition')}",
                )
            )
    return out


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

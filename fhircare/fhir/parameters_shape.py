"""The shape of a Parameters resource (an operation's input or a FHIRPath Patch), checked
before anything reads it.

The element definitions of R4 `Parameters` (through the registry) give the structure:
`parameter` an array of objects, each with a string `name`, `value[x]` of a JSON type that
fits its datatype, `resource` an object with a `resourceType`, `part` an array of the same
shape. inv-1 adds that each parameter has exactly one of value, resource or part. The
resources a parameter carries are left to whoever reads them (`$validate` reports on them).
A Parameters that is not of that shape is refused with a 400 naming the element.
"""

from __future__ import annotations

from typing import Any

from fhircare.fhir import structure
from fhircare.fhir.errors import BadRequest


def check_parameters_shape(body: Any) -> None:
    """Raise BadRequest unless `body` (a Parameters resource) is of the R4 shape."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("A Parameters resource is expected", expression=["Parameters"])
    found = structure.problems(body, "Parameters")
    if not found:
        found = list(_one_of_each(body.get("parameter"), "Parameters.parameter"))
    if found:
        where, message = found[0]
        raise BadRequest(message, expression=[where])


def _one_of_each(parameters: Any, where: str) -> list[tuple[str, str]]:
    """inv-1 for each parameter, nested parts included."""
    out: list[tuple[str, str]] = []
    for i, param in enumerate(parameters or []):
        at = f"{where}[{i}]"
        if not isinstance(param, dict):  # null (the structure walk passes nulls over)
            out.append((at, f"{at}: an object (a parameter) is expected"))
            continue
        values = [k for k in param if k.startswith("value") and len(k) > 5]
        kinds = len(values) + ("resource" in param) + ("part" in param)
        if kinds != 1:
            out.append(
                (at, f"{at} must have exactly one of value[x], resource or part (inv-1)")
            )
        out.extend(_one_of_each(param.get("part"), f"{at}.part"))
    return out


__all__ = ["check_parameters_shape"]

"""FHIR operations ($name) at system, type and instance level.

Operations are registered in `bootstrap.py` as `Operation`s; each gets an `OpCall` with
the request's parameters and body and returns a FHIR resource (and status).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from fhircare.api.access import Access
from fhircare.api.http import FhirJSONResponse
from fhircare.fhir.errors import BadRequest, NotFound
from fhircare.fhir.parameters_shape import check_parameters_shape
from fhircare.security.gate import GatedStore
from fhircare.services.resources import ResourceService


@dataclass
class OpCall:
    """One invocation of an operation."""

    name: str
    resource_type: str | None
    id: str | None
    body: Any
    query: list[tuple[str, str]]
    access: Access
    state: Any  # app.state: settings, base_url, paging (data only through `store`/`svc`)
    headers: dict[str, str] = field(default_factory=dict)
    url: str = ""  # the request URL as received

    @property
    def store(self) -> GatedStore:
        """The caller's gated store: everything the operation reads and writes goes here."""
        return self.access.store

    @property
    def svc(self) -> ResourceService:
        """The resource service bound to the caller's gated store."""
        return self.access.svc

    def param(self, name: str) -> Any:
        """A parameter from the query string or a Parameters body (value[x] or resource)."""
        for k, v in self.query:
            if k == name:
                return v
        if isinstance(self.body, dict) and self.body.get("resourceType") == "Parameters":
            for p in self.body.get("parameter") or []:
                if p.get("name") == name:
                    if "resource" in p:
                        return p["resource"]
                    for key, value in p.items():
                        if key.startswith("value"):
                            return value
                    return p.get("part")
        return None

    def params(self, name: str) -> list[Any]:
        out: list[Any] = [v for k, v in self.query if k == name]
        if isinstance(self.body, dict) and self.body.get("resourceType") == "Parameters":
            for p in self.body.get("parameter") or []:
                if p.get("name") == name:
                    out.extend(v for k, v in p.items() if k.startswith("value") or k == "resource")
        return out


# A handler returns a resource (200), a (resource, status) pair, or a whole Response (for
# operations that answer with headers of their own, such as the asynchronous $export).
Handler = Callable[[OpCall], tuple[dict[str, Any], int] | dict[str, Any] | Response]


@dataclass
class Operation:
    name: str
    handler: Handler
    level: str  # "system" | "type" | "instance"
    types: tuple[str, ...] = ()  # empty: any type
    affects_state: bool = True
    description: str = ""
    definition: str | None = None  # canonical OperationDefinition URL when not R4 core's


class OperationRegistry:
    def __init__(self) -> None:
        self._ops: dict[tuple[str, str], list[Operation]] = {}

    def add(self, op: Operation) -> None:
        self._ops.setdefault((op.name, op.level), []).append(op)

    def find(self, name: str, level: str, resource_type: str | None) -> Operation | None:
        for op in self._ops.get((name, level), []):
            if not op.types or resource_type in op.types:
                return op
        return None

    def all(self) -> list[Operation]:
        return [op for ops in self._ops.values() for op in ops]


def run_operation(
    request: Request,
    access: Access,
    name: str,
    resource_type: str | None,
    resource_id: str | None,
    body: Any,
) -> Response:
    """Dispatch an operation call to its registered handler."""
    st = request.app.state
    level = "instance" if resource_id else ("type" if resource_type else "system")
    op = st.operations.find(name, level, resource_type)
    if op is None:
        where = "/".join(p for p in (resource_type, resource_id) if p) or "the system level"
        raise NotFound(f"Unknown operation ${name} at {where}", code="not-supported")
    if request.method == "GET" and op.affects_state:
        error = BadRequest(
            f"${name} changes data: invoke it with POST", status=405, code="not-supported"
        )
        error.allow = ["POST"]  # type: ignore[attr-defined]
        raise error
    if body is not None and not isinstance(body, dict):
        raise BadRequest("An operation body must be a FHIR resource (usually Parameters)")
    if body is not None and body.get("resourceType") == "Parameters":
        check_parameters_shape(body)  # before any handler reads a parameter
    call = OpCall(
        name=name,
        resource_type=resource_type,
        id=resource_id,
        body=body,
        query=[(k, v) for k, v in request.query_params.multi_items()],
        access=access,
        state=st,
        headers=dict(request.headers),
        url=str(request.url),
    )
    result = op.handler(call)
    if isinstance(result, Response):
        return result
    resource, status = result if isinstance(result, tuple) else (result, 200)
    return FhirJSONResponse(resource, status_code=status)

"""One documented route per registered FHIR operation (`POST /fhir/PlanDefinition/{id}/$apply`,
`GET /fhir/Patient/{id}/$everything`, `POST /fhir/{type}/$validate`, ...), built from the
`OperationRegistry`, so the OpenAPI document lists each operation with its description and
request body. Each route dispatches through `run_operation`, exactly as the generic
`/fhir/.../${name}` routes in `fhir_routes` (which still answer unknown operations)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fhircare.api.access import Access, get_access
from fhircare.api.http import (
    FHIR_RESPONSES,
    RESOURCE_SCHEMA,
    FhirJSONResponse,
    read_json_body,
)
from fhircare.api.operations import Operation, OperationRegistry, run_operation
from fhircare.fhir.validation import check_id, check_type

PARAMETERS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "A Parameters resource (or, for $validate, the resource itself); "
        "parameters may also be given in the query string",
        "content": {"application/fhir+json": {"schema": RESOURCE_SCHEMA}},
    }
}

Endpoint = Callable[..., Awaitable[Response]]


async def _body(request: Request) -> Any:
    if request.method != "POST":
        return None
    length = request.headers.get("content-length")
    chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
    if (length is None and not chunked) or (length is not None and length.strip() in ("", "0")):
        return None
    return await read_json_body(request)


def _endpoint(
    op: Operation, resource_type: str | None, path_type: bool, instance: bool
) -> Endpoint:
    """An endpoint whose signature names exactly the path's parameters (for OpenAPI)."""

    async def call(
        request: Request, access: Access, rtype: str | None, rid: str | None
    ) -> Response:
        if rtype is not None:
            check_type(rtype)
        if rid is not None:
            check_id(rid)
        body = await _body(request)
        return await run_in_threadpool(run_operation, request, access, op.name, rtype, rid, body)

    async def endpoint(
        request: Request, access: Access = Depends(get_access), **path: str
    ) -> Response:
        return await call(
            request,
            access,
            path.get("resource_type", resource_type),
            path.get("resource_id") if instance else None,
        )

    params = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
        inspect.Parameter(
            "access",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Access,
            default=Depends(get_access),
        ),
    ]
    if path_type:
        params.append(
            inspect.Parameter("resource_type", inspect.Parameter.KEYWORD_ONLY, annotation=str)
        )
    if instance:
        params.append(
            inspect.Parameter("resource_id", inspect.Parameter.KEYWORD_ONLY, annotation=str)
        )
    endpoint.__signature__ = inspect.Signature(params, return_annotation=Response)  # type: ignore[attr-defined]
    return endpoint


def _routes(op: Operation) -> list[tuple[str, str | None, bool]]:
    """(path, fixed resource type, path names the type) for each place `op` is invoked."""
    name = f"${op.name}"
    if op.level == "system":
        return [(f"/{name}", None, False)]
    tail = f"/{{resource_id}}/{name}" if op.level == "instance" else f"/{name}"
    if not op.types:
        return [(f"/{{resource_type}}{tail}", None, True)]
    return [(f"/{rtype}{tail}", rtype, False) for rtype in op.types]


def operation_router(registry: OperationRegistry) -> APIRouter:
    router = APIRouter(
        prefix="/fhir",
        tags=["FHIR operations"],
        default_response_class=FhirJSONResponse,
        responses=FHIR_RESPONSES,
    )
    for op in registry.all():
        doc = inspect.getdoc(op.handler) or op.description
        summary = op.description or (doc.splitlines()[0] if doc else f"${op.name}")
        for path, rtype, path_type in _routes(op):
            where = rtype or ("any type" if path_type else "the system")
            methods = ["POST"] if op.affects_state else ["GET", "POST"]
            for method in methods:
                router.add_api_route(
                    path,
                    _endpoint(op, rtype, path_type, op.level == "instance"),
                    methods=[method],
                    summary=f"${op.name} ({where}): {summary}",
                    description=doc,
                    name=f"{op.name}-{op.level}-{rtype or 'any'}-{method.lower()}",
                    openapi_extra=PARAMETERS_BODY if method == "POST" else None,
                )
    return router

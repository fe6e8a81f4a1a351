"""The FHIR REST facade at /fhir: CRUD, conditional operations, search, history, Bundles."""

from __future__ import annotations

import urllib.parse
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from fhircare.api.access import Access, get_access
from fhircare.api.http import (
    FHIR_BODY,
    FHIR_RESPONSES,
    FORM_BODY,
    OPTIONAL_FHIR_BODY,
    PATCH_BODY,
    FhirJSONResponse,
    check_json_content_type,
    read_form,
    read_json_body,
    resource_response,
)
from fhircare.api.operations import run_operation
from fhircare.api.workers import run_blocking
from fhircare.fhir.bundle_shape import check_bundle_shape
from fhircare.fhir.errors import BadRequest, MethodNotAllowed, NotFound, PreconditionFailed
from fhircare.fhir.summary import check_summary, parse_elements, subset
from fhircare.fhir.validation import check_id, check_type
from fhircare.services.patching import JSON_PATCH, MERGE_PATCH, patch_of
from fhircare.services.resources import parse_etag
from fhircare.services.searching import history_bundle, search_bundle, since_param

router = APIRouter(
    prefix="/fhir",
    tags=["FHIR"],
    default_response_class=FhirJSONResponse,
    responses=FHIR_RESPONSES,
)


def _state(request: Request) -> Any:
    return request.app.state


FORMAT_PARAMS = ("_format", "_pretty")
HISTORY_PARAMS = ("_count", "_offset", "_since")


def _lenient(request: Request) -> bool:
    """Prefer: handling=lenient (unknown search parameters ignored, as HAPI does)."""
    return "handling=lenient" in request.headers.get("prefer", "").replace(" ", "")


def _params(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.query_params.multi_items() if k not in FORMAT_PARAMS]


def _refuse_query(request: Request, what: str, allowed: tuple[str, ...] = ()) -> None:
    """400 for query parameters an interaction would otherwise silently ignore."""
    ignored = sorted({k for k, _ in _params(request) if k not in allowed})
    if ignored:
        takes = f" (it takes {', '.join(allowed)})" if allowed else ""
        raise BadRequest(
            f"{what} does not take the parameter(s) {', '.join(ignored)}{takes}",
            code="not-supported",
        )


def _if_match(request: Request) -> str | None:
    value = request.headers.get("if-match")
    if value is not None and parse_etag(value) is None:
        raise PreconditionFailed(f"Unreadable If-Match value {value!r}")
    return parse_etag(value)


@router.get("/metadata", summary="CapabilityStatement")
def metadata(request: Request) -> Response:
    return FhirJSONResponse(_state(request).capability())


@router.get("/_history", summary="System history")
def system_history(request: Request, access: Access = Depends(get_access)) -> Response:
    st = _state(request)
    _refuse_query(request, "History", HISTORY_PARAMS)
    params = _params(request)
    since = since_param(params)
    entries = access.store.history(None, None, since=since)
    return FhirJSONResponse(
        history_bundle(entries, params, base_url=st.base_url, path="_history", paging=st.paging)
    )


@router.post("", summary="Transaction or batch Bundle", openapi_extra=FHIR_BODY)
async def post_bundle(request: Request, access: Access = Depends(get_access)) -> Response:
    _refuse_query(request, "A transaction or batch")
    body = await read_json_body(request)
    return await _run_sync(request, _bundle, request, body, access)


def _bundle(request: Request, body: Any, access: Access) -> Response:
    check_bundle_shape(body, access.bundles.max_entries)  # before anything walks the entries
    representation = "return=representation" in request.headers.get("prefer", "")
    return FhirJSONResponse(access.bundles.process(body, representation=representation))


@router.get("/{resource_type}", summary="Search")
async def search(
    resource_type: str, request: Request, access: Access = Depends(get_access)
) -> Response:
    if access.store.memory_reads and not resource_type.startswith("$"):
        return _search(resource_type, request, access)  # in memory: no worker-thread hop
    return await _run_sync(request, _search, resource_type, request, access)


def _search(resource_type: str, request: Request, access: Access) -> Response:
    st = _state(request)
    if resource_type.startswith("$"):
        return run_operation(request, access, resource_type[1:], None, None, None)
    check_type(resource_type)
    bundle = search_bundle(
        access.svc,
        resource_type,
        _params(request),
        base_url=st.base_url,
        paging=st.paging,
        lenient=_lenient(request),
    )
    access.audit_search(resource_type, request.url.query, bundle)
    return FhirJSONResponse(bundle)


@router.post("/{resource_type}", summary="Create (or a system operation)", openapi_extra=FHIR_BODY)
async def create(
    resource_type: str, request: Request, access: Access = Depends(get_access)
) -> Response:
    if resource_type.startswith("$"):
        body = await read_json_body(request) if await _has_body(request) else None
        return await _run_sync(
            request, run_operation, request, access, resource_type[1:], None, None, body
        )
    check_type(resource_type)
    body = await read_json_body(request)
    return await _run_sync(request, _create, request, resource_type, body, access)


def _create(request: Request, resource_type: str, body: Any, access: Access) -> Response:
    st = _state(request)
    if isinstance(body, dict) and body.get("resourceType") != resource_type:
        raise BadRequest(
            f"resourceType {body.get('resourceType')!r} does not match "
            f"the URL type {resource_type!r}"
        )
    outcome = access.svc.create(body, if_none_exist=_create_condition(request))
    return resource_response(
        outcome.resource, outcome.status, request=request, base_url=st.base_url, location=True
    )


def _create_condition(request: Request) -> str | None:
    """If-None-Exist, or the search criteria of the POST's query string (what fhirpy's
    `get_or_create` sends): both name a conditional create. Both at once must agree."""
    header = request.headers.get("if-none-exist")
    query = urllib.parse.urlencode(_params(request))
    if (
        header
        and query
        and sorted(urllib.parse.parse_qsl(header.split("?", 1)[-1])) != sorted(_params(request))
    ):
        raise BadRequest("If-None-Exist and the query string give different criteria")
    return header or query or None


@router.put("/{resource_type}", summary="Conditional update", openapi_extra=FHIR_BODY)
async def conditional_update(
    resource_type: str, request: Request, access: Access = Depends(get_access)
) -> Response:
    check_type(resource_type)
    body = await read_json_body(request)
    return await _run_sync(request, _conditional_update, request, resource_type, body, access)


def _conditional_update(
    request: Request, resource_type: str, body: Any, access: Access
) -> Response:
    st = _state(request)
    query = urllib.parse.urlencode(_params(request))
    if not query:
        raise BadRequest("PUT to a type needs search parameters (conditional update)")
    outcome = access.svc.conditional_update(
        resource_type, query, body, if_match=parse_etag(request.headers.get("if-match"))
    )
    return resource_response(
        outcome.resource, outcome.status, request=request, base_url=st.base_url, location=True
    )


@router.delete("/{resource_type}", summary="Conditional delete")
def conditional_delete(
    resource_type: str, request: Request, access: Access = Depends(get_access)
) -> Response:
    check_type(resource_type)
    query = urllib.parse.urlencode(_params(request))
    if not query:
        raise BadRequest("DELETE on a type needs search parameters (conditional delete)")
    outcome = access.svc.conditional_delete(resource_type, query)
    return Response(status_code=outcome.status)


@router.get("/{resource_type}/_history", summary="Type history")
def type_history(
    resource_type: str, request: Request, access: Access = Depends(get_access)
) -> Response:
    st = _state(request)
    check_type(resource_type)
    _refuse_query(request, "History", HISTORY_PARAMS)
    params = _params(request)
    since = since_param(params)
    entries = access.store.history(resource_type, None, since=since)
    return FhirJSONResponse(
        history_bundle(
            entries,
            params,
            base_url=st.base_url,
            path=f"{resource_type}/_history",
            paging=st.paging,
        )
    )


@router.post(
    "/{resource_type}/_search", summary="Search by POST (form body)", openapi_extra=FORM_BODY
)
async def search_post(
    resource_type: str, request: Request, access: Access = Depends(get_access)
) -> Response:
    st = _state(request)
    check_type(resource_type)
    params = _params(request) + await read_form(request)
    bundle = search_bundle(
        access.svc,
        resource_type,
        params,
        base_url=st.base_url,
        paging=st.paging,
        lenient=_lenient(request),
    )
    access.audit_search(resource_type, urllib.parse.urlencode(params), bundle)
    return FhirJSONResponse(bundle)


@router.get("/{resource_type}/{resource_id}", summary="Read (or a type operation)")
async def read(
    resource_type: str, resource_id: str, request: Request, access: Access = Depends(get_access)
) -> Response:
    if resource_id.startswith("$"):
        check_type(resource_type)
        return await _run_sync(
            request, run_operation, request, access, resource_id[1:], resource_type, None, None
        )
    if access.store.memory_reads:
        return _read(request, resource_type, resource_id, access)  # no worker-thread hop
    return await _run_sync(request, _read, request, resource_type, resource_id, access)


def _read(request: Request, resource_type: str, resource_id: str, access: Access) -> Response:
    st = _state(request)
    _refuse_query(request, "A read", ("_summary", "_elements"))
    resource = access.svc.read(resource_type, resource_id)
    access.audit("R", resource)
    etag = request.headers.get("if-none-match")
    if etag and parse_etag(etag) == resource["meta"]["versionId"]:
        return Response(status_code=304)
    summary = check_summary(request.query_params.get("_summary"))
    elements = parse_elements(request.query_params.getlist("_elements"), resource_type)
    if summary == "count":
        raise BadRequest("_summary=count applies to searches, not reads", code="value")
    resource = subset(resource, summary=summary, elements=elements)
    return resource_response(resource, 200, request=request, base_url=st.base_url)


@router.post(
    "/{resource_type}/{resource_id}",
    summary="A type operation",
    openapi_extra=OPTIONAL_FHIR_BODY,
)
async def type_operation(
    resource_type: str, resource_id: str, request: Request, access: Access = Depends(get_access)
) -> Response:
    check_type(resource_type)
    if not resource_id.startswith("$"):
        error = MethodNotAllowed(
            f"POST to {resource_type}/{resource_id} is not allowed: use PUT to update "
            "or PATCH to patch"
        )
        error.allow = ["GET", "PUT", "PATCH", "DELETE"]  # type: ignore[attr-defined]
        raise error
    body = await read_json_body(request) if await _has_body(request) else None
    return await _run_sync(
        request, run_operation, request, access, resource_id[1:], resource_type, None, body
    )


@router.put(
    "/{resource_type}/{resource_id}",
    summary="Update (create with a client id)",
    openapi_extra=FHIR_BODY,
)
async def update(
    resource_type: str, resource_id: str, request: Request, access: Access = Depends(get_access)
) -> Response:
    check_type(resource_type)
    check_id(resource_id)
    _refuse_query(request, "An update")
    body = await read_json_body(request)
    return await _run_sync(request, _update, request, resource_type, resource_id, body, access)


def _update(
    request: Request, resource_type: str, resource_id: str, body: Any, access: Access
) -> Response:
    st = _state(request)
    if isinstance(body, dict) and "id" not in body:
        raise BadRequest(
            "An update body must carry the resource id (FHIR R4 http.html#update)",
            expression=[f"{resource_type}.id"],
        )
    outcome = access.svc.update(resource_type, resource_id, body, if_match=_if_match(request))
    return resource_response(
        outcome.resource,
        outcome.status,
        request=request,
        base_url=st.base_url,
        location=outcome.status == 201,
    )


@router.delete("/{resource_type}/{resource_id}", summary="Delete")
def delete(
    resource_type: str, resource_id: str, request: Request, access: Access = Depends(get_access)
) -> Response:
    st = _state(request)
    check_type(resource_type)
    check_id(resource_id)
    _refuse_query(request, "A delete", ("_cascade",))
    if_match = _if_match(request)
    cascade = request.query_params.get("_cascade")
    if cascade is not None and cascade != "delete":
        raise BadRequest(f"_cascade takes 'delete', not {cascade[:40]!r}", code="value")
    if cascade and not st.settings.allow_cascading_deletes:
        raise BadRequest(
            "Cascading deletes are disabled on this server (FHIRCARE_ALLOW_CASCADING_DELETES)",
            code="not-supported",
        )
    access.svc.delete(
        resource_type,
        resource_id,
        if_match=if_match,
        cascade=bool(cascade),
    )
    return FhirJSONResponse(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": f"Deleted {resource_type}/{resource_id}",
                }
            ],
        },
        status_code=200,
    )


@router.patch("/{resource_type}", summary="Conditional patch", openapi_extra=PATCH_BODY)
async def conditional_patch(
    resource_type: str, request: Request, access: Access = Depends(get_access)
) -> Response:
    check_type(resource_type)
    query = urllib.parse.urlencode(_params(request))
    if not query:
        raise BadRequest("PATCH on a type needs search parameters (conditional patch)")
    patch = await _read_patch(request)
    return await _run_sync(request, _patch, request, resource_type, None, query, patch, access)


@router.patch(
    "/{resource_type}/{resource_id}",
    summary="Patch (JSON Patch, FHIRPath Patch or JSON Merge Patch)",
    openapi_extra=PATCH_BODY,
)
async def patch(
    resource_type: str, resource_id: str, request: Request, access: Access = Depends(get_access)
) -> Response:
    check_type(resource_type)
    check_id(resource_id)
    _refuse_query(request, "A patch")
    patch = await _read_patch(request)
    return await _run_sync(
        request, _patch, request, resource_type, resource_id, None, patch, access
    )


async def _read_patch(request: Request) -> Any:
    ctype = check_json_content_type(request, also=(JSON_PATCH, MERGE_PATCH))
    body = await read_json_body(request)
    return patch_of(ctype, body)


def _patch(
    request: Request,
    resource_type: str,
    resource_id: str | None,
    query: str | None,
    patch: Any,
    access: Access,
) -> Response:
    st = _state(request)
    if_match = _if_match(request)
    if resource_id is None:
        assert query is not None
        resource_id = access.svc.conditional_patch_target(resource_type, query)
    outcome = access.svc.patch(resource_type, resource_id, patch, if_match=if_match)
    return resource_response(outcome.resource, 200, request=request, base_url=st.base_url)


@router.get("/{resource_type}/{resource_id}/_history", summary="Instance history")
def instance_history(
    resource_type: str, resource_id: str, request: Request, access: Access = Depends(get_access)
) -> Response:
    st = _state(request)
    check_type(resource_type)
    check_id(resource_id)
    _refuse_query(request, "History", ("_count", "_offset"))
    entries = access.store.history(resource_type, resource_id)
    return FhirJSONResponse(
        history_bundle(
            entries,
            _params(request),
            base_url=st.base_url,
            path=f"{resource_type}/{resource_id}/_history",
            paging=st.paging,
        )
    )


@router.get("/{resource_type}/{resource_id}/_history/{version_id}", summary="Version read")
def vread(
    resource_type: str,
    resource_id: str,
    version_id: str,
    request: Request,
    access: Access = Depends(get_access),
) -> Response:
    st = _state(request)
    _refuse_query(request, "A version read")
    resource = access.svc.vread(resource_type, resource_id, version_id)
    access.audit("R", resource)
    return resource_response(resource, 200, request=request, base_url=st.base_url)


@router.get("/{resource_type}/{resource_id}/{operation}", summary="Instance operation (GET)")
def instance_operation_get(
    resource_type: str,
    resource_id: str,
    operation: str,
    request: Request,
    access: Access = Depends(get_access),
) -> Response:
    if not operation.startswith("$"):
        raise NotFound(f"Unknown path {resource_type}/{resource_id}/{operation}")
    check_type(resource_type)
    check_id(resource_id)
    return run_operation(request, access, operation[1:], resource_type, resource_id, None)


@router.post(
    "/{resource_type}/{resource_id}/{operation}",
    summary="Instance operation",
    openapi_extra=OPTIONAL_FHIR_BODY,
)
async def instance_operation(
    resource_type: str,
    resource_id: str,
    operation: str,
    request: Request,
    access: Access = Depends(get_access),
) -> Response:
    if not operation.startswith("$"):
        raise NotFound(f"Unknown path {resource_type}/{resource_id}/{operation}")
    check_type(resource_type)
    check_id(resource_id)
    body = await read_json_body(request) if await _has_body(request) else None
    return await _run_sync(
        request, run_operation, request, access, operation[1:], resource_type, resource_id, body
    )


async def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return request.headers.get("transfer-encoding", "").lower() == "chunked"


async def _run_sync(request: Request, fn: Any, *args: Any) -> Response:
    """Run blocking store work in a worker thread (keeps the event loop free)."""
    return await run_blocking(fn, *args)

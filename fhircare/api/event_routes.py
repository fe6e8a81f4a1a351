"""Event intake over HTTP: HL7 v2 (`POST /hl7v2`) and the HAPI Subscription webhook."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fhircare.api.access import Access, access_for
from fhircare.api.http import (
    ERROR_RESPONSES,
    FHIR_BODY,
    FHIR_RESPONSES,
    FhirJSONResponse,
    read_json_body,
)
from fhircare.fhir.errors import BadRequest, PayloadTooLarge, Unauthorized
from fhircare.services.background import sync_cycle
from fhircare.services.intake import receive_remote

router = APIRouter(tags=["Events"])

HL7_TYPES = (
    "x-application/hl7-v2+er7",
    "application/hl7-v2",
    "text/plain",
    "application/edi-hl7",
    "application/octet-stream",
    "",
)

HL7_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "x-application/hl7-v2+er7": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}


def _syncs_with_remote(state: object) -> bool:
    settings = state.settings  # type: ignore[attr-defined]
    return bool(settings.hapi_url) and settings.store == "embedded"


def _check_secret(request: Request, secret: str | None, header: str, what: str) -> Access | None:
    """The shared secret when one is configured; else, under SMART, a system-level token
    (its Access: what it delivers is written through the access gate with its scopes)."""
    if not secret:
        if request.app.state.settings.auth == "smart":
            access = access_for(request)
            access.require_system(what)
            return access
        return None
    given = request.headers.get(header, "")
    if given.lower().startswith("bearer "):
        given = given[7:]
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise Unauthorized(f"A valid {header} header is required")
    return None


@router.post(
    "/hl7v2",
    summary="HL7 v2 ADT message (ER7 body); answers with an HL7 ACK",
    response_class=Response,
    responses={
        200: {
            "description": "The HL7 ACK (MSA-1 AA, AE or AR)",
            "content": {"x-application/hl7-v2+er7": {"schema": {"type": "string"}}},
        },
        **ERROR_RESPONSES,
    },
    openapi_extra=HL7_BODY,
)
async def hl7v2(request: Request) -> Response:
    st = request.app.state
    settings = st.settings
    intake = st.hl7  # the shared secret (or no auth): the intake acts as the server
    if settings.hl7_secret:
        _check_secret(request, settings.hl7_secret, "X-Fhircare-Secret", "HL7 v2 intake")
    elif settings.auth == "smart":
        caller = access_for(request)
        caller.require_system("HL7 v2 intake")
        intake = intake.scoped(caller.bundles)  # writes only what the token's scopes allow
    limit = settings.max_body_bytes
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLarge(f"The message exceeds the limit of {limit} bytes")
    ack = await run_in_threadpool(intake.handle, raw)
    return Response(ack, media_type="x-application/hl7-v2+er7; charset=utf-8")


@router.put(
    "/events/hapi/{resource_type}/{resource_id}",
    summary="Subscription rest-hook delivery (payload = the resource)",
    response_class=FhirJSONResponse,
    responses=FHIR_RESPONSES,
    openapi_extra=FHIR_BODY,
)
async def rest_hook(resource_type: str, resource_id: str, request: Request) -> FhirJSONResponse:
    st = request.app.state
    caller = _check_secret(request, st.settings.webhook_secret, "Authorization", "The webhook")
    body = await read_json_body(request)
    if not isinstance(body, dict) or (body.get("resourceType"), body.get("id")) != (
        resource_type,
        resource_id,
    ):
        raise BadRequest(f"The body is not {resource_type}/{resource_id}")
    if _syncs_with_remote(st):
        # Pull from the server that notified us: the patient's other resources arrive with
        # the Encounter, so the discharge is reconciled on complete data, then pushed back.
        version = (body.get("meta") or {}).get("versionId")
        notified = (resource_type, resource_id, version if isinstance(version, str) else None)
        counts = await run_in_threadpool(sync_cycle, st.container, notified)
        summary = f"{counts['pulled']} pulled, {counts['discharges']} discharges processed"
    else:
        svc = caller.svc if caller is not None else st.svc  # the secret: the server's own
        written = await run_in_threadpool(receive_remote, svc, body)
        summary = f"{len(written)} written"
    return FhirJSONResponse(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": f"Received {resource_type}/{resource_id}; {summary}",
                }
            ],
        }
    )


@router.post(
    "/events/hapi",
    summary="Subscription rest-hook ping (no payload)",
    response_class=FhirJSONResponse,
    responses=FHIR_RESPONSES,
)
async def rest_hook_ping(request: Request) -> FhirJSONResponse:
    st = request.app.state
    _check_secret(request, st.settings.webhook_secret, "Authorization", "The webhook")
    if _syncs_with_remote(st):
        await run_in_threadpool(sync_cycle, st.container)
    return FhirJSONResponse(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": "Notification received; changes pulled",
                }
            ],
        }
    )

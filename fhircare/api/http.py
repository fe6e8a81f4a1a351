"""HTTP helpers for FHIR endpoints: body reading with limits, responses, headers."""

from __future__ import annotations

import urllib.parse
from contextvars import ContextVar
from email.utils import format_datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from fhircare.fhir import jsonio
from fhircare.fhir.datetimes import parse_datetime
from fhircare.fhir.errors import BadRequest, FhirError, PayloadTooLarge, UnsupportedMediaType

FHIR_JSON = "application/fhir+json"
JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")
XML_TYPES = ("application/fhir+xml", "application/xml", "application/xml+fhir", "text/xml")

# How the current request wants its FHIR JSON: media type and indentation (set by
# `negotiate`, read when a response renders; contextvars follow the request into threads).
RESPONSE_MEDIA_TYPE: ContextVar[str] = ContextVar("fhir_media_type", default=FHIR_JSON)
RESPONSE_PRETTY: ContextVar[bool] = ContextVar("fhir_pretty", default=False)


class NotAcceptable(FhirError):
    """406: the client accepts no format this server produces."""

    status = 406
    code = "not-supported"


# ---- OpenAPI documentation of FHIR exchanges (what schemathesis and clients rely on) --------

RESOURCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
}
OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {"severity": {"type": "string"}, "code": {"type": "string"}},
            },
        },
    },
}
# Every error is an OperationOutcome; this also replaces FastAPI's default 422 document
# (request validation errors are answered 400 with an OperationOutcome).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "OperationOutcome: the request was refused",
        "content": {"application/fhir+json": {"schema": OUTCOME_SCHEMA}},
    },
    503: {
        "description": "OperationOutcome: the request took longer than FHIRCARE_REQUEST_TIMEOUT",
        "content": {"application/fhir+json": {"schema": OUTCOME_SCHEMA}},
    },
}
FHIR_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A FHIR resource (Bundle, OperationOutcome, the resource read...)",
        "content": {"application/fhir+json": {"schema": RESOURCE_SCHEMA}},
    },
    201: {
        "description": "Created: the resource (or a Bundle of what an operation wrote)",
        "content": {"application/fhir+json": {"schema": RESOURCE_SCHEMA}},
    },
    204: {"description": "No content (a conditional delete that matched nothing)"},
    304: {"description": "Not modified (If-None-Match matched the current version)"},
    **ERROR_RESPONSES,
}
FHIR_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/fhir+json": {"schema": RESOURCE_SCHEMA}},
    }
}
OPTIONAL_FHIR_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/fhir+json": {"schema": RESOURCE_SCHEMA}},
    }
}
PATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json-patch+json": {
                "schema": {"type": "array", "items": {"type": "object"}}
            },
            "application/fhir+json": {"schema": RESOURCE_SCHEMA},
            "application/merge-patch+json": {"schema": {"type": "object"}},
        },
    }
}
FORM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        },
    }
}


class FhirJSONResponse(JSONResponse):
    """FHIR JSON in the media type and layout (`_pretty`) the request negotiated."""

    media_type = FHIR_JSON

    def __init__(self, content: Any, status_code: int = 200, **kwargs: Any) -> None:
        kwargs.setdefault("media_type", RESPONSE_MEDIA_TYPE.get())
        super().__init__(content, status_code, **kwargs)

    def render(self, content: Any) -> bytes:
        if RESPONSE_PRETTY.get():
            return jsonio.dumps_pretty(content)
        return jsonio.dumps(content)


# ---- content negotiation (FHIR R4 http.html#mime-type) --------------------------------------

# fhir.resources can write XML only through its R4B models, which change instants
# ('...715Z' -> '...715000Z'), rewrite narrative XHTML and fail on some R4 examples: it does
# not round-trip R4, so XML is refused (406/415) instead of being served wrong.
_FORMAT_ALIASES = {
    "json": FHIR_JSON,
    "application/json": "application/json",
    "application/fhir+json": FHIR_JSON,
    "application/json+fhir": FHIR_JSON,
}


def negotiate(query: list[tuple[str, str]], accept: str | None) -> tuple[str, bool]:
    """The response media type and `_pretty` flag for a request; NotAcceptable (406) when the
    client asks only for a format this server does not write (XML, HTML...)."""
    pretty = next((v for k, v in reversed(query) if k == "_pretty"), "false")
    if pretty not in ("true", "false"):
        raise BadRequest(f"_pretty must be true or false, not {pretty[:40]!r}", code="value")
    fmt = next((v for k, v in reversed(query) if k == "_format"), None)
    if fmt is not None:
        media = _FORMAT_ALIASES.get(fmt.split(";")[0].strip().lower())
        if media is None:
            raise NotAcceptable(
                f"_format {fmt[:60]!r} is not served: this server writes FHIR JSON only "
                "(_format=json or application/fhir+json); XML is not supported"
            )
        return media, pretty == "true"
    return _media_from_accept(accept), pretty == "true"


def _media_from_accept(accept: str | None) -> str:
    if not accept or not accept.strip():
        return FHIR_JSON
    best: tuple[float, str] | None = None
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        q = 1.0
        for f in fields[1:]:
            if f.lower().startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        served = {
            FHIR_JSON: FHIR_JSON,
            "application/json+fhir": FHIR_JSON,
            "application/json": "application/json",
            "*/*": FHIR_JSON,
            "application/*": FHIR_JSON,
        }.get(media)
        if served and (best is None or q > best[0]):
            best = (q, served)
    if best is None:
        raise NotAcceptable(
            f"Accept {accept[:80]!r} names no format this server writes: it serves "
            "application/fhir+json (XML is not supported)"
        )
    return best[1]


async def read_json_body(request: Request) -> Any:
    """The request body as JSON, enforcing the size limit, content type and nesting depth."""
    limit: int = request.app.state.settings.max_body_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"The body is {length} bytes; the limit is {limit}")
    check_json_content_type(request)
    raw = await read_body(request)
    if not raw.strip():
        raise BadRequest("The request has no body")
    return jsonio.parse_json(raw)


def check_json_content_type(request: Request, also: tuple[str, ...] = ()) -> str:
    """The request's JSON media type; 415 for XML or any other non-JSON body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in XML_TYPES or ctype.endswith("+xml"):
        raise UnsupportedMediaType(
            f"Content-Type {ctype!r}: XML is not supported, send application/fhir+json"
        )
    if ctype and ctype not in JSON_TYPES and ctype not in also and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type {ctype!r} is not supported: send application/fhir+json"
        )
    return ctype


async def read_body(request: Request) -> bytes:
    """The raw request body, refused with 413 beyond FHIRCARE_MAX_BODY_BYTES."""
    limit: int = request.app.state.settings.max_body_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"The body is {length} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request) -> list[tuple[str, str]]:
    """An application/x-www-form-urlencoded body as (name, value) pairs (none without a
    body); 415 for another content type, 400 for a body that is not UTF-8."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await read_body(request)
    if not raw.strip():
        return []
    if ctype != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(
            f"Content-Type {ctype!r} is not supported here: send a form (urlencoded)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("The body is not UTF-8") from exc
    return urllib.parse.parse_qsl(text, keep_blank_values=True)


def prefer_return(request: Request) -> str:
    """'representation' (default), 'minimal' or 'OperationOutcome' from the Prefer header."""
    prefer = request.headers.get("prefer", "")
    for part in prefer.split(";"):
        part = part.strip()
        if part.startswith("return="):
            return part.split("=", 1)[1].strip().strip('"')
    return "representation"


def resource_response(
    resource: dict[str, Any] | None,
    status: int,
    *,
    request: Request,
    base_url: str,
    location: bool = False,
) -> Response:
    """A response for a resource write or read with ETag, Last-Modified and Location."""
    headers: dict[str, str] = {}
    if resource is not None and "meta" in resource:
        vid = resource["meta"].get("versionId")
        if vid:
            headers["ETag"] = f'W/"{vid}"'
        lu = resource["meta"].get("lastUpdated")
        if lu:
            headers["Last-Modified"] = format_datetime(
                parse_datetime(lu), usegmt=True
            )
        versioned = f"{base_url}/{resource['resourceType']}/{resource['id']}/_history/{vid}"
        if location and vid:
            headers["Location"] = versioned
        if vid and request.method in ("POST", "PUT", "PATCH"):
            headers["Content-Location"] = versioned  # the version the write produced
    if request.method in ("POST", "PUT", "PATCH"):
        mode = prefer_return(request)
        if mode == "minimal":
            return Response(status_code=status, headers=headers)
        if mode == "OperationOutcome":
            return FhirJSONResponse(
                {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {
                            "severity": "information",
                            "code": "informational",
                            "diagnostics": f"{request.method} succeeded with status {status}",
                        }
                    ],
                },
                status_code=status,
                headers=headers,
            )
    return FhirJSONResponse(resource, status_code=status, headers=headers)

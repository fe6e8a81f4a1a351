"""HTTP helpers for FHIR endpoints: body reading with limits, responses, headers."""

from __future__ import annotations

import json
import re
import urllib.parse
from email.utils import format_datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from fhircare.fhir.datetimes import parse_datetime
from fhircare.fhir.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

FHIR_JSON = "application/fhir+json"
JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")
MAX_DEPTH = 64


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
    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def read_json_body(request: Request) -> Any:
    """The request body as JSON, enforcing the size limit, content type and nesting depth."""
    limit: int = request.app.state.settings.max_body_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"The body is {length} bytes; the limit is {limit}")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in JSON_TYPES and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type {ctype!r} is not supported: send application/fhir+json"
        )
    raw = await read_body(request)
    if not raw.strip():
        raise BadRequest("The request has no body")
    return parse_json(raw)


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


def parse_json(raw: bytes) -> Any:
    """Strict JSON (RFC 8259): UTF-8 (one leading BOM tolerated), no NaN/Infinity, no
    duplicate keys, no lone surrogates, nesting at most MAX_DEPTH. BadRequest otherwise."""
    try:
        text = raw.decode("utf-8-sig")
        data = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as exc:
        raise BadRequest("The body is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"Malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise BadRequest("The JSON is nested too deeply") from exc
    if _depth(data) > MAX_DEPTH:
        raise BadRequest(f"The JSON is nested deeper than {MAX_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(text):  # a \ud800-\udfff escape: is it half a pair?
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest("The JSON holds an unpaired surrogate (\\uD800-\\uDFFF)") from exc
    return data


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _no_constant(name: str) -> Any:
    raise BadRequest(f"Malformed JSON: {name} is not a JSON value")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise BadRequest(f"Malformed JSON: the key {dup!r} appears twice in one object")
    return obj


def _depth(node: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(node, dict):
        return max((_depth(v, level + 1) for v in node.values()), default=level + 1)
    if isinstance(node, list):
        return max((_depth(v, level + 1) for v in node), default=level + 1)
    return level


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
        if location and vid:
            headers["Location"] = (
                f"{base_url}/{resource['resourceType']}/{resource['id']}/_history/{vid}"
            )
            headers["Content-Location"] = headers["Location"]
    if request.method in ("POST", "PUT"):
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

"""HTTP helpers for FHIR endpoints: body reading with limits, responses, headers."""

from __future__ import annotations

import json
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from fhircare.fhir.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

FHIR_JSON = "application/fhir+json"
JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")
MAX_DEPTH = 64


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
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise BadRequest("The request has no body")
    try:
        text = raw.decode("utf-8-sig")
        data = json.loads(text)
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
    return data


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
                datetime.fromisoformat(lu.replace("Z", "+00:00")), usegmt=True
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

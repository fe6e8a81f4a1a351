"""ASGI middleware of the FHIR facade: trailing slashes, content negotiation, CORS.

* `/fhir/`, `/fhir/metadata/`, `/fhir/Patient/x/` are served as their slash-less forms
  directly (no 307: a redirect drops `Authorization` behind some proxies, and client-py and
  httpx build URLs with the slash).
* `_format`, `_pretty` and `Accept` are negotiated before routing: FHIR JSON or a 406
  OperationOutcome (see `fhircare.api.http.negotiate`).
* Read, search and create are dispatched directly (`fhircare.api.fastpath`), without
  FastAPI's route search.
* CORS (`FHIRCARE_CORS_ORIGINS`) through Starlette's `CORSMiddleware`, with the headers
  FHIR clients send and read.
* The request timeout is the observability layer's (`fhircare.api.observe`).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from fhircare.api.fastpath import FhirFastPath
from fhircare.api.http import RESPONSE_MEDIA_TYPE, RESPONSE_PRETTY, FhirJSONResponse, negotiate
from fhircare.config import Settings
from fhircare.fhir.errors import FhirError

FHIR_PREFIX = "/fhir"
CORS_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CORS_REQUEST_HEADERS = [
    "Accept",
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-Modified-Since",
    "If-None-Exist",
    "If-None-Match",
    "Prefer",
    "X-Requested-With",
]
CORS_EXPOSED_HEADERS = ["ETag", "Location", "Content-Location", "Last-Modified"]


BULK_FILES = FHIR_PREFIX + "/bulk/"


class FhirEdgeMiddleware:
    """Normalise `/fhir` paths and negotiate the response format of FHIR requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_fhir(scope["path"]):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if len(path) > len(FHIR_PREFIX) and path.endswith("/"):
            stripped = path.rstrip("/") or FHIR_PREFIX
            scope = {**scope, "path": stripped, "raw_path": stripped.encode("latin-1")}
        query = urllib.parse.parse_qsl(
            scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
        )
        accept = next(
            (v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"accept"), None
        )
        if path.startswith(BULK_FILES):  # ndjson files and the manifest: not FHIR JSON
            await self.app(scope, receive, send)
            return
        try:
            media, pretty = negotiate(query, accept)
        except FhirError as exc:
            response = FhirJSONResponse(exc.outcome(), status_code=exc.status)
            await response(scope, receive, send)
            return
        media_token = RESPONSE_MEDIA_TYPE.set(media)
        pretty_token = RESPONSE_PRETTY.set(pretty)
        try:
            await self.app(scope, receive, send)
        finally:
            RESPONSE_MEDIA_TYPE.reset(media_token)
            RESPONSE_PRETTY.reset(pretty_token)


def _is_fhir(path: str) -> bool:
    return path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/")


def cors_origins(settings: Settings) -> list[str]:
    """The allowed origins of `FHIRCARE_CORS_ORIGINS` (comma-separated; empty: CORS off)."""
    return [o.strip().rstrip("/") for o in (settings.cors_origins or "").split(",") if o.strip()]


def install(app: FastAPI, settings: Settings) -> None:
    """Add the FHIR edge middleware (with the fast path of the hot routes inside it), and
    CORS outside it when origins are configured."""
    app.add_middleware(FhirFastPath)
    app.add_middleware(FhirEdgeMiddleware)
    origins = cors_origins(settings)
    if origins:
        options: dict[str, Any] = {
            "allow_origins": origins,
            "allow_methods": CORS_METHODS,
            "allow_headers": CORS_REQUEST_HEADERS,
            "expose_headers": CORS_EXPOSED_HEADERS,
            "allow_credentials": settings.cors_credentials,
            "max_age": 600,
        }
        app.add_middleware(CORSMiddleware, **options)


def allowed_methods(app: Any, scope: Scope) -> list[str]:
    """The methods some route takes on this request's path (for a 405's `Allow`)."""
    from starlette.routing import Match

    routes = getattr(app.router, "routes", [])
    return [
        method
        for method in CORS_METHODS
        if method != "OPTIONS"
        and any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    ]

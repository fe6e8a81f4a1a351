"""ASGI middleware: a request id, one access line and the HTTP metrics per request, and the
one place an unexpected exception is logged (with its traceback) and answered 500.

The access line names the route template (`/fhir/{resource_type}/{resource_id}`), never
the path or query string, which carry ids and search values.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhircare.fhir.errors import outcome
from fhircare.observability import metrics
from fhircare.observability.logs import request_id

access_log = logging.getLogger("fhircare.access")
error_log = logging.getLogger("fhircare.api")

REQUEST_ID_HEADER = "x-request-id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _incoming_id(scope: Scope) -> str:
    for name, value in scope.get("headers") or []:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _SAFE_ID.match(text):
                return text
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The matched route's template; a mounted app (the docs' static files) by its mount."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    mount = scope.get("root_path") or ""
    if mount and mount != (scope.get("app_root_path") or ""):
        return f"{mount}/{{path}}"
    return "unmatched"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope)
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER.encode(), rid.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            error_log.error(
                "unexpected %s on %s %s",
                type(exc).__name__,
                scope.get("method"),
                route_template(scope),
                exc_info=exc,
            )
            if response_started:
                raise
            status = 500
            await _internal_error(send_with_id, type(exc).__name__)
        finally:
            seconds = time.perf_counter() - started
            method, route = scope.get("method", "-"), route_template(scope)
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_LATENCY.labels(method, route).observe(seconds)
            access_log.info(
                "%s %s %d %.1f ms",
                method,
                route,
                status,
                seconds * 1000,
                extra={"method": method, "route": route, "status": status, "ms": seconds * 1000},
            )
            request_id.reset(token)


async def _internal_error(send: Send, name: str) -> None:
    body: Any = outcome("fatal", "exception", f"Internal error ({name})")
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/fhir+json"),
                (b"content-length", str(len(raw)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})

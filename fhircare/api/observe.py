"""ASGI middleware: a request id, one access line and the HTTP metrics per request, the
request timeout, and the one place an unexpected exception is logged (with its traceback)
and answered 500.

The access line names the route template (`/fhir/{resource_type}/{resource_id}`), never
the path or query string, which carry ids and search values.

`FHIRCARE_REQUEST_TIMEOUT`: a request still unanswered after it is answered 503 with an
OperationOutcome (`asyncio.timeout` cancels the request's own task; a response already
started cannot be replaced). It is this layer's, not one of its own: every layer of the
stack costs each request a coroutine and a wrapped `send`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhircare.api.http import FhirJSONResponse
from fhircare.fhir.errors import outcome
from fhircare.observability import metrics
from fhircare.observability.logs import request_id

access_log = logging.getLogger("fhircare.access")
error_log = logging.getLogger("fhircare.api")

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_NAME = REQUEST_ID_HEADER.encode()
WORKER_HEADER = b"x-fhircare-worker"
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
    def __init__(
        self, app: ASGIApp, timeout: float | None = None, worker: int | None = None
    ) -> None:
        self.app = app
        self.timeout = timeout
        # `serve --workers N`: every response names the worker process that answered it
        self._worker = () if worker is None else ((WORKER_HEADER, str(worker).encode()),)
        # metric children by label values: `labels()` takes a lock and builds a key per call
        self._counted: dict[tuple[str, str, str], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

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
                message["headers"] = [
                    *message.get("headers", ()),
                    (_REQUEST_ID_NAME, rid.encode()),
                    *self._worker,
                ]
            await send(message)

        try:
            async with asyncio.timeout(self.timeout):
                await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and not response_started:
                await _timed_out(scope, receive, send_with_id, self.timeout)
                return
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
            self._count(method, route, status, seconds)
            access_log.info(
                "%s %s %d %.1f ms",
                method,
                route,
                status,
                seconds * 1000,
                extra={"method": method, "route": route, "status": status, "ms": seconds * 1000},
            )
            request_id.reset(token)

    def _count(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        counted = self._counted.get(key)
        if counted is None:
            counted = self._counted[key] = metrics.HTTP_REQUESTS.labels(*key)
        counted.inc()
        timed = self._timed.get((method, route))
        if timed is None:
            timed = self._timed[(method, route)] = metrics.HTTP_LATENCY.labels(method, route)
        timed.observe(seconds)


async def _timed_out(scope: Scope, receive: Receive, send: Send, seconds: float | None) -> None:
    response = FhirJSONResponse(
        outcome(
            "error",
            "timeout",
            f"The request took longer than {seconds:g} s; "
            "a write may still complete: retry it idempotently (If-Match, "
            "If-None-Exist or PUT with an id)",
        ),
        status_code=503,
    )
    await response(scope, receive, send)


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

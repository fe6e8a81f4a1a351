"""Direct dispatch of the hottest FHIR interactions: read (`GET /fhir/{type}/{id}`), search
(`GET /fhir/{type}`) and create (`POST /fhir/{type}`).

FastAPI finds a route by trying every route registered before it (some sixty ahead of the
FHIR facade's) and then solves each route's dependencies: about a third of the CPU of a read.
For a path of exactly these shapes, with a known resource type and a valid FHIR id, the
route is known without trying (no other route can match it: `tests/unit/test_fastpath.py`
checks every registered route), so this middleware calls the same endpoint with the same
`Access` and answers errors with the app's own exception handlers. Anything else (another
shape or method, an unknown type, `$operations`, `_history`) goes through FastAPI's router.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from fhircare.api import fhir_routes
from fhircare.api.access import get_access
from fhircare.fhir import registry

PREFIX = "/fhir/"
ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
Endpoint = Callable[..., Awaitable[Response]]


def _route(endpoint: Endpoint) -> APIRoute:
    for route in fhir_routes.router.routes:
        if isinstance(route, APIRoute) and route.endpoint is endpoint:
            return route
    raise LookupError(endpoint.__name__)


READ = _route(fhir_routes.read)
SEARCH = _route(fhir_routes.search)
CREATE = _route(fhir_routes.create)
FAST_ROUTES = (READ, SEARCH, CREATE)


def fast_route(method: str, path: str) -> tuple[APIRoute, dict[str, str]] | None:
    """The route and path parameters of a request this module serves; None otherwise."""
    if not path.startswith(PREFIX):
        return None
    parts = path[len(PREFIX) :].split("/")
    if not registry.is_resource_type(parts[0]):
        return None
    if len(parts) == 1:
        if method == "GET":
            return SEARCH, {"resource_type": parts[0]}
        if method == "POST":
            return CREATE, {"resource_type": parts[0]}
    elif len(parts) == 2 and method == "GET" and ID.fullmatch(parts[1]):
        return READ, {"resource_type": parts[0], "resource_id": parts[1]}
    return None


class FhirFastPath:
    """Serve read, search and create without FastAPI's route search (see the module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = None
        if scope["type"] == "http" and not scope.get("root_path"):
            found = fast_route(scope["method"], scope["path"])
        if found is None:
            await self.app(scope, receive, send)
            return
        route, params = found
        # what Starlette's router records: the access log and metrics name the template
        scope.update(route=route, endpoint=route.endpoint, path_params=params)
        request = Request(scope, receive, send)
        try:
            access = await get_access(request)
            response = await route.endpoint(**params, request=request, access=access)
        except Exception as exc:
            handler = _handler(scope["app"], exc)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)


def _handler(app: Any, exc: Exception) -> Callable[..., Any] | None:
    """The app's exception handler for `exc` (by its class's MRO, as Starlette looks it up)."""
    handlers = getattr(app, "exception_handlers", {})
    for cls in type(exc).__mro__:
        if cls is Exception:  # the 500 handler's (ServerErrorMiddleware's), not this one's
            return None
        if cls in handlers:
            return handlers[cls]
    return None

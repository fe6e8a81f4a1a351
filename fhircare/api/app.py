"""The FastAPI application: FHIR facade, operations, event intake, care endpoints."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from fhircare import __version__
from fhircare.api.http import FhirJSONResponse
from fhircare.api.middleware import allowed_methods
from fhircare.api.observe import ObservabilityMiddleware
from fhircare.bootstrap import Container, build_container
from fhircare.config import Settings
from fhircare.fhir.errors import FhirError, Unauthorized, outcome
from fhircare.listener import start_mllp
from fhircare.security.tokens import www_authenticate
from fhircare.services.background import subscription_loop

log = logging.getLogger("fhircare.api")


def create_app(settings: Settings | None = None, container: Container | None = None) -> FastAPI:
    """Build the app; the container (store, services, registries) is made if not given."""
    settings = settings or Settings()
    owned = container is None
    container = container or build_container(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        jobs = list(container.background)
        if settings.subscribe_endpoint and settings.hapi_url and settings.leader:

            def report(state: str) -> None:
                app.state.subscription = state

            report("pending")
            jobs.append(subscription_loop(container, report))
        tasks = [asyncio.create_task(t()) for t in jobs]
        mllp = None
        try:
            if settings.mllp_port and settings.leader:
                host = settings.mllp_host or settings.host
                mllp = await start_mllp(
                    app.state.hl7, host, settings.mllp_port, allowed=settings.mllp_allowed
                )
                app.state.mllp_server = mllp
                log.info("MLLP listening on %s:%d (same store)", host, settings.mllp_port)
            yield
        finally:
            if mllp is not None:
                mllp.close()
                await mllp.wait_closed()
            for t in tasks:
                t.cancel()
            if owned:
                container.close()

    app = FastAPIOffline(  # /docs and /redoc with their assets served by fhircare itself
        title="fhircare",
        version=__version__,
        description="Care management on FHIR R4",
        lifespan=lifespan,
    )
    container.install(app)

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> FhirJSONResponse:
        headers = {}
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = www_authenticate(exc)
        if exc.status == 405:
            allow = getattr(exc, "allow", None) or allowed_methods(request.app, request.scope)
            headers["Allow"] = ", ".join(allow)
        return FhirJSONResponse(exc.outcome(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def request_error(_: Request, exc: RequestValidationError) -> FhirJSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return FhirJSONResponse(
            outcome("error", "invalid", f"Invalid request {where}: {first.get('msg', '')}"),
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> FhirJSONResponse:
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
        return FhirJSONResponse(
            outcome("error", code, str(exc.detail)), status_code=exc.status_code, headers=headers
        )

    # outermost: request id, access line, metrics, the request timeout, and the one handler
    # of unexpected errors
    worker = settings.worker_index if settings.workers > 1 else None
    app.add_middleware(ObservabilityMiddleware, timeout=settings.request_timeout, worker=worker)
    return app

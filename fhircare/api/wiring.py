"""Attach routers, the CapabilityStatement, access control, audit and intake to the app."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import FastAPI

from fhircare.api import (
    auth,
    bulk_routes,
    care_routes,
    event_routes,
    fhir_routes,
    middleware,
    ops_routes,
    webapp,
)
from fhircare.api.capability import CapabilityProvider
from fhircare.api.operation_routes import operation_router
from fhircare.services.audit import AuditRecorder
from fhircare.services.background import sweep_loop, sync_loop
from fhircare.services.intake import Hl7Intake

if TYPE_CHECKING:
    from fhircare.bootstrap import Container


def install(app: FastAPI, container: Container) -> None:
    settings = container.settings
    recorder = AuditRecorder(container.store) if settings.audit else None
    if recorder is not None:
        container.closers.append(recorder.close)
    app.state.audit = recorder
    # set either way: a missing State attribute costs an AttributeError on every request
    app.state.authenticate = auth.authenticator(settings) if settings.auth == "smart" else None
    app.state.capability = CapabilityProvider(
        app,
        base_url=container.base_url,
        operations=container.operations,
        search_registry=container.store.registry,
        security=auth.security_section(settings),
    )
    app.state.hl7 = Hl7Intake(container.bundles, default_tz=settings.default_tz)
    # with several workers (README: --workers) only the leader runs the loops
    sweeps = settings.sweep_interval > 0 and not (settings.hapi_url and settings.sync_interval > 0)
    if settings.leader and sweeps:
        container.background.append(sweep_loop(container))  # the sync loop sweeps otherwise
    syncs = settings.hapi_url and settings.sync_interval > 0 and settings.store == "embedded"
    if settings.leader and syncs:
        wake = asyncio.Event()
        app.state.sync_trigger = wake
        container.background.append(sync_loop(container, wake))
    app.include_router(ops_routes.router)
    app.include_router(auth.router)
    app.include_router(event_routes.router)
    app.include_router(care_routes.router)
    bulk_routes.install(app, container)  # /fhir/bulk/...: before the generic routes
    app.include_router(operation_router(container.operations))  # before the generic routes
    app.include_router(fhir_routes.router)
    webapp.install(app, settings)
    middleware.install(app, settings)

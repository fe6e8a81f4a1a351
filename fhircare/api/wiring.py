"""Attach routers, the CapabilityStatement and access control to the app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from fhircare.api import fhir_routes
from fhircare.api.capability import capability_statement

if TYPE_CHECKING:
    from fhircare.bootstrap import Container


def install(app: FastAPI, container: Container) -> None:
    app.state.capability = capability_statement(
        base_url=container.base_url, operations=container.operations
    )
    app.include_router(fhir_routes.router)

"""Register the domain modules' bus checks and handlers and the FHIR operations (once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhircare.bootstrap import Container


def register(container: Container) -> None:
    from fhircare.api import (
        bulk_routes,
        care_operations,
        generic_operations,
        review_operations,
    )
    from fhircare.care import assessment, goals, tasks
    from fhircare.transitions import discharge

    bus = container.bus
    assessment.register(bus)  # QuestionnaireResponse: validate; completed -> $extract
    tasks.register(bus)  # Task: refuse illegal transitions; side effects
    goals.register(bus)  # Observation: goal progress
    settings = container.settings
    discharge.register(  # Encounter finished or no longer; Patient deceased
        bus,
        care_manager=settings.care_manager,
        window_days=settings.followup_window_days,
    )
    if settings.hapi_url and settings.store == "embedded":
        from fhircare.remote import ids

        ids.register(bus)  # new ids HAPI accepts (no digits-only client ids)

    generic_operations.register(container.operations)
    care_operations.register(container.operations)
    review_operations.register(container.operations)
    bulk_routes.register(container.operations)  # $export (Bulk Data)

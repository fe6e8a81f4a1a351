"""Register the domain modules' bus handlers, checks and FHIR operations (called once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhircare.bootstrap import Container


def register(container: Container) -> None:
    from fhircare.api import generic_operations

    generic_operations.register(container.operations)

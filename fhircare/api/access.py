"""Per-request access control for the API edge.

`get_access` gives each request an `Access`: with `FHIRCARE_AUTH=none` it allows
everything (local use only); with `FHIRCARE_AUTH=smart` it holds the validated token's
context and enforces SMART scopes and the patient compartment (see fhircare.security).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request


class Access:
    """Allow-all access (FHIRCARE_AUTH=none); the SMART variant overrides each check."""

    patient: str | None = None

    def require(self, resource_type: str, interaction: str, resource: Any = None) -> None:
        """Raise Forbidden unless the interaction is allowed on the type (and resource)."""

    def search_restriction(self, resource_type: str) -> list[tuple[str, str]]:
        """Extra search parameters that confine a search to what the caller may see."""
        return []

    def filter_bundle(self, bundle: dict[str, Any]) -> None:
        """Drop entries (e.g. _include results) the caller may not see."""

    def filter_history(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return entries

    def check_bundle(self, bundle: Any) -> None:
        """Check every entry of a transaction/batch before anything runs."""

    def audit(self, action: str, resource: dict[str, Any] | None, outcome: str = "0") -> None:
        """Record an AuditEvent for a read or write of patient data."""
        recorder = getattr(self, "recorder", None)
        if recorder is not None and resource is not None:
            recorder.record(self, action, resource, outcome)


ALLOW_ALL = Access()


def get_access(request: Request) -> Access:
    """The Access for this request (FastAPI dependency)."""
    factory = getattr(request.app.state, "access_factory", None)
    return factory(request) if factory else ALLOW_ALL

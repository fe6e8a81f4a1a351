"""Build the remote FHIR client (and the HAPI-backed store) from Settings."""

from __future__ import annotations

import httpx

from fhircare.config import Settings
from fhircare.remote.client import FhirClient


def remote_auth(settings: Settings) -> httpx.Auth | None:
    """SMART backend-services auth from FHIRCARE_REMOTE_* when configured, else None."""
    if settings.remote_client_id and settings.remote_token_url and settings.remote_private_key:
        from fhircare.security.backend_auth import BackendServicesAuth, load_private_key

        return BackendServicesAuth(
            token_url=settings.remote_token_url,
            client_id=settings.remote_client_id,
            private_key=load_private_key(
                settings.remote_private_key.read_bytes(), settings.remote_alg
            ),
            kid=settings.remote_key_id or "fhircare",
            alg=settings.remote_alg,
            scope=settings.remote_scope,
        )
    return None


def remote_client(settings: Settings) -> FhirClient:
    """A client for FHIRCARE_HAPI_URL, authenticated as a SMART backend service if configured."""
    if not settings.hapi_url:
        raise ValueError("FHIRCARE_HAPI_URL is not set: no remote FHIR server to talk to")
    return FhirClient(settings.hapi_url, auth=remote_auth(settings), timeout=settings.hapi_timeout)


def remote_store(settings: Settings):  # noqa: ANN201 - RemoteStore, imported lazily
    from fhircare.store.remote import RemoteStore

    return RemoteStore(remote_client(settings))

"""The remote FHIR server: an httpx client with safe retries, and the sync engine."""

from fhircare.remote.client import (
    BadResponse,
    FhirClient,
    RemoteUnavailable,
    ServerError,
    TooManyRequests,
)
from fhircare.remote.retry import RetryPolicy

__all__ = [
    "BadResponse",
    "FhirClient",
    "RemoteUnavailable",
    "RetryPolicy",
    "ServerError",
    "TooManyRequests",
]

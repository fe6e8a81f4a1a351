"""SMART on FHIR for the resource server: tokens, scopes, patient compartment, the access
policy and the one access gate (`gate.GatedStore`), audit.

Nothing here imports FastAPI; only `backend_auth` imports httpx and only
``fhircare.remote`` may import that module (it is not re-exported here).
"""

from fhircare.security.compartment import (
    compartment_search_alternatives,
    compartment_search_params,
    in_compartment,
)
from fhircare.security.context import AuthContext
from fhircare.security.gate import GatedStore
from fhircare.security.policy import AccessPolicy, allowed, authorize
from fhircare.security.scopes import Scope, ScopeSet, check, parse_scope, required
from fhircare.security.tokens import JwksCache, TokenValidator, bearer_token

__all__ = [
    "AccessPolicy",
    "AuthContext",
    "GatedStore",
    "JwksCache",
    "Scope",
    "ScopeSet",
    "TokenValidator",
    "allowed",
    "authorize",
    "bearer_token",
    "check",
    "compartment_search_alternatives",
    "compartment_search_params",
    "in_compartment",
    "parse_scope",
    "required",
]

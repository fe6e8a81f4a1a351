"""SMART on FHIR at the edge: bearer tokens -> AuthContext (-> the access gate); discovery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from fastapi import APIRouter, Request

from fhircare.api.http import ERROR_RESPONSES, FhirJSONResponse
from fhircare.config import Settings
from fhircare.fhir.errors import NotFound
from fhircare.security.context import AuthContext
from fhircare.security.smart_config import capability_security, smart_configuration
from fhircare.security.tokens import JwksCache, TokenValidator, bearer_token

router = APIRouter(tags=["SMART"], responses=ERROR_RESPONSES)


def _fetch_jwks(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=5.0)
    response.raise_for_status()
    return response.json()


def build_validator(settings: Settings) -> TokenValidator:
    if not (settings.auth_jwks and settings.auth_issuer and settings.auth_audience):
        raise ValueError(
            "FHIRCARE_AUTH=smart needs FHIRCARE_AUTH_JWKS, FHIRCARE_AUTH_ISSUER and "
            "FHIRCARE_AUTH_AUDIENCE"
        )
    keys = JwksCache(settings.auth_jwks, fetch_jwks=_fetch_jwks)
    audiences = [a.strip() for a in settings.auth_audience.split(",") if a.strip()]
    return TokenValidator(issuer=settings.auth_issuer, audience=audiences, keys=keys)


def authenticator(settings: Settings) -> Callable[[Request], AuthContext]:
    """Verify the bearer token of a request and give its caller (401 when it fails)."""
    validator = build_validator(settings)

    def authenticate(request: Request) -> AuthContext:
        token = bearer_token(request.headers.get("authorization"))
        return AuthContext.from_claims(validator.validate(token))

    return authenticate


def security_section(settings: Settings) -> dict[str, Any] | None:
    if settings.auth != "smart":
        return None
    if settings.auth_token_url:
        return capability_security(
            token_url=settings.auth_token_url, authorize_url=settings.auth_authorize_url
        )
    return {
        "cors": True,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "description": "SMART on FHIR bearer tokens (JWT) are required",
    }


def _smart_doc(request: Request) -> FhirJSONResponse:
    settings: Settings = request.app.state.settings
    if settings.auth != "smart" or not settings.auth_token_url:
        raise NotFound("SMART on FHIR is not enabled on this server (FHIRCARE_AUTH=none)")
    doc = smart_configuration(
        token_url=settings.auth_token_url,
        authorize_url=settings.auth_authorize_url,
        issuer=settings.auth_issuer,
        jwks_uri=settings.auth_jwks
        if settings.auth_jwks and settings.auth_jwks.startswith("https://")
        else None,
    )
    return FhirJSONResponse(doc, media_type="application/json")


@router.get("/fhir/.well-known/smart-configuration", summary="SMART configuration")
def smart_config_fhir(request: Request) -> FhirJSONResponse:
    return _smart_doc(request)


@router.get("/.well-known/smart-configuration", summary="SMART configuration (root)")
def smart_config_root(request: Request) -> FhirJSONResponse:
    return _smart_doc(request)

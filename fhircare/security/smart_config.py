"""``/.well-known/smart-configuration`` and ``CapabilityStatement.rest.security``.

fhircare is a SMART resource server: it validates tokens and enforces scopes, while an
external authorization server (FHIRCARE_AUTH_TOKEN_URL, FHIRCARE_AUTH_AUTHORIZE_URL)
issues them. The documents below only advertise what that combination really supports:
no EHR launch (fhircare issues no launch contexts), standalone launch only when an
authorize URL is configured, Backend Services when the AS accepts asymmetric client
authentication.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
RESTFUL_SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"

# What fhircare itself enforces, whatever the authorization server.
RESOURCE_SERVER_CAPABILITIES = (
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
)
# Authorization-server capabilities an operator may declare (FHIRCARE_AUTH_CAPABILITIES).
_NEEDS_AUTHORIZE = {
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "context-standalone-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "sso-openid-connect",
}
AS_CAPABILITIES = frozenset(_NEEDS_AUTHORIZE | {"client-confidential-asymmetric"})
# EHR-launch and EHR-UI capabilities fhircare cannot honour.
UNSUPPORTED_CAPABILITIES = frozenset(
    {
        "launch-ehr",
        "context-ehr-patient",
        "context-ehr-encounter",
        "context-banner",
        "context-style",
        "context-passthrough-banner",
        "context-passthrough-style",
    }
)


def smart_capabilities(authorize_url: str | None, declared: Iterable[str] = ()) -> list[str]:
    """The SMART capabilities to advertise; ValueError for unknown or unsupported ones."""
    declared = set(declared)
    bad = declared & UNSUPPORTED_CAPABILITIES
    if bad:
        raise ValueError(f"fhircare does not support {sorted(bad)} (no EHR launch)")
    unknown = declared - AS_CAPABILITIES - set(RESOURCE_SERVER_CAPABILITIES) - {"launch-standalone"}
    if unknown:
        raise ValueError(f"unknown SMART capabilities {sorted(unknown)}")
    caps = set(RESOURCE_SERVER_CAPABILITIES) | (declared & AS_CAPABILITIES)
    if authorize_url:
        caps.add("launch-standalone")
    else:
        caps -= _NEEDS_AUTHORIZE
    return sorted(caps)


def smart_configuration(
    *,
    token_url: str,
    authorize_url: str | None = None,
    issuer: str | None = None,
    jwks_uri: str | None = None,
    capabilities: Iterable[str] = (),
    introspection_endpoint: str | None = None,
    revocation_endpoint: str | None = None,
    registration_endpoint: str | None = None,
    management_endpoint: str | None = None,
) -> dict[str, Any]:
    """The SMART App Launch 2.x ``.well-known/smart-configuration`` document."""
    caps = smart_capabilities(authorize_url, capabilities)
    if "sso-openid-connect" in caps and not issuer:
        raise ValueError("sso-openid-connect needs the issuer")
    grant_types: list[str] = []
    auth_methods: list[str] = []
    if authorize_url:
        grant_types.append("authorization_code")
    if "client-confidential-asymmetric" in caps:
        grant_types.append("client_credentials")
        auth_methods.append("private_key_jwt")
    if "client-confidential-symmetric" in caps:
        auth_methods.append("client_secret_basic")
    scopes = ["patient/*.rs", "user/*.cruds", "patient/*.read", "user/*.read", "user/*.write"]
    if "client_credentials" in grant_types:
        scopes += ["system/*.cruds", "system/*.read", "system/*.write"]
    if "sso-openid-connect" in caps:
        scopes += ["openid", "fhirUser"]
    if "context-standalone-patient" in caps:
        scopes.append("launch/patient")
    if "permission-offline" in caps:
        scopes.append("offline_access")
    if "permission-online" in caps:
        scopes.append("online_access")

    doc: dict[str, Any] = {}
    if issuer:
        doc["issuer"] = issuer
    if jwks_uri:
        doc["jwks_uri"] = jwks_uri
    if authorize_url:
        doc["authorization_endpoint"] = authorize_url
    doc["grant_types_supported"] = grant_types
    doc["token_endpoint"] = token_url
    if auth_methods:
        doc["token_endpoint_auth_methods_supported"] = auth_methods
    for key, value in (
        ("registration_endpoint", registration_endpoint),
        ("management_endpoint", management_endpoint),
        ("introspection_endpoint", introspection_endpoint),
        ("revocation_endpoint", revocation_endpoint),
    ):
        if value:
            doc[key] = value
    doc["scopes_supported"] = scopes
    if authorize_url:
        doc["response_types_supported"] = ["code"]
        doc["code_challenge_methods_supported"] = ["S256"]
    doc["capabilities"] = caps
    return doc


def capability_security(
    *,
    token_url: str,
    authorize_url: str | None = None,
    manage_url: str | None = None,
    introspect_url: str | None = None,
    revoke_url: str | None = None,
    register_url: str | None = None,
) -> dict[str, Any]:
    """``CapabilityStatement.rest[0].security`` for SMART on FHIR (oauth-uris extension)."""
    uris = [
        ("token", token_url),
        ("authorize", authorize_url),
        ("manage", manage_url),
        ("introspect", introspect_url),
        ("revoke", revoke_url),
        ("register", register_url),
    ]
    return {
        "extension": [
            {
                "url": OAUTH_URIS,
                "extension": [{"url": name, "valueUri": uri} for name, uri in uris if uri],
            }
        ],
        "cors": True,
        "service": [
            {
                "coding": [
                    {
                        "system": RESTFUL_SECURITY_SERVICE,
                        "code": "SMART-on-FHIR",
                        "display": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 bearer tokens per SMART App Launch (scopes v1 and v2)",
            }
        ],
        "description": (
            "Send 'Authorization: Bearer <token>' issued by the authorization server named "
            "in the oauth-uris extension. Patient-level scopes are limited to the FHIR R4 "
            "patient compartment of the token's patient; see /.well-known/smart-configuration."
        ),
    }

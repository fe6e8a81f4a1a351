"""SMART configuration document and CapabilityStatement security section."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from fhircare.security.smart_config import capability_security, smart_configuration

TOKEN = "https://auth.example.org/token"
AUTHZ = "https://auth.example.org/authorize"


def test_resource_server_with_standalone_launch():
    doc = smart_configuration(
        token_url=TOKEN,
        authorize_url=AUTHZ,
        issuer="https://auth.example.org",
        capabilities=["client-public", "context-standalone-patient", "sso-openid-connect"],
    )
    assert doc["token_endpoint"] == TOKEN
    assert doc["authorization_endpoint"] == AUTHZ
    assert doc["grant_types_supported"] == ["authorization_code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    caps = set(doc["capabilities"])
    assert {"launch-standalone", "context-standalone-patient", "permission-v2"} <= caps
    assert "launch-ehr" not in caps
    assert "launch/patient" in doc["scopes_supported"]
    assert "openid" in doc["scopes_supported"]


def test_backend_only_has_no_authorize_features():
    doc = smart_configuration(
        token_url=TOKEN,
        capabilities=["client-confidential-asymmetric", "context-standalone-patient"],
    )
    assert "authorization_endpoint" not in doc
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert doc["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert "launch-standalone" not in doc["capabilities"]
    assert "context-standalone-patient" not in doc["capabilities"]
    assert "code_challenge_methods_supported" not in doc
    assert "system/*.cruds" in doc["scopes_supported"]


@pytest.mark.parametrize("cap", ["launch-ehr", "context-ehr-patient", "made-up"])
def test_unsupported_or_unknown_capability_refused(cap):
    with pytest.raises(ValueError):
        smart_configuration(token_url=TOKEN, authorize_url=AUTHZ, capabilities=[cap])


def test_openid_needs_issuer():
    with pytest.raises(ValueError, match="issuer"):
        smart_configuration(
            token_url=TOKEN, authorize_url=AUTHZ, capabilities=["sso-openid-connect"]
        )


def test_capability_security_in_capability_statement():
    security = capability_security(token_url=TOKEN, authorize_url=AUTHZ)
    ext = security["extension"][0]
    assert ext["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert {e["url"]: e["valueUri"] for e in ext["extension"]} == {
        "token": TOKEN,
        "authorize": AUTHZ,
    }
    coding = security["service"][0]["coding"][0]
    assert coding["system"] == "http://terminology.hl7.org/CodeSystem/restful-security-service"
    assert coding["code"] == "SMART-on-FHIR"
    CapabilityStatement.model_validate(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2024-01-01",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [{"mode": "server", "security": security}],
        }
    )

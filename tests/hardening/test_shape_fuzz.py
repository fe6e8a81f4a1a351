"""Property-based fuzzing of the shapes the access check and the operations walk: Bundles
whose entries, requests, methods, urls, fullUrls and resources are any JSON, and Parameters
whose parameters and parts are any JSON, posted with auth off and under FHIRCARE_AUTH=smart
(a valid token): never a 5xx, and every refusal is an OperationOutcome.

Derandomized (a fixed seed per test) and bounded, so the run is stable and short.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from fhircare.api.app import create_app
from fhircare.config import Settings

BASE = "http://testserver/fhir"
ISS = "https://auth.example.org"
FHIR = {"Content-Type": "application/fhir+json"}
EXAMPLES = 120

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
VERBS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "get", "OPTIONS"])
URLS = st.sampled_from(
    [
        "Patient",
        "Patient/fz-1",
        "Patient?name=x",
        "CarePlan/fz-cp",
        "Patient/fz-1/_history/1",
        "",
        "/",
        "Nope/1",
        "Patient/fz-1/$everything",
        "urn:uuid:1",
        "http://elsewhere/fhir/Patient",
    ]
)
PATIENT = {"resourceType": "Patient", "id": "fz-1", "name": [{"family": "Fuzz"}]}
RESOURCES = st.sampled_from(
    [
        PATIENT,
        {"resourceType": "Patient"},
        {"resourceType": "Parameters", "parameter": []},
        {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": "W10="},
    ]
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the plausible value, sometimes any JSON."""
    return st.one_of(strategy, strategy, JSON)


REQUEST = st.one_of(
    st.fixed_dictionaries(
        {"method": _maybe(VERBS), "url": _maybe(URLS)},
        optional={
            "ifMatch": _maybe(st.just('W/"1"')),
            "ifNoneExist": _maybe(st.just("name=Fuzz")),
            "ifNoneMatch": JSON,
            "ifModifiedSince": JSON,
        },
    ),
    JSON,
)
ENTRY = st.one_of(
    st.fixed_dictionaries(
        {"request": REQUEST},
        optional={"resource": _maybe(RESOURCES), "fullUrl": _maybe(st.just("urn:uuid:x"))},
    ),
    JSON,
)
BUNDLES = st.fixed_dictionaries(
    {
        "resourceType": st.just("Bundle"),
        "type": _maybe(st.sampled_from(["transaction", "batch"])),
        "entry": st.one_of(st.lists(ENTRY, max_size=3), JSON),
    }
)
PARAMETER = st.one_of(
    st.fixed_dictionaries(
        {"name": _maybe(st.sampled_from(["subject", "resource", "operation", "goal", "x"]))},
        optional={
            "valueString": JSON,
            "valueReference": _maybe(st.just({"reference": "Patient/fz-1"})),
            "resource": _maybe(RESOURCES),
            "part": st.lists(JSON, max_size=2) | JSON,
        },
    ),
    JSON,
)
PARAMETERS = st.fixed_dictionaries(
    {
        "resourceType": st.just("Parameters"),
        "parameter": st.one_of(st.lists(PARAMETER, max_size=3), JSON),
    }
)
TARGETS = st.sampled_from(
    [
        ("POST", "/fhir/PlanDefinition/hypertension/$apply"),
        ("POST", "/fhir/Patient/$validate"),
        ("POST", "/fhir/Patient/fz-1/$everything"),
        ("POST", "/fhir/QuestionnaireResponse/none/$extract"),
        ("PATCH", "/fhir/Patient/fz-1"),
    ]
)


def _smart(root: Path) -> tuple[dict[str, Any], dict[str, str]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="fz", alg="RS256", use="sig")
    (root / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    claims = {
        "iss": ISS,
        "aud": BASE,
        "sub": "fz",
        "scope": "system/*.cruds",
        "iat": now,
        "exp": now + 3600,
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "fz"})
    options = {
        "auth": "smart",
        "auth_jwks": str(root / "jwks.json"),
        "auth_issuer": ISS,
        "auth_audience": BASE,
        "auth_token_url": f"{ISS}/token",
        "auth_authorize_url": f"{ISS}/authorize",
    }
    return options, {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module", params=["auth-off", "auth-smart"])
def fuzz_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("shape-fuzz")
    options, headers = _smart(root) if request.param == "auth-smart" else ({}, {})
    settings_ = Settings(
        data=root / "data",
        base_url=BASE,
        audit=False,
        fsync=False,
        max_bundle_entries=20,
        **options,
    )
    with TestClient(create_app(settings_), raise_server_exceptions=False, headers=headers) as c:
        assert c.put("/fhir/Patient/fz-1", json=PATIENT, headers=FHIR).status_code == 201
        yield c


def _check(response: Any, sent: Any) -> None:
    where = f"{response.status_code} for {json.dumps(sent)[:400]}: {response.text[:300]}"
    assert response.status_code < 500, where
    if response.status_code >= 400:
        assert response.json()["resourceType"] == "OperationOutcome", where


FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(bundle=BUNDLES)
def test_any_bundle_shape_is_answered_without_a_server_error(
    fuzz_client: TestClient, bundle: dict[str, Any]
) -> None:
    _check(fuzz_client.post("/fhir", content=json.dumps(bundle), headers=FHIR), bundle)


@FUZZ
@given(target=TARGETS, parameters=PARAMETERS)
def test_any_parameters_shape_is_answered_without_a_server_error(
    fuzz_client: TestClient, target: tuple[str, str], parameters: dict[str, Any]
) -> None:
    method, path = target
    r = fuzz_client.request(method, path, content=json.dumps(parameters), headers=FHIR)
    _check(r, parameters)

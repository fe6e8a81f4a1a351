"""The access gate as a SMART app meets it: fhirpy with patient A's bearer token against a real
`fhircare serve --auth smart` process on loopback. Conditional create (fhirpy's
`get_or_create`), conditional update and patch (`search(...).update/patch`), counts and
searches never return, count or touch patient B's data."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError, ResourceNotFound
from jwt.algorithms import RSAAlgorithm

from tests.conftest import ServerProcess

ISS = "https://auth.example.org"
MRN = "urn:example:mrn"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Any]]:
    tmp: Path = tmp_path_factory.mktemp("gate-served")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    (tmp / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    srv = ServerProcess(tmp / "data")
    srv.env.update(
        FHIRCARE_AUTH="smart",
        FHIRCARE_AUTH_JWKS=str(tmp / "jwks.json"),
        FHIRCARE_AUTH_ISSUER=ISS,
        FHIRCARE_AUTH_AUDIENCE=srv.base,
        FHIRCARE_FSYNC="false",
    )
    srv.start()
    yield srv, key
    srv.stop()


def token(served: tuple[ServerProcess, Any], scope: str, **claims: Any) -> str:
    srv, key = served
    now = int(time.time())
    body = {"iss": ISS, "aud": srv.base, "sub": "u", "client_id": "app", "scope": scope}
    body.update(iat=now, exp=now + 600, **claims)
    return jwt.encode(body, key, "RS256", headers={"kid": "k1"})


def client(served: tuple[ServerProcess, Any], scope: str, **claims: Any) -> SyncFHIRClient:
    return SyncFHIRClient(served[0].base, authorization=f"Bearer {token(served, scope, **claims)}")


def test_fhirpy_with_a_patient_token_never_reaches_another_patient(
    served: tuple[ServerProcess, Any],
) -> None:
    admin = client(served, "system/*.cruds")
    a = admin.resource("Patient", identifier=[{"system": MRN, "value": "A-1"}])
    a.save()
    b = admin.resource("Patient", identifier=[{"system": MRN, "value": "B-1"}])
    b.save()
    obs = {
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    }
    b_obs = admin.resource("Observation", subject=b.to_reference(), **obs)
    b_obs.save()
    admin.resource("Observation", subject=a.to_reference(), **obs).save()

    app = client(served, "patient/*.cruds", patient=a.id)
    # fhirpy's get_or_create is a conditional create (POST with the criteria)
    with pytest.raises(ForbiddenError):
        app.resources("Patient").search(identifier=f"{MRN}|B-1").get_or_create(
            app.resource("Patient")
        )
    # one match of A's (B's is not counted, so no 412 "matched 2")
    found, created = (
        app.resources("Observation")
        .search(code="http://loinc.org|8867-4")
        .get_or_create(app.resource("Observation", subject=a.to_reference(), **obs))
    )
    assert not created and found["subject"]["reference"] == f"Patient/{a.id}"
    assert app.resources("Observation").count() == 1
    assert app.resources("Observation").search(subject=b.to_reference()).fetch() == []
    # a conditional update aimed at B's Observation finds nothing of B's
    app.resources("Observation").search(_id=b_obs.id).update(
        app.resource("Observation", subject=a.to_reference(), **obs)
    )
    # a conditional patch through a criterion naming B matches nothing
    with pytest.raises(ResourceNotFound):
        app.resources("Observation").search(subject=b.to_reference()).patch(status="amended")
    again = admin.resources("Observation").search(_id=b_obs.id).get()
    assert again["meta"]["versionId"] == "1" and again["status"] == "final"
    # plain HTTP: B's record is a 403 with an OperationOutcome, not a 500 or a 404
    srv = served[0]
    r = httpx.get(
        f"{srv.base}/Observation/{b_obs.id}/_history",
        headers={"Authorization": f"Bearer {token(served, 'patient/*.rs', patient=a.id)}"},
    )
    assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"

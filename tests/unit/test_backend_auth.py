"""SMART Backend Services client auth: assertion, token caching, refresh, 401 retry."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhircare.security.backend_auth import (
    CLIENT_ASSERTION_TYPE,
    BackendAuthError,
    BackendServicesAuth,
)

TOKEN_URL = "https://auth.example.org/token"
FHIR = "https://ehr.example.org/fhir"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def token_route(router: respx.Router, *tokens: str, expires_in: int = 300) -> respx.Route:
    responses = [
        httpx.Response(
            200,
            json={
                "access_token": t,
                "token_type": "bearer",
                "expires_in": expires_in,
                "scope": "system/*.rs",
            },
        )
        for t in tokens
    ]
    return router.post(TOKEN_URL).mock(side_effect=responses)


def make_auth(key, clock=None, alg="RS384") -> BackendServicesAuth:
    return BackendServicesAuth(
        token_url=TOKEN_URL,
        client_id="fhircare-sync",
        private_key=key,
        kid="k1",
        alg=alg,
        scope="system/Patient.rs system/Observation.rs",
        clock=clock or time.time,
    )


def test_token_fetched_once_for_two_requests(rsa_key):
    with respx.mock(assert_all_called=True) as router:
        tokens = token_route(router, "tok-1")
        api = router.get(f"{FHIR}/Patient/1").mock(return_value=httpx.Response(200, json={}))
        with httpx.Client(auth=make_auth(rsa_key)) as client:
            client.get(f"{FHIR}/Patient/1")
            client.get(f"{FHIR}/Patient/1")
        assert tokens.call_count == 1
        assert api.call_count == 2
        assert all(c.request.headers["Authorization"] == "Bearer tok-1" for c in api.calls)


def test_token_request_and_assertion_claims(rsa_key):
    with respx.mock() as router:
        tokens = token_route(router, "tok-1")
        router.get(f"{FHIR}/metadata").mock(return_value=httpx.Response(200, json={}))
        with httpx.Client(auth=make_auth(rsa_key)) as client:
            client.get(f"{FHIR}/metadata")
        request = tokens.calls[0].request
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "system/Patient.rs system/Observation.rs"
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assertion = form["client_assertion"]
    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == "RS384"
    assert header["kid"] == "k1"
    claims = jwt.decode(assertion, rsa_key.public_key(), algorithms=["RS384"], audience=TOKEN_URL)
    assert claims["iss"] == claims["sub"] == "fhircare-sync"
    assert claims["aud"] == TOKEN_URL
    assert 0 < claims["exp"] - time.time() <= 300
    assert claims["jti"]


def test_jti_unique_per_assertion(rsa_key):
    auth = make_auth(rsa_key)
    decode = jwt.decode
    opts = {"verify_signature": False}
    jtis = {decode(auth.client_assertion(), options=opts)["jti"] for _ in range(5)}
    assert len(jtis) == 5


def test_refresh_after_expiry(rsa_key):
    clock = Clock()
    with respx.mock() as router:
        tokens = token_route(router, "tok-1", "tok-2", expires_in=300)
        api = router.get(f"{FHIR}/Patient").mock(return_value=httpx.Response(200, json={}))
        with httpx.Client(auth=make_auth(rsa_key, clock)) as client:
            client.get(f"{FHIR}/Patient")
            clock.now += 200
            client.get(f"{FHIR}/Patient")  # still valid
            clock.now += 80  # within the 30 s refresh margin of expiry
            client.get(f"{FHIR}/Patient")
        assert tokens.call_count == 2
        used = [c.request.headers["Authorization"] for c in api.calls]
        assert used == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]


def test_401_refreshes_once_and_retries(rsa_key):
    with respx.mock() as router:
        tokens = token_route(router, "revoked", "fresh")
        api = router.get(f"{FHIR}/Patient/1").mock(
            side_effect=[httpx.Response(401), httpx.Response(200, json={"id": "1"})]
        )
        with httpx.Client(auth=make_auth(rsa_key)) as client:
            response = client.get(f"{FHIR}/Patient/1")
        assert response.status_code == 200
        assert tokens.call_count == 2
        assert [c.request.headers["Authorization"] for c in api.calls] == [
            "Bearer revoked",
            "Bearer fresh",
        ]


def test_second_401_is_returned_not_looped(rsa_key):
    with respx.mock() as router:
        tokens = token_route(router, "a", "b", "c")
        api = router.get(f"{FHIR}/Patient/1").mock(return_value=httpx.Response(401))
        with httpx.Client(auth=make_auth(rsa_key)) as client:
            response = client.get(f"{FHIR}/Patient/1")
        assert response.status_code == 401
        assert tokens.call_count == 2
        assert api.call_count == 2


def test_token_endpoint_error_raises(rsa_key):
    with respx.mock() as router:
        router.post(TOKEN_URL).mock(
            return_value=httpx.Response(400, json={"error": "invalid_client"})
        )
        with (
            httpx.Client(auth=make_auth(rsa_key)) as client,
            pytest.raises(BackendAuthError, match="invalid_client") as err,
        ):
            client.get(f"{FHIR}/Patient")
    assert err.value.status == 400


def test_es384_assertion():
    key = ec.generate_private_key(ec.SECP384R1())
    assertion = make_auth(key, alg="ES384").client_assertion()
    claims = jwt.decode(assertion, key.public_key(), algorithms=["ES384"], audience=TOKEN_URL)
    assert claims["iss"] == "fhircare-sync"


def test_wrong_key_type_refused(rsa_key):
    with pytest.raises(ValueError):
        make_auth(rsa_key, alg="ES384")
    with pytest.raises(ValueError):
        make_auth(ec.generate_private_key(ec.SECP256R1()), alg="ES384")


def test_plain_http_token_url_refused(rsa_key):
    with pytest.raises(ValueError, match="https"):
        BackendServicesAuth(
            token_url="http://auth.example.org/token",
            client_id="c",
            private_key=rsa_key,
            kid="k1",
        )


def test_async_client_uses_same_flow(rsa_key):
    async def run() -> tuple[int, int]:
        with respx.mock() as router:
            tokens = token_route(router, "tok-1")
            router.get(f"{FHIR}/Patient").mock(return_value=httpx.Response(200, json={}))
            async with httpx.AsyncClient(auth=make_auth(rsa_key)) as client:
                await client.get(f"{FHIR}/Patient")
                response = await client.get(f"{FHIR}/Patient")
            return tokens.call_count, response.status_code

    assert asyncio.run(run()) == (1, 200)

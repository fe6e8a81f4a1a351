"""Access-token validation: signature, claims, algorithms and JWKS caching."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fhircare.fhir.errors import Unauthorized
from fhircare.security.tokens import (
    JwksCache,
    KeysUnavailable,
    TokenValidator,
    bearer_token,
    www_authenticate,
)

ISS = "https://auth.example.org/realms/fhircare"
AUD = "https://fhircare.example.org/fhir"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    jwk = algo.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISS,
        "aud": AUD,
        "sub": "user-1",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "scope": "patient/CarePlan.rs",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def jwks_file(tmp_path, rsa_key, ec_key) -> str:
    path = tmp_path / "jwks.json"
    keys = [public_jwk(rsa_key, "rsa-1", "RS256"), public_jwk(ec_key, "ec-1", "ES256")]
    path.write_text(json.dumps({"keys": keys}))
    return str(path)


@pytest.fixture
def validator(jwks_file) -> TokenValidator:
    return TokenValidator(issuer=ISS, audience=AUD, keys=JwksCache(jwks_file))


def sign(key: Any, alg: str, kid: str | None, **overrides: Any) -> str:
    headers = {"kid": kid} if kid else {}
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def test_good_rs256_token(validator, rsa_key):
    out = validator.validate(sign(rsa_key, "RS256", "rsa-1"))
    assert out["sub"] == "user-1"
    assert out["scope"] == "patient/CarePlan.rs"


def test_good_es256_token(validator, ec_key):
    assert validator.validate(sign(ec_key, "ES256", "ec-1"))["iss"] == ISS


def test_bad_signature(validator, other_rsa_key):
    with pytest.raises(Unauthorized, match="signature"):
        validator.validate(sign(other_rsa_key, "RS256", "rsa-1"))


def test_tampered_payload(validator, rsa_key):
    header, _payload, signature = sign(rsa_key, "RS256", "rsa-1").split(".")
    forged = jwt.utils.base64url_encode(json.dumps(claims(sub="admin")).encode()).decode()
    with pytest.raises(Unauthorized, match="signature"):
        validator.validate(f"{header}.{forged}.{signature}")


def test_wrong_issuer(validator, rsa_key):
    with pytest.raises(Unauthorized, match="issuer"):
        validator.validate(sign(rsa_key, "RS256", "rsa-1", iss="https://evil.example.org"))


def test_wrong_audience(validator, rsa_key):
    with pytest.raises(Unauthorized, match="audience"):
        validator.validate(sign(rsa_key, "RS256", "rsa-1", aud="https://other.example.org/fhir"))


def test_missing_audience(validator, rsa_key):
    with pytest.raises(Unauthorized, match="aud"):
        validator.validate(sign(rsa_key, "RS256", "rsa-1", aud=None))


def test_expired(validator, rsa_key):
    now = int(time.time())
    token = sign(rsa_key, "RS256", "rsa-1", iat=now - 600, nbf=now - 600, exp=now - 120)
    with pytest.raises(Unauthorized, match="expired"):
        validator.validate(token)


def test_expired_within_leeway_is_accepted(validator, rsa_key):
    now = int(time.time())
    token = sign(rsa_key, "RS256", "rsa-1", iat=now - 600, nbf=now - 600, exp=now - 5)
    assert validator.validate(token)["sub"] == "user-1"


def test_missing_exp(validator, rsa_key):
    with pytest.raises(Unauthorized, match="exp"):
        validator.validate(sign(rsa_key, "RS256", "rsa-1", exp=None))


def test_nbf_in_future(validator, rsa_key):
    with pytest.raises(Unauthorized, match="not yet valid"):
        validator.validate(sign(rsa_key, "RS256", "rsa-1", nbf=int(time.time()) + 600))


def test_iat_in_future(validator, rsa_key):
    with pytest.raises(Unauthorized, match="not yet valid"):
        validator.validate(sign(rsa_key, "RS256", "rsa-1", iat=int(time.time()) + 600))


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("kind", ["digits", "boolean", "object"])
def test_times_must_be_json_numbers(validator, rsa_key, claim, kind):
    """RFC 7519 NumericDate: a JSON number. A valid time sent as a string of digits (which
    PyJWT converts), a boolean or an object is refused, though the token is signed."""
    now = int(time.time())
    good = {"exp": now + 300, "nbf": now - 10, "iat": now - 10}[claim]
    value = {"digits": str(good), "boolean": True, "object": {"t": good}}[kind]
    with pytest.raises(Unauthorized):
        validator.validate(sign(rsa_key, "RS256", "rsa-1", **{claim: value}))


def test_fractional_numeric_dates_are_accepted(validator, rsa_key):
    now = time.time()
    token = sign(rsa_key, "RS256", "rsa-1", iat=now - 1.5, nbf=now - 1.5, exp=now + 300.25)
    assert validator.validate(token)["sub"] == "user-1"


def test_alg_none_refused(validator):
    token = jwt.encode(claims(), None, algorithm="none", headers={"kid": "rsa-1"})
    with pytest.raises(Unauthorized, match="algorithm"):
        validator.validate(token)


def test_hs256_with_public_key_as_secret_refused(validator, rsa_key):
    """Algorithm confusion: an HMAC token keyed with the published RSA public key."""
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = jwt.utils.base64url_encode(
        json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode()
    )
    payload = jwt.utils.base64url_encode(json.dumps(claims()).encode())
    signing_input = header + b"." + payload
    mac = hmac.new(pem, signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + jwt.utils.base64url_encode(mac)).decode()
    with pytest.raises(Unauthorized, match="algorithm"):
        validator.validate(token)


def test_rs256_header_with_ec_kid_refused(validator, rsa_key):
    """A kid naming an EC key cannot be used to verify an RSA-signed token."""
    with pytest.raises(Unauthorized, match="unknown key"):
        validator.validate(sign(rsa_key, "RS256", "ec-1"))


def test_es384_header_with_p256_key_refused(tmp_path, ec_key):
    jwk = {**public_jwk(ec_key, "ec-1", "ES256")}
    del jwk["alg"]
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    v = TokenValidator(issuer=ISS, audience=AUD, keys=JwksCache(str(path)))
    forged = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    header, payload, sig = forged.split(".")
    new_header = jwt.utils.base64url_encode(
        json.dumps({"alg": "ES384", "typ": "JWT", "kid": "ec-1"}).encode()
    ).decode()
    with pytest.raises(Unauthorized):
        v.validate(f"{new_header}.{payload}.{sig}")


def test_malformed_token(validator):
    with pytest.raises(Unauthorized, match="malformed"):
        validator.validate("not-a-jwt")


def test_hs256_not_configurable(jwks_file):
    with pytest.raises(ValueError):
        TokenValidator(issuer=ISS, audience=AUD, keys=JwksCache(jwks_file), algorithms=["HS256"])


def test_error_does_not_echo_token(validator, other_rsa_key):
    token = sign(other_rsa_key, "RS256", "rsa-1")
    with pytest.raises(Unauthorized) as err:
        validator.validate(token)
    assert token not in str(err.value.outcome())
    assert token not in www_authenticate(err.value)


class FakeJwksEndpoint:
    """Serves a mutable key set and counts fetches."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.urls: list[str] = []

    def __call__(self, url: str) -> dict[str, Any]:
        self.urls.append(url)
        return {"keys": list(self.keys)}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_unknown_kid_triggers_exactly_one_refetch(rsa_key, other_rsa_key):
    endpoint = FakeJwksEndpoint([public_jwk(rsa_key, "rsa-1", "RS256")])
    clock = Clock()
    cache = JwksCache("https://auth.example.org/jwks", fetch_jwks=endpoint, clock=clock)
    v = TokenValidator(issuer=ISS, audience=AUD, keys=cache)

    assert v.validate(sign(rsa_key, "RS256", "rsa-1"))
    assert v.validate(sign(rsa_key, "RS256", "rsa-1"))
    assert len(endpoint.urls) == 1  # cached

    endpoint.keys.append(public_jwk(other_rsa_key, "rsa-2", "RS256"))  # key rotation
    clock.now += 60
    assert v.validate(sign(other_rsa_key, "RS256", "rsa-2"))["sub"] == "user-1"
    assert endpoint.urls == ["https://auth.example.org/jwks"] * 2

    # an unknown kid again right away: refused without another fetch (cooldown)
    with pytest.raises(Unauthorized, match="unknown key"):
        v.validate(sign(other_rsa_key, "RS256", "rsa-3"))
    assert len(endpoint.urls) == 2
    # after the cooldown, one more fetch for an unknown kid, and still refused
    clock.now += 60
    with pytest.raises(Unauthorized, match="unknown key"):
        v.validate(sign(other_rsa_key, "RS256", "rsa-3"))
    assert len(endpoint.urls) == 3


def test_keys_refetched_after_ttl(rsa_key):
    endpoint = FakeJwksEndpoint([public_jwk(rsa_key, "rsa-1", "RS256")])
    clock = Clock()
    cache = JwksCache("https://auth.example.org/jwks", fetch_jwks=endpoint, ttl=300, clock=clock)
    v = TokenValidator(issuer=ISS, audience=AUD, keys=cache)
    v.validate(sign(rsa_key, "RS256", "rsa-1"))
    clock.now += 301
    v.validate(sign(rsa_key, "RS256", "rsa-1"))
    assert len(endpoint.urls) == 2


def test_fetch_failure_keeps_previous_keys(rsa_key):
    endpoint = FakeJwksEndpoint([public_jwk(rsa_key, "rsa-1", "RS256")])
    clock = Clock()
    calls = {"fail": False}

    def flaky(url: str) -> dict[str, Any]:
        if calls["fail"]:
            raise OSError("connection refused")
        return endpoint(url)

    cache = JwksCache("https://auth.example.org/jwks", fetch_jwks=flaky, ttl=10, clock=clock)
    v = TokenValidator(issuer=ISS, audience=AUD, keys=cache)
    v.validate(sign(rsa_key, "RS256", "rsa-1"))
    calls["fail"] = True
    clock.now += 11
    assert v.validate(sign(rsa_key, "RS256", "rsa-1"))["sub"] == "user-1"


def test_no_keys_at_all_is_503(rsa_key):
    def down(url: str) -> dict[str, Any]:
        raise OSError("connection refused")

    v = TokenValidator(
        issuer=ISS,
        audience=AUD,
        keys=JwksCache("https://auth.example.org/jwks", fetch_jwks=down),
    )
    with pytest.raises(KeysUnavailable) as err:
        v.validate(sign(rsa_key, "RS256", "rsa-1"))
    assert err.value.status == 503


def test_plain_http_jwks_refused():
    with pytest.raises(ValueError, match="https"):
        JwksCache("http://auth.example.org/jwks", fetch_jwks=lambda url: {})


def test_token_without_kid_uses_single_key_of_type(tmp_path, rsa_key):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(rsa_key, "rsa-1", "RS256")]}))
    v = TokenValidator(issuer=ISS, audience=AUD, keys=JwksCache(str(path)))
    assert v.validate(sign(rsa_key, "RS256", None))["sub"] == "user-1"


@pytest.mark.parametrize(
    ("header", "ok"),
    [("Bearer abc.def.ghi", True), ("bearer abc", True), ("Basic dXNlcg==", False), ("", False)],
)
def test_bearer_token(header, ok):
    if ok:
        assert bearer_token(header) == header.split(" ", 1)[1]
    else:
        with pytest.raises(Unauthorized):
            bearer_token(header)

"""Access-token (JWT) validation for the resource server.

Checks signature (asymmetric algorithms only), ``iss``, ``aud``, ``exp``, ``nbf`` and ``iat``
with a small leeway; the three times must be NumericDates (JSON numbers, RFC 7519). Keys
come from a JWKS: an https URL fetched through a callable the edge supplies (this module
does no I/O beyond reading a local file), or a local JWKS file.
Keys are cached for `ttl` seconds; an unknown ``kid`` triggers one refetch (at most once
per `refetch_cooldown` seconds, so random kids cannot make us hammer the JWKS endpoint).

Failures raise `Unauthorized` with a short reason. Tokens are never logged or echoed.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm, RSAPSSAlgorithm

from fhircare.fhir.errors import FhirError, Unauthorized

FetchJwks = Callable[[str], dict[str, Any]]

DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "PS256", "PS384", "ES256", "ES384")
_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_NUMERIC_DATES = ("exp", "nbf", "iat")
_ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}


class KeysUnavailable(FhirError):
    """The signing keys could not be loaded (JWKS endpoint or file unreachable)."""

    status = 503
    code = "transient"


def www_authenticate(error: Unauthorized | None = None, realm: str = "fhircare") -> str:
    """The ``WWW-Authenticate`` header value for a 401 (RFC 6750)."""
    if error is None:
        return f'Bearer realm="{realm}"'
    reason = error.diagnostics.replace('"', "'")
    return f'Bearer realm="{realm}", error="invalid_token", error_description="{reason}"'


def bearer_token(authorization: str | None) -> str:
    """The token from an ``Authorization: Bearer <token>`` header; Unauthorized otherwise."""
    if not authorization:
        raise Unauthorized("missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token


class JwksCache:
    """JWKS keys by kid, loaded from an https URL (via `fetch_jwks`) or a local file."""

    def __init__(
        self,
        source: str,
        *,
        fetch_jwks: FetchJwks | None = None,
        ttl: float = 300.0,
        refetch_cooldown: float = 10.0,
        clock: Callable[[], float] = time.time,
        allow_http: bool = False,
    ) -> None:
        is_url = source.startswith(("https://", "http://"))
        if source.startswith("http://") and not allow_http:
            raise ValueError("JWKS URL must use https")
        if is_url and fetch_jwks is None:
            raise ValueError("a JWKS URL needs a fetch_jwks callable")
        self.source = source
        self._fetch = fetch_jwks if is_url else _read_file
        self.ttl = ttl
        self.refetch_cooldown = refetch_cooldown
        self._clock = clock
        self._keys: list[dict[str, Any]] = []
        self._fetched_at: float | None = None
        self._lock = threading.Lock()
        self.fetch_count = 0

    def _load(self) -> None:
        try:
            document = self._fetch(self.source)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - any fetch failure means "no keys"
            if self._keys:
                return  # keep serving the previous keys
            raise KeysUnavailable("token signing keys are unavailable") from exc
        finally:
            self.fetch_count += 1
            self._fetched_at = self._clock()
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            if self._keys:
                return
            raise KeysUnavailable("token signing keys are unavailable (not a JWKS)")
        self._keys = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]

    def keys(self) -> list[dict[str, Any]]:
        """The cached keys, (re)loaded when absent or older than the TTL."""
        with self._lock:
            now = self._clock()
            if self._fetched_at is None or now - self._fetched_at >= self.ttl:
                self._load()
            return list(self._keys)

    def find(self, kid: str | None, kty: str) -> list[dict[str, Any]]:
        """Keys matching kid (or every key of the type when kid is None); one refetch on miss."""

        def match() -> list[dict[str, Any]]:
            return [
                k
                for k in self.keys()
                if k.get("kty") == kty and (kid is None or k.get("kid") == kid)
            ]

        found = match()
        if found or kid is None:
            return found
        with self._lock:
            since = self._clock() - (self._fetched_at or float("-inf"))
            if since >= self.refetch_cooldown:
                self._load()
        return match()


def _read_file(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _public_key(jwk: dict[str, Any], alg: str) -> Any:
    if alg.startswith("ES"):
        if jwk.get("crv") != _CURVE.get(alg):
            raise Unauthorized("token key curve does not match its algorithm")
        return ECAlgorithm.from_jwk(jwk)
    if alg.startswith("PS"):
        return RSAPSSAlgorithm.from_jwk(jwk)
    return RSAAlgorithm.from_jwk(jwk)


class TokenValidator:
    """Validates bearer JWTs issued by one trusted authorization server."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | Sequence[str],
        keys: JwksCache,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        leeway: float = 30.0,
        required_claims: Sequence[str] = ("exp", "iss", "aud"),
    ) -> None:
        unsafe = [a for a in algorithms if a not in _ASYMMETRIC]
        if unsafe:
            raise ValueError(f"only asymmetric algorithms are allowed, not {unsafe}")
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        self.issuer = issuer
        self.audience = [audience] if isinstance(audience, str) else list(audience)
        self.keys = keys
        self.algorithms = tuple(algorithms)
        self.leeway = leeway
        self.required_claims = list(required_claims)

    def validate(self, token: str) -> dict[str, Any]:
        """The verified claims of `token`; raises Unauthorized with the reason otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Unauthorized(f"token algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("malformed token (kid)")
        candidates = [k for k in self.keys.find(kid, _KTY[alg[:2]]) if k.get("alg") in (None, alg)]
        if not candidates:
            raise Unauthorized("token signed by an unknown key")
        if kid is None and len(candidates) > 1:
            raise Unauthorized("token has no kid and the key set has several keys")
        try:
            key = _public_key(candidates[0], alg)
        except jwt.PyJWTError:
            raise Unauthorized("token signing key is malformed") from None
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": self.required_claims},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("token not yet valid (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("token audience is not this server") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("token issuer is not trusted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature is invalid") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        for name in _NUMERIC_DATES:
            if name in claims and not _is_numeric_date(claims[name]):
                raise Unauthorized(f"token claim {name!r} is not a NumericDate (a JSON number)")
        return claims


def _is_numeric_date(value: Any) -> bool:
    """RFC 7519 section 2: a NumericDate is a JSON number of seconds (PyJWT also accepts
    a string of digits, which the RFC does not)."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    )

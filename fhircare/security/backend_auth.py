"""SMART Backend Services client authentication as an `httpx.Auth`.

This is the one module under ``fhircare/security`` that imports httpx; only
``fhircare/remote`` may import it. It obtains an access token with the OAuth
``client_credentials`` grant, authenticating with a signed JWT assertion
(``private_key_jwt``: RS384 or ES384, ``iss = sub = client_id``, ``aud`` = token URL,
``exp`` at most 5 minutes ahead, a fresh ``jti``). The token is cached until shortly
before it expires; a 401 from the resource server triggers one refresh and one retry.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Generator
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 300
SUPPORTED_ALGORITHMS = ("RS384", "ES384")


class BackendAuthError(Exception):
    """The authorization server refused or returned an unusable token response."""

    def __init__(self, message: str, *, status: int | None = None, error: str | None = None):
        super().__init__(message)
        self.status = status
        self.error = error


def load_private_key(key: Any, alg: str) -> Any:
    """A private key object for `alg` from PEM text/bytes, a private JWK dict or a key object."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    if isinstance(key, bytes):
        key = load_pem_private_key(key, password=None)
    elif isinstance(key, dict):
        key = jwt.PyJWK(key, algorithm=alg).key
    if alg == "RS384" and not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("RS384 needs an RSA private key")
    if alg == "ES384" and not (
        isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1)
    ):
        raise ValueError("ES384 needs an EC P-384 private key")
    return key


class BackendServicesAuth(httpx.Auth):
    """Bearer-token auth for a FHIR server, tokens from a SMART Backend Services AS."""

    requires_response_body = True

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        private_key: Any,
        kid: str,
        scope: str = "system/*.rs",
        alg: str = "RS384",
        jku: str | None = None,
        assertion_lifetime: int = MAX_ASSERTION_LIFETIME,
        refresh_margin: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if alg not in SUPPORTED_ALGORITHMS:
            raise ValueError(f"alg must be one of {SUPPORTED_ALGORITHMS}")
        url = urlsplit(token_url)
        if url.scheme != "https" and not (
            url.scheme == "http" and url.hostname in ("localhost", "127.0.0.1")
        ):
            raise ValueError("token_url must use https")
        self.token_url = token_url
        self.client_id = client_id
        self.kid = kid
        self.scope = scope
        self.alg = alg
        self.jku = jku
        self.assertion_lifetime = min(assertion_lifetime, MAX_ASSERTION_LIFETIME)
        self.refresh_margin = refresh_margin
        self._key = load_private_key(private_key, alg)
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.granted_scope: str | None = None

    def client_assertion(self) -> str:
        """A freshly signed client-authentication JWT."""
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": now,
            "exp": now + self.assertion_lifetime,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self.kid, "typ": "JWT"}
        if self.jku:
            headers["jku"] = self.jku
        return jwt.encode(claims, self._key, algorithm=self.alg, headers=headers)

    def build_token_request(self) -> httpx.Request:
        """The token request (form-encoded client_credentials grant)."""
        return httpx.Request(
            "POST",
            self.token_url,
            data={
                "grant_type": "client_credentials",
                "scope": self.scope,
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": self.client_assertion(),
            },
            headers={"Accept": "application/json"},
        )

    def _store_token(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            error = None
            try:
                body = response.json()
                error = body.get("error") if isinstance(body, dict) else None
            except ValueError:
                pass
            raise BackendAuthError(
                f"token endpoint answered {response.status_code}"
                + (f" ({error})" if error else ""),
                status=response.status_code,
                error=error,
            )
        try:
            body = response.json()
        except ValueError:
            raise BackendAuthError("token response is not JSON") from None
        token = body.get("access_token") if isinstance(body, dict) else None
        token_type = str(body.get("token_type", "")).lower() if isinstance(body, dict) else ""
        if not isinstance(token, str) or not token or token_type != "bearer":
            raise BackendAuthError("token response has no bearer access_token")
        expires_in = body.get("expires_in", 300)
        if not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = 300
        with self._lock:
            self._token = token
            self._expires_at = self._clock() + float(expires_in)
            self.granted_scope = body.get("scope")

    def _valid_token(self) -> str | None:
        with self._lock:
            if self._token and self._clock() < self._expires_at - self.refresh_margin:
                return self._token
            return None

    def invalidate(self) -> None:
        """Forget the cached token (the next request fetches a new one)."""
        with self._lock:
            self._token = None
            self._expires_at = 0.0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._valid_token()
        if token is None:
            self._store_token((yield self.build_token_request()))
            token = self._valid_token() or self._token
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self.invalidate()
            self._store_token((yield self.build_token_request()))
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request

"""A request head beyond FHIRCARE_MAX_HEADER_BYTES is answered 431 with an OperationOutcome
by a real `fhircare serve` (httptools, what serve uses) under SMART, and by the h11
fallback, over loopback: httpx and a raw socket."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from fhircare.commands.header_limit import limited_protocol
from fhircare.commands.serving import server_options
from tests.conftest import ServerProcess, free_port

ISS = "https://auth.example.org"
LIMIT = 32 * 1024  # the default


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def smart_server(
    tmp_path_factory: pytest.TempPathFactory, signing_key: rsa.RSAPrivateKey
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("header-limit")
    jwk = json.loads(RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    (root / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    port = free_port()
    env = {
        "FHIRCARE_AUTH": "smart",
        "FHIRCARE_AUTH_JWKS": str(root / "jwks.json"),
        "FHIRCARE_AUTH_ISSUER": ISS,
        "FHIRCARE_AUTH_AUDIENCE": f"http://127.0.0.1:{port}/fhir",
        "FHIRCARE_AUTH_TOKEN_URL": f"{ISS}/token",
        "FHIRCARE_AUTH_AUTHORIZE_URL": f"{ISS}/authorize",
        "FHIRCARE_SEED_DEFINITIONS": "false",
        "FHIRCARE_FSYNC": "false",
    }
    srv = ServerProcess(root / "data", env=env, port=port).start()
    yield srv
    srv.stop()


def _token(key: rsa.RSAPrivateKey, audience: str, **extra: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": audience, "sub": "u1", "iat": now, "exp": now + 300}
    claims.update(scope="system/*.cruds", **extra)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


def _assert_431(status: int, content_type: str, body: bytes) -> None:
    assert status == 431
    assert content_type.startswith("application/fhir+json")
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "too-long"
    assert "FHIRCARE_MAX_HEADER_BYTES" in outcome["issue"][0]["diagnostics"]


def _raw_exchange(port: int, chunks: list[bytes]) -> bytes:
    """Send the chunks (stopping early if the server answers and closes); everything read."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        for chunk in chunks:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        out = b""
        try:
            while data := s.recv(65536):
                out += data
        except ConnectionResetError:
            pass
    return out


def _parse(raw: bytes) -> tuple[int, str, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("content-type", ""), body


def test_serve_uses_httptools() -> None:
    assert server_options()["http"].__name__ == "LimitedHttpToolsProtocol"


def test_a_200kb_authorization_header_is_431(
    smart_server: ServerProcess, signing_key: rsa.RSAPrivateKey
) -> None:
    with httpx.Client(base_url=smart_server.base, timeout=15) as c:
        r = c.get("/Patient", headers={"Authorization": "Bearer " + "a" * 200_000})
        _assert_431(r.status_code, r.headers["content-type"], r.content)
        assert r.headers["connection"] == "close"
        # a token under the limit is read as a token, with a padded scope claim of 8 kB
        good = _token(signing_key, smart_server.base, pad="p" * 8000)
        assert len(good) < LIMIT
        r = c.get("/Patient", headers={"Authorization": f"Bearer {good}"})
        assert r.status_code == 200, r.text
        r = c.get("/Patient", headers={"Authorization": "Bearer " + "a" * 20_000})
        assert r.status_code == 401  # a malformed token, under the limit: the app answers


def test_a_head_that_never_ends_is_answered_while_it_arrives(smart_server: ServerProcess) -> None:
    """An endless header value: answered 431 once past the limit, without the final CRLF."""
    start = b"GET /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: "
    raw = _raw_exchange(smart_server.port, [start] + [b"v" * 8192] * 64)
    _assert_431(*_parse(raw))


def test_many_small_headers_in_one_write_are_431(smart_server: ServerProcess) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 20) for i in range(2000))
    raw = _raw_exchange(
        smart_server.port, [b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"]
    )
    _assert_431(*_parse(raw))


def test_big_bodies_and_kept_alive_connections_are_unaffected(
    smart_server: ServerProcess, signing_key: rsa.RSAPrivateKey
) -> None:
    """Only the head counts: a 1 MB body in the same writes as its head is a normal create,
    and a kept-alive connection serves request after request."""
    auth = {"Authorization": f"Bearer {_token(signing_key, smart_server.base)}"}
    body = {"resourceType": "Patient", "name": [{"family": "F" * 1_000_000}]}
    with httpx.Client(base_url=smart_server.base, timeout=30, headers=auth) as c:
        for _ in range(3):
            r = c.post("/Patient", json=body, headers={"Content-Type": "application/fhir+json"})
            assert r.status_code == 201, r.text[:300]
        assert c.get("/Patient", params={"_summary": "count"}).json()["total"] >= 3


class _Uvicorn:
    """An in-process uvicorn server with the h11 fallback protocol, on loopback."""

    def __init__(self, limit: int) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            http=limited_protocol("h11", limit),
            h11_max_incomplete_event_size=limit,
            log_config=None,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()))

    @staticmethod
    async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def __enter__(self) -> _Uvicorn:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_the_h11_fallback_answers_431_too() -> None:
    with _Uvicorn(limit=4096) as srv:
        url = f"http://127.0.0.1:{srv.port}/"
        assert httpx.get(url, headers={"X-Small": "s" * 1000}).text == "ok"
        r = httpx.get(url, headers={"X-Big": "b" * 10_000})
        _assert_431(r.status_code, r.headers["content-type"], r.content)
        start = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: "
        raw = _raw_exchange(srv.port, [start] + [b"v" * 2048] * 8)
        _assert_431(*_parse(raw))


def test_the_limit_is_a_setting(tmp_path: Path) -> None:
    port = free_port()
    env = {"FHIRCARE_MAX_HEADER_BYTES": "2048", "FHIRCARE_SEED_DEFINITIONS": "false"}
    srv = ServerProcess(tmp_path / "data", env=env, port=port).start()
    try:
        assert httpx.get(f"{srv.base}/metadata", headers={"X-A": "a" * 1000}).status_code == 200
        r = httpx.get(f"{srv.base}/metadata", headers={"X-A": "a" * 3000})
        _assert_431(r.status_code, r.headers["content-type"], r.content)
        assert "2048 bytes" in r.json()["issue"][0]["diagnostics"]
    finally:
        srv.stop()

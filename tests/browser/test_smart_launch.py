"""The web app as a SMART app: with FHIRCARE_AUTH=smart it does a standalone launch through
the SMART JavaScript client (authorization code with PKCE), then every request carries the
bearer token fhircare checks. The authorization server is a small one on loopback, written
here (fhircare has none of its own); the resource server, the browser and the SMART client
are the real ones. An EHR launch (`launch.html?iss=...&launch=...`) asks the same server
with the launch context."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from playwright.sync_api import Browser, expect

from tests.browser.conftest import CM, check_screen
from tests.conftest import ServerProcess, free_port

CLIENT_ID = "fhircare-app"


class AuthServer:
    """Authorization code grant for one user, tokens signed RS256, every request recorded."""

    def __init__(self, audience: str) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.audience = audience
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.codes: dict[str, dict[str, str]] = {}
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid="as1", alg="RS256", use="sig")
        return {"keys": [jwk]}

    def sign(self, claims: dict[str, Any]) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "iat": now, "exp": now + 600, **claims}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": "as1"})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _cors(self) -> None:
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Headers", "content-type, authorization")
                self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")

            def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
                self.send_response(204)
                self._cors()
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                if url.path != "/authorize":
                    self.send_error(404)
                    return
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                server.authorize_requests.append(q)
                code = uuid.uuid4().hex
                server.codes[code] = q
                self.send_response(302)
                target = f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}"
                self.send_header("Location", target)
                self.end_headers()

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                server.token_requests.append(form)
                asked = server.codes.pop(form.get("code", ""), None)
                if self.path != "/token" or asked is None:
                    self.send_response(400)
                    self._cors()
                    self.end_headers()
                    return
                scope = asked["scope"]
                body = {
                    "access_token": server.sign({
                        "aud": server.audience, "sub": "morgan", "client_id": CLIENT_ID,
                        "scope": scope, "fhirUser": f"{server.audience}/{CM}",
                    }),
                    "id_token": server.sign({
                        "aud": CLIENT_ID, "sub": "morgan", "fhirUser": f"{server.audience}/{CM}",
                    }),
                    "token_type": "Bearer",
                    "expires_in": 600,
                    "scope": scope,
                }
                data = json.dumps(body).encode()
                self.send_response(200)
                self._cors()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def __enter__(self) -> AuthServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def smart_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, AuthServer]]:
    folder = tmp_path_factory.mktemp("smart-app")
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    with AuthServer(base) as auth:
        jwks = folder / "jwks.json"
        jwks.write_text(json.dumps(auth.jwks()))
        srv = ServerProcess(folder / "data", port=port, env={
            "FHIRCARE_AUTH": "smart", "FHIRCARE_AUTH_JWKS": str(jwks),
            "FHIRCARE_AUTH_ISSUER": auth.issuer, "FHIRCARE_AUTH_AUDIENCE": base,
            "FHIRCARE_AUTH_AUTHORIZE_URL": f"{auth.issuer}/authorize",
            "FHIRCARE_AUTH_TOKEN_URL": f"{auth.issuer}/token", "FHIRCARE_AUDIT": "false",
        }).start()
        try:
            admin = {"Authorization": "Bearer " + auth.sign(
                {"aud": base, "sub": "loader", "scope": "system/*.cruds"})}
            due = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() - 86400))
            resources = [
                {"resourceType": "Practitioner", "id": "demo-care-manager",
                 "name": [{"family": "Rivera", "given": ["Morgan"], "suffix": ["RN"]}]},
                {"resourceType": "Patient", "id": "smart-pat",
                 "name": [{"family": "Launch", "given": ["Casey"]}]},
                {"resourceType": "Task", "id": "smart-task", "status": "requested",
                 "intent": "order", "description": "Call Casey about the new inhaler",
                 "for": {"reference": "Patient/smart-pat"}, "owner": {"reference": CM},
                 "restriction": {"period": {"end": due}}},
            ]
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": r, "request": {"method": "PUT",
                                            "url": f"{r['resourceType']}/{r['id']}"}}
                for r in resources]}
            loaded = httpx.post(base, json=bundle, headers={
                **admin, "Content-Type": "application/fhir+json"}, timeout=60)
            assert loaded.status_code == 200, loaded.text[:300]
            assert httpx.get(f"{base}/Task", timeout=30).status_code == 401
            yield srv, auth
        finally:
            srv.stop()


def test_standalone_launch_signs_in_and_every_request_carries_the_token(
    browser: Browser, smart_server: tuple[ServerProcess, AuthServer]
) -> None:
    srv, auth = smart_server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization")))
            if "/fhir/" in r.url else None)
    page.goto(f"{srv.root}/app/")
    page.wait_for_function("document.body.dataset.ready === '#/worklist'")
    expect(page.locator("#whoami")).to_contain_text("Signed in as Morgan Rivera RN")
    expect(page.locator("tr[data-task='smart-task']")).to_contain_text("overdue since")
    check_screen(page, "smart-launch-worklist")

    (asked,) = auth.authorize_requests
    assert asked["client_id"] == CLIENT_ID
    assert asked["aud"] == srv.base
    assert asked["code_challenge_method"] == "S256"
    assert set(asked["scope"].split()) == {"openid", "fhirUser", "user/*.cruds"}
    (exchange,) = auth.token_requests
    assert exchange["grant_type"] == "authorization_code" and exchange["code_verifier"]
    data_requests = [(u, a) for u, a in sent if "well-known" not in u and "metadata" not in u]
    assert data_requests
    assert all(a and a.startswith("Bearer ") for _, a in data_requests), data_requests
    context.close()


def test_ehr_launch_passes_the_launch_context(
    browser: Browser, smart_server: tuple[ServerProcess, AuthServer]
) -> None:
    srv, auth = smart_server
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{srv.root}/app/launch.html?iss={srv.base}&launch=ehr-context-7")
    page.wait_for_function("document.body.dataset.ready === '#/worklist'")
    asked = auth.authorize_requests[-1]
    assert asked["launch"] == "ehr-context-7"
    assert "launch" in asked["scope"].split()
    expect(page.locator("#whoami")).to_contain_text("Morgan Rivera RN")
    context.close()


def test_the_page_names_no_other_host(smart_server: tuple[ServerProcess, AuthServer]) -> None:
    """Everything the app loads comes from the server that served it (no CDN)."""
    srv, _ = smart_server
    page = httpx.get(f"{srv.root}/app/", timeout=30).text
    assert "http://" not in page and "https://" not in page

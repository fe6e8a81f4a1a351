"""A corpus of bad inputs (tests/hardening/corpus/cases.yaml): each must be refused with a
4xx and an OperationOutcome (an HL7 ACK with MSA-1 AE or AR for /hl7v2), never a 5xx, and
must store nothing (the store's change log and sequence are unchanged). Every case runs
twice: without authentication and under FHIRCARE_AUTH=smart with a valid token (signed by
a key of the server's JWKS) whose scopes allow everything, so the answer comes from input
checking, not from the access check.

A case lists method, path, headers, a body file under corpus/ (or a `generate` recipe for
the big ones) and the expected status: an int, a list of ints or "4xx".
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm

from fhircare.api.app import create_app
from fhircare.config import Settings

CORPUS = Path(__file__).parent / "corpus"
CASES: list[dict[str, Any]] = yaml.safe_load((CORPUS / "cases.yaml").read_text("utf-8"))
MAX_BODY = 256 * 1024
MAX_ENTRIES = 50
BASE = "http://testserver/fhir"
ISS = "https://auth.example.org"


def _compact(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def generate(recipe: dict[str, Any]) -> bytes:
    """Bodies too big to keep as files."""
    kind = recipe["kind"]
    if kind == "big-string":
        return _compact({"resourceType": "Patient", "name": [{"family": "X" * recipe["bytes"]}]})
    if kind == "big-array":
        n = recipe["bytes"] // 12 + 1
        ids = [{"value": str(i)} for i in range(n)]
        return _compact({"resourceType": "Patient", "identifier": ids})
    if kind == "big-bundle":
        entry = {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "P"}}
        entries = [entry] * (recipe["bytes"] // len(_compact(entry)) + 1)
        return _compact({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    if kind == "big-hl7":
        return (
            "MSH|^~\\&|ADTSYS|NORTHWARD|FHIRCARE|CAREHUB|202403050930||ADT^A01|BIG1|P|2.5.1\r"
            "PID|1||MRN1^^^NWH^MR||" + "Y" * recipe["bytes"] + "\r"
        ).encode()
    if kind == "many-numbers":
        return _compact({"resourceType": "Patient", "name": [1] * recipe["count"]})
    if kind == "deep-brackets":
        depth = recipe["depth"]
        return b'{"resourceType":"Patient","x":' + b"[" * depth + b"]" * depth + b"}"
    if kind == "many-entries":
        entries = [
            {
                "resource": {"resourceType": "Patient", "name": [{"family": f"Many{i}"}]},
                "request": {"method": "POST", "url": "Patient"},
            }
            for i in range(recipe["count"])
        ]
        return _compact(
            {"resourceType": "Bundle", "type": recipe.get("type", "transaction"), "entry": entries}
        )
    raise ValueError(f"unknown recipe {kind}")


def case_body(case: dict[str, Any]) -> bytes | None:
    if "generate" in case:
        return generate(case["generate"])
    if "body" in case:
        return (CORPUS / case["body"]).read_bytes()
    return None


def expected(case: dict[str, Any], status: int) -> bool:
    want = case["status"]
    if want == "4xx":
        return 400 <= status < 500
    if isinstance(want, list):
        return status in want
    return status == want


def _seed(c: TestClient) -> None:
    """Known resources the cases refer to by id."""
    fhir = {"Content-Type": "application/fhir+json"}
    for pid in ("hp-1", "hp-2"):
        body = {"resourceType": "Patient", "id": pid, "name": [{"family": "Hardening"}]}
        assert c.put(f"/fhir/Patient/{pid}", json=body, headers=fhir).status_code == 201
    careplan = {
        "resourceType": "CarePlan",
        "id": "hcp-1",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/hp-1"},
        "activity": [{"detail": {"status": "scheduled", "description": "Weigh daily"}}],
    }
    assert c.put("/fhir/CarePlan/hcp-1", json=careplan, headers=fhir).status_code == 201
    for tid, status in (("ht-req", "requested"), ("ht-done", "requested")):
        task = {
            "resourceType": "Task",
            "id": tid,
            "status": status,
            "intent": "order",
            "for": {"reference": "Patient/hp-1"},
        }
        assert c.put(f"/fhir/Task/{tid}", json=task, headers=fhir).status_code == 201
    for status in ("accepted", "in-progress", "completed"):
        r = c.post("/care/Task/ht-done/$transition", json={"status": status})
        assert r.status_code == 200, r.text


def _smart_settings(root: Path) -> dict[str, Any]:
    """SMART settings trusting a fresh key; the Authorization header of a valid token."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="corpus", alg="RS256", use="sig")
    (root / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    claims = {
        "iss": ISS,
        "aud": BASE,
        "sub": "corpus",
        "client_id": "corpus",
        "scope": "system/*.cruds user/*.cruds",
        "iat": now,
        "exp": now + 3600,
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "corpus"})
    return {
        "settings": {
            "auth": "smart",
            "auth_jwks": str(root / "jwks.json"),
            "auth_issuer": ISS,
            "auth_audience": BASE,
            "auth_token_url": f"{ISS}/token",
            "auth_authorize_url": f"{ISS}/authorize",
        },
        "headers": {"Authorization": f"Bearer {token}"},
    }


@pytest.fixture(scope="module", params=["auth-off", "auth-smart"])
def corpus_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("corpus")
    smart = _smart_settings(root) if request.param == "auth-smart" else None
    settings = Settings(
        data=root / "data",
        base_url=BASE,
        audit=False,  # reads write no AuditEvents: the change log moves only on writes
        fsync=False,
        max_body_bytes=MAX_BODY,
        max_bundle_entries=MAX_ENTRIES,
        **(smart["settings"] if smart else {}),
    )
    with TestClient(
        create_app(settings),
        raise_server_exceptions=False,
        headers=smart["headers"] if smart else None,
    ) as c:
        _seed(c)
        yield c


def test_the_corpus_is_large_and_tidy() -> None:
    ids = [c["id"] for c in CASES]
    print(f"hardening corpus: {len(CASES)} cases")
    assert len(CASES) >= 120
    assert len(ids) == len(set(ids)), "case ids must be unique"
    used = {c["body"] for c in CASES if "body" in c}
    files = {f"bodies/{p.name}" for p in (CORPUS / "bodies").iterdir()}
    assert used == files, f"unused or missing body files: {used ^ files}"


def _msa1(ack: str) -> str | None:
    for segment in ack.replace("\n", "\r").split("\r"):
        if segment.startswith("MSA"):
            return segment.split(segment[3])[1] if len(segment) > 4 else ""
    return None


@pytest.mark.parametrize("corpus_client", ["auth-smart"], indirect=True)
def test_the_smart_run_checks_tokens(corpus_client: TestClient) -> None:
    """Under SMART the corpus's token is what lets requests in: none or a forged one is 401.
    (Only the SMART client: the same module-scoped app the corpus runs against.)"""
    assert corpus_client.app.state.settings.auth == "smart"
    assert corpus_client.get("/fhir/Patient/hp-1").status_code == 200
    for bad in ("", "Bearer x.y.z"):
        r = corpus_client.get("/fhir/Patient/hp-1", headers={"Authorization": bad})
        assert r.status_code == 401, r.text


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_is_refused_and_stores_nothing(
    corpus_client: TestClient, case: dict[str, Any]
) -> None:
    store = corpus_client.app.state.store
    seq, changes = store.last_seq, len(store.changes(0))
    r = corpus_client.request(
        case["method"], case["path"], content=case_body(case), headers=case.get("headers") or {}
    )
    where = f"{case['id']}: {case['method']} {case['path']} -> {r.status_code} {r.text[:300]}"
    assert r.status_code < 500, where
    assert expected(case, r.status_code), where
    if "ack" in case:
        assert r.headers["content-type"].startswith("x-application/hl7-v2+er7"), where
        assert _msa1(r.text) in case["ack"], where
    else:
        body = r.json()
        assert body["resourceType"] == "OperationOutcome", where
        assert body["issue"] and body["issue"][0]["severity"] in ("error", "fatal"), where
    assert (store.last_seq, len(store.changes(0))) == (seq, changes), f"{where}: stored something"


def test_a_utf8_bom_before_valid_json_is_tolerated(client: TestClient) -> None:
    """RFC 8259 lets a parser ignore a BOM; the body is otherwise valid, so it is created."""
    body = b'\xef\xbb\xbf{"resourceType": "Patient", "name": [{"family": "Bom"}]}'
    r = client.post(
        "/fhir/Patient", content=body, headers={"Content-Type": "application/fhir+json"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"][0]["family"] == "Bom"
